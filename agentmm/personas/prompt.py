"""The persona's share of the prompt, as plain strings (no LangChain, no LLM).

``persona_parts`` gives the stable head in order; compose turns the parts into messages and
counts their tokens. Everything here is a pure function of its arguments, so the head is the
same text every turn of a thread (same seed, same ``now``), which keeps llama.cpp's KV cache
valid from turn to turn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agentmm.personas.errors import PersonaError
from agentmm.personas.lorebook import ActivatedEntry
from agentmm.personas.macros import expand
from agentmm.personas.model import Persona

DEFAULT_SYSTEM_PROMPT = (
    "You are {{char}}. Write {{char}}'s next reply in a fictional chat with {{user}}. "
    "Stay in character, keep to the persona and scenario below, and never speak for {{user}}."
)
# A short in-character reminder after the user's message (the prompt's changing tail, so the
# append-only head and history are untouched), for personas whose card brings no post-history
# instructions of its own; the ``persona_reminder`` setting (off unless set).
PERSONA_REMINDER = (
    "[Reply as {{char}}, in the first person, in {{char}}'s own voice. {{char}} is not an AI, a program "
    "or an assistant, and never says so.]"
)
# An exchange in which the character says its name, put first among its example dialogue (the
# ``persona_introduction`` setting, off unless set): small models asked who they are answer with
# the name they were trained with, or none.
PERSONA_INTRODUCTION = "{{user}}: Who are you?\n{{char}}: I'm {{char}}."
PART_ORDER = ("system_prompt", "description", "personality", "scenario", "example_dialogue")
_START = re.compile(r"^\s*<START>\s*$", re.IGNORECASE | re.MULTILINE)


def card_fields(persona: Persona, user_description: str = "") -> dict[str, str]:
    """What SillyTavern's card-field macros (``{{description}}``, ``{{mesExamples}}``...) stand
    for with this persona, keyed by lower-case macro name, unfilled (``expand`` fills them).
    ``{{persona}}`` is the user's own description (``user_description``; agentmm has no
    setting for one, so empty unless a caller gives it)."""
    note = character_note(persona)
    return {
        "description": persona.description,
        "personality": persona.personality,
        "scenario": persona.scenario,
        "persona": user_description,
        "charversion": persona.character_version,
        "char_version": persona.character_version,
        "mesexamples": persona.example_dialogue,
        "mesexamplesraw": persona.example_dialogue,
        "charprompt": persona.system_prompt,
        "charjailbreak": persona.post_history_instructions,
        "charinstruction": persona.post_history_instructions,
        "chardepthprompt": note[0] if note else "",
        "creatornotes": persona.creator_notes,
    }


def character_note(persona: Persona) -> tuple[str, int, str] | None:
    """The card's "Character's Note" (``extensions.depth_prompt``: prompt, depth, role), or
    None when it has none (or it is not the shape SillyTavern writes)."""
    data = persona.card.get("data") if isinstance(persona.card, dict) else None
    extensions = data.get("extensions") if isinstance(data, dict) else None
    note: Any = extensions.get("depth_prompt") if isinstance(extensions, dict) else None
    if not isinstance(note, dict) or not isinstance(note.get("prompt"), str) or not note["prompt"].strip():
        return None
    depth = note.get("depth")
    role = note.get("role")
    return (
        note["prompt"],
        depth if isinstance(depth, int) and not isinstance(depth, bool) else 4,
        role if role in ("system", "user", "assistant") else "system",
    )


def persona_parts(
    persona: Persona,
    user_name: str = "User",
    *,
    default_system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    seed: int | str = 0,
    now: datetime | None = None,
    introduction: str = "",
) -> dict[str, str]:
    """The stable-head parts, macros filled, in ``PART_ORDER``; empty parts are left out.

    The card's own ``system_prompt`` replaces ``default_system_prompt`` (which its
    ``{{original}}`` brings back); ``seed`` and ``now`` fix ``{{random}}`` and the clock
    macros for the thread (pass the thread id and its start time); ``introduction`` (e.g.
    ``PERSONA_INTRODUCTION``) is the first example of how the character talks.
    """
    char = persona.display_name
    fields = card_fields(persona)

    def fill(text: str, original: str | None = None) -> str:
        return expand(text, char=char, user=user_name, original=original, seed=seed, now=now, fields=fields).strip()

    if persona.system_prompt.strip():
        system = fill(persona.system_prompt, original=default_system_prompt)
    else:
        system = fill(default_system_prompt)
    parts = {
        "system_prompt": system,
        "description": fill(persona.description),
        "personality": fill(persona.personality),
        "scenario": fill(persona.scenario),
        "example_dialogue": fill(persona.example_dialogue),
    }
    if parts["personality"]:
        parts["personality"] = f"{char}'s personality: {parts['personality']}"
    if parts["scenario"]:
        parts["scenario"] = f"Scenario: {parts['scenario']}"
    intro = fill(introduction)
    if parts["example_dialogue"] or intro:
        blocks = [b.strip() for b in _START.split(parts["example_dialogue"]) if b.strip()]
        blocks = [intro, *blocks] if intro else blocks
        body = "\n\n".join(blocks)
        parts["example_dialogue"] = f"Examples of how {char} talks (not part of this chat):\n{body}"
    return {k: v for k, v in parts.items() if v}


def post_history(
    persona: Persona,
    user_name: str = "User",
    *,
    seed: int | str = 0,
    now: datetime | None = None,
    reminder: str = "",
) -> str:
    """The card's post-history instructions, or ``reminder`` when it has none, macros filled
    ("" when neither is given). The card's ``{{original}}`` brings back ``reminder``, as
    SillyTavern's brings back its own post-history prompt."""
    own = persona.post_history_instructions.strip()
    text, original = (persona.post_history_instructions, reminder) if own else (reminder, None)
    filled = expand(
        text, char=persona.display_name, user=user_name, original=original, seed=seed, now=now,
        fields=card_fields(persona),
    )  # fmt: skip
    return filled.strip()


