"""The named text parts of a turn's prompt: head (who the agent is), this turn's context, tail.

With a persona the head is its system prompt, description, personality, scenario and example
dialogue, filled with the thread's seed and start time so it is the same text every turn;
fired lore is this turn's context; the card's post-history instructions and Character's Note
are the tail.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from agentmm.personas import ActivatedEntry, Persona, activate, lore_text, persona_parts, post_history
from agentmm.personas.macros import expand
from agentmm.personas.prompt import card_fields, character_note_text
from agentmm.personas.timed_effects import TimedEffects
from agentmm.settings import DEFAULT_SYSTEM_PROMPT as COMPANION_PROMPT
from agentmm.tokens import TokenCounter

# Left out first when a turn does not fit the context, lowest priority first. The system
# prompt and the user's message are never dropped.
DROP_ORDER = (
    "example_dialogue", "lore", "memories", "scenario", "personality", "summary", "description", "character_note",
    "post_history", "observations",
)  # fmt: skip
# The character's own text, and what was seen and heard (a long voice note's transcript), may be
# cut short rather than left out (agentmm.context.plan_window).
TRUNCATABLE = ("example_dialogue", "scenario", "personality", "description", "observations")


@dataclass(frozen=True)
class TurnParts:
    head: list[tuple[str, str]]
    turn: list[tuple[str, str]] = field(default_factory=list)
    tail: list[tuple[str, str]] = field(default_factory=list)
    lore: list[dict[str, Any]] = field(default_factory=list)
    lore_timers: dict[str, Any] | None = None
    """The lore's sticky and cooldown timers after this turn (``TimedEffects.state``); None
    when the turn kept none (no persona, or none asked for)."""


def plain_parts(system_prompt: str) -> TurnParts:
    return TurnParts(head=[("system", system_prompt)])


def persona_turn_parts(
    persona: Persona,
    recent: Sequence[str],
    counter: TokenCounter,
    *,
    user_name: str,
    seed: str,
    now: datetime | None,
    in_window: str = "",
    default_system_prompt: str | None = None,
    reminder: str = "",
    introduction: str = "",
    chance: random.Random | None = None,
    chat_length: int | None = None,
    lore_timers: Mapping[str, Any] | None = None,
) -> TurnParts:
    """The persona's head, the lore that ``recent`` (oldest first, this turn's message last)
    fires, and its tail: the post-history instructions, then the card's Character's Note
    (``extensions.depth_prompt``; the tail is the only part that is not append-only, so the
    note's depth is approximated by depth 0, where SillyTavern puts it after the instructions).

    Lore already in ``in_window`` (the stored context of earlier turns still in the prompt)
    is not inserted again: the model sees it once, and the trace says so. ``chance`` rolls for
    entries with a probability (``activate``); one that loses its roll is traced, not inserted,
    and so is one the book's token budget left out. ``chat_length`` is how many messages the
    whole thread holds (``recent`` may be its window only), which an entry's ``delay`` is
    measured against; an entry held back by it is traced, not inserted. ``lore_timers`` (the
    thread's, as its last turn left them) turns on sticky and cooldown (``timed_effects``): the
    timers after this turn come back in ``TurnParts.lore_timers``, and an entry cooling down
    that would have fired is traced, not inserted.

    ``default_system_prompt`` (the ``system_prompt`` setting) is the main prompt of a persona
    whose card has none, and what a card's ``{{original}}`` brings back, as SillyTavern's Main
    Prompt is; agentmm's own companion prompt (the setting's default) is no character's, so
    then the persona's built-in one is used. ``reminder`` is the post-history prompt.
    """
    macro_args: dict[str, Any] = {"seed": seed, "now": now}
    head_kwargs: dict[str, Any] = {**macro_args, "introduction": introduction}
    if default_system_prompt and default_system_prompt.strip() != COMPANION_PROMPT:
        head_kwargs["default_system_prompt"] = default_system_prompt
    head = list(persona_parts(persona, user_name, **head_kwargs).items())
    # Keys and content macro-filled before matching, as SillyTavern's substituteParams does: a
    # "{{user}}" key fires on this chat's user; the content, filled once, is not filled again.
    fill = partial(expand, char=persona.display_name, user=user_name, fields=card_fields(persona), **macro_args)
    missed: list[ActivatedEntry] = []
    book = persona.lorebook
    dropped: list[ActivatedEntry] = []
    held: list[ActivatedEntry] = []
    kwargs: dict[str, Any] = {"missed": missed, "dropped": dropped, "chat_length": chat_length, "held": held}
    timed = None
    if lore_timers is not None:
        length = len(recent) if chat_length is None else chat_length
        timed = kwargs["timed"] = TimedEffects.check(book, lore_timers, length)
    fired = activate(book, recent, counter.text, transform=fill, chance=chance, **kwargs) if book.entries else []
    fresh, repeated = [], []
    for entry in fired:
        text = lore_text([entry])
        (repeated if text and text in in_window else fresh).append(entry)
    lore = lore_text(fresh)
    traced = [{**a.as_trace(), "inserted": True} for a in fresh]
    traced += [{**a.as_trace(), "inserted": False, "note": "already in the window"} for a in repeated]
    traced += [{**a.as_trace(), "inserted": False, "note": "lost its roll"} for a in missed]
    traced += [{**a.as_trace(), "inserted": False, "note": "over the lore token budget"} for a in dropped]
    traced += [{**a.as_trace(), "inserted": False, "note": a.held} for a in held]
    return TurnParts(
        head=head,
        turn=[("lore", lore)] if lore else [],
        tail=[
            ("post_history", post_history(persona, user_name, reminder=reminder, **macro_args)),
            ("character_note", character_note_text(persona, user_name, **macro_args)),
        ],
        lore=traced,
        lore_timers=timed.state() if timed is not None else None,
    )
