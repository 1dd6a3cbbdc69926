"""Fit a thread's history into the model's context window, keeping the prompt append-only.

llama.cpp re-uses the KV cache of the longest common token prefix between calls, so the
window must not slide one message per turn (that changes the head of the prompt every turn
and makes each turn re-read everything). Instead the window start stays put while the
history fits, and when it overflows it jumps forward to a turn boundary that leaves the
history at most ``fold_to`` of its budget: many turns go at once, and the following turns
are cheap again. What leaves the window is reported, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from langchain_core.messages import BaseMessage, HumanMessage

from agentmm.errors import InputTooLongError
from agentmm.state import PromptPart
from agentmm.tokens import TokenCounter


@dataclass(frozen=True)
class WindowPlan:
    window_start: int
    parts: list[PromptPart]
    budget: dict[str, int]
    folded_messages: int  # messages that left the window this turn


def plan_window(
    messages: Sequence[BaseMessage],
    window_start: int,
    counter: TokenCounter,
    *,
    n_ctx: int,
    reply_tokens: int,
    head: Sequence[tuple[str, str]],
    tail: Sequence[tuple[str, str]] = (),
    fold_to: float = 0.5,
) -> WindowPlan:
    """Choose the window for a turn whose newest message is ``messages[-1]``.

    ``head`` and ``tail`` are the named text parts placed before and after the history
    (system prompt, persona, ... and post-history instructions).
    """
    head_parts = [PromptPart(part=name, tokens=counter.text(text)) for name, text in head if text]
    tail_parts = [PromptPart(part=name, tokens=counter.text(text)) for name, text in tail if text]
    fixed = sum(p["tokens"] for p in head_parts) + sum(p["tokens"] for p in tail_parts)
    available = n_ctx - reply_tokens - fixed
    sizes = [counter.message(m) for m in messages]
    newest = sizes[-1] if sizes else 0
    if newest > available:
        raise InputTooLongError(
            f"the message is {newest} tokens but only {max(available, 0)} fit in the context "
            f"(n_ctx={n_ctx}, {reply_tokens} kept for the reply); shorten it or raise n_ctx"
        )
    start = min(max(window_start, 0), max(len(messages) - 1, 0))
    new_start = start
    if sum(sizes[start:]) > available:
        new_start = _fold_point(messages, sizes, start, available, fold_to)
    history = sum(sizes[new_start:-1]) if sizes else 0
    parts = [
        *head_parts,
        PromptPart(part="history", tokens=history),
        PromptPart(part="message", tokens=newest),
        *tail_parts,
    ]
    used = fixed + history + newest
    budget = {
        "n_ctx": n_ctx,
        "reply_reserve": reply_tokens,
        "prompt_tokens": used,
        "free": n_ctx - reply_tokens - used,
        "history_messages": max(len(messages) - 1 - new_start, 0),
        "folded_messages_total": new_start,
    }
    return WindowPlan(window_start=new_start, parts=parts, budget=budget, folded_messages=new_start - start)


def _fold_point(messages: Sequence[BaseMessage], sizes: list[int], start: int, available: int, fold_to: float) -> int:
    """The earliest turn boundary after ``start`` whose remaining history fits in
    ``fold_to`` of the budget, or failing that in the whole budget."""
    boundaries = [i for i in range(start + 1, len(messages)) if isinstance(messages[i], HumanMessage)]
    suffix = list(accumulate(reversed(sizes)))[::-1]
    for limit in (available * fold_to, available):
        for i in boundaries:
            if suffix[i] <= limit:
                return i
    return len(messages) - 1