def character_note_text(
    persona: Persona,
    user_name: str = "User",
    *,
    seed: int | str = 0,
    now: datetime | None = None,
) -> str:
    """The card's Character's Note, macros filled ("" when it has none). The prompt's head is
    append-only, so the note goes in its tail, after the post-history instructions, where
    SillyTavern puts a depth-0 note; a deeper note is approximated by the same place."""
    note = character_note(persona)
    if note is None:
        return ""
    filled = expand(note[0], char=persona.display_name, user=user_name, seed=seed, now=now, fields=card_fields(persona))
    return filled.strip()


def greeting(
    persona: Persona,
    n: int = 0,
    user_name: str = "User",
    *,
    seed: int | str = 0,
    now: datetime | None = None,
) -> str:
    """Greeting ``n`` (0: the main one, 1..: alternates), macros filled; "" if it has none."""
    if not persona.greetings and n == 0:
        return ""
    if not 0 <= n < len(persona.greetings):
        count = len(persona.greetings)
        if not count:
            raise PersonaError(f"{persona.name} has no greetings; greeting {n} cannot open the thread")
        raise PersonaError(
            f"{persona.name} has {count} greeting{'s' if count != 1 else ''}; "
            f"greeting {n} is out of range (0..{count - 1})"
        )
    text = expand(
        persona.greetings[n], char=persona.display_name, user=user_name, seed=seed, now=now,
        fields=card_fields(persona),
    )  # fmt: skip
    return text.strip()


def lore_text(
    activated: Sequence[ActivatedEntry],
    persona: Persona | None = None,
    user_name: str = "User",
    *,
    seed: int | str = 0,
    now: datetime | None = None,
) -> str:
    """Fired lore as one block, in insertion order (lowest first), macros filled when a
    persona is given. Goes with the turn that fired it, not into the head."""
    ordered = sorted(activated, key=lambda a: (a.entry.insertion_order, -a.entry.priority))
    texts = []
    for a in ordered:
        text = a.content
        if persona is not None:
            text = expand(
                text, char=persona.display_name, user=user_name, seed=seed, now=now, fields=card_fields(persona)
            )
        if text.strip():
            texts.append(text.strip())
    return "\n\n".join(texts)
