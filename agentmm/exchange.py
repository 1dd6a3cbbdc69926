"""A thread's last exchange: the user's last message and everything after it (the reply, and
any tool calls and results between them).

``Agent.undo`` takes it out of the thread; ``Agent.retry`` runs a turn whose ingest takes it out
and sends its message again. Both write the same update, computed here over the thread's
values (``ChatState``), with LangGraph's ``RemoveMessage``: the old checkpoints stay, as
LangGraph intends. A persona's greeting before the first message is not part of an exchange:
the thread keeps its opening.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AnyMessage, HumanMessage, RemoveMessage

# Indexes into ``messages`` that must not point past the exchange once it is gone.
_INDEXES = ("window_start", "summary_through")
# The rolling summary and its marks: put back as the exchange's run found them when the summary
# had taken in part of what goes (undos in a row past a fold, a retry after them). The run's
# config carries them to a retry's ingest under ``SUMMARY_BEFORE_KEY`` (``Agent.retry``, read
# from the checkpoint history); ingest also keeps them in the state (``summary_before``), for a
# raw graph's retry.
SUMMARY_RECORD: dict[str, Any] = {"summary": "", "summary_through": 0, "window_start": 0}
SUMMARY_BEFORE_KEY = "agentmm_summary_before"


def last_exchange_start(messages: Sequence[AnyMessage]) -> int | None:
    """Index of the last user message (the exchange runs from it to the end), None if none."""
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            return i
    return None


def exchange_turn(messages: Sequence[AnyMessage], start: int) -> int:
    """The turn number of the exchange starting at ``start``, as ingest counted it (1-based)."""
    return sum(isinstance(m, HumanMessage) for m in messages[: start + 1])


def take_out_last_exchange(values: Mapping[str, Any]) -> dict[str, Any] | None:
    """The state update that removes the last exchange from a thread with ``values``; None when
    the thread has no user message. The window and the summary's mark move back with it if
    they had passed its start."""
    messages: list[AnyMessage] = list(values.get("messages") or [])
    start = last_exchange_start(messages)
    if start is None:
        return None
    update: dict[str, Any] = {"messages": [RemoveMessage(id=m.id) for m in messages[start:] if m.id]}
    for key in _INDEXES:
        if int(values.get(key) or 0) > start:
            update[key] = start
    return update


def summary_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """The rolling summary and its marks in ``values`` (a thread's state, or an update over it)."""
    return {key: values.get(key, empty) for key, empty in SUMMARY_RECORD.items()}


def summary_put_back(update: dict[str, Any], before: Mapping[str, Any] | None) -> dict[str, Any]:
    """``update`` (``take_out_last_exchange``'s), with the summary put back as ``before`` (the
    thread's values when the exchange's run started) had it, when the summary had passed the
    exchange's start: it would still tell what goes. Without ``before`` (a thread saved before
    turns kept their ``summary_before``) the summary is dropped, to be written again from the
    messages that stay."""
    if "summary_through" not in update:
        return update
    return {**update, **{key: (before or {}).get(key, empty) for key, empty in SUMMARY_RECORD.items()}}
