"""Editing a thread between turns through LangGraph's own API: read its last exchange from the
checkpoint history, take it out (``Agent.undo``), put the thread back as a run found it.

- What an exchange was (its message as typed, its attachments, the persona it played, the turn
  number) is read from the thread's checkpoint history: the checkpoint in which ingest added
  the message, found by walking back through parent checkpoints; the record of the turn before
  is the one the turn's first run found (a retry's run, which found the turn's own, is walked
  past). Nothing is kept beside the
  thread, and a failed or rolled-back run in between does not confuse it.
- Taking it out writes ``agentmm.exchange.take_out_last_exchange`` (``RemoveMessage`` for each
  of its messages) as the node LangGraph infers ran last, puts back the per-turn record (the
  trace, attachments, observations, recalled memories, the lore's sticky and cooldown timers)
  of the turn before it (and the rolling
  summary it started with, when the summary had taken in part of what goes), and clears what
  that node's edges would run next (``as_node=END``), so the thread is left between turns
  whatever the graph's shape. Nothing needs the graph drawn or a node named.
- A run that fails is undone by copying the checkpoint it started from as the thread's newest
  (``update_state(before, None, as_node=END)``): every channel as it was, the failed branch kept
  in the history as LangGraph keeps any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AnyMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StateSnapshot, StateUpdate

from agentmm.errors import SEE_THREADS, ThreadNotFoundError
from agentmm.exchange import exchange_turn, last_exchange_start, summary_put_back, take_out_last_exchange
from agentmm.threads import thread_exists

# The per-turn record an undo puts back as the turn before had left it (empty before the first).
TURN_RECORD: dict[str, Any] = {"trace": {}, "attachments": [], "observations": [], "recalled": [],
                               "summary_before": {}, "turn_message_ids": [], "joined_texts": [],
                               "lore_timers": {}}  # fmt: skip


@dataclass(frozen=True)
class Exchange:
    """A thread's last exchange, as its checkpoints record it."""

    thread_id: str
    turn: int
    text: str  # the message as the user sent it (empty for a voice note sent alone)
    attachments: tuple[str, ...]
    persona: str | None
    messages: int  # how many messages it holds: the message, the reply, tool calls between
    before: dict[str, Any]  # the thread's values when the exchange's run started


@dataclass(frozen=True)
class UndoneTurn:
    """What ``Agent.undo`` took out of a thread: enough to show it and to send it again."""

    text: str
    attachments: list[str] = field(default_factory=list)
    persona: str | None = None
    turn: int = 0
    messages_removed: int = 0
    memories_forgotten: list[str] = field(default_factory=list)


def config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


def last_exchange(graph: CompiledStateGraph, thread_id: str) -> Exchange | None:
    """The thread's last exchange; None when it holds no user message, ThreadNotFoundError when
    there is no such thread."""
    if graph.checkpointer is None or not thread_exists(graph.checkpointer, thread_id):
        raise ThreadNotFoundError(f"unknown thread {thread_id!r}", see=SEE_THREADS)
    latest = graph.get_state(config(thread_id))
    messages: list[AnyMessage] = list(latest.values.get("messages") or [])
    start = last_exchange_start(messages)
    if start is None:
        return None
    turn = exchange_turn(messages, start)
    added, before, oldest = _added_and_before(graph, latest, str(messages[start].id))
    while before is not None and (held := _held_turn(before, turn)) is not None:
        # The run that added the message found the turn's exchange there already: it answered
        # it again (a retry, whose message has an id of its own) or joined a failed run's
        # message; the turn before's record is what the first run of the turn found.
        _, earlier, oldest = _added_and_before(graph, before, held)
        if earlier is None:
            break
        before = earlier
    if before is None and int(oldest.values.get("summary_through") or 0) <= start:
        # Its run is not in the history (a thread ``threads import`` wrote): the oldest state,
        # what the file held, stands in for the one the run found, as its summary does not
        # tell the exchange (taken out with none, the summary was dropped).
        before = oldest
    sent = next((m for m in added.values.get("messages") or [] if m.id == messages[start].id), messages[start])
    return Exchange(
        thread_id=thread_id,
        turn=turn,
        text=sent.text,
        attachments=tuple(added.values.get("attachments") or ()),
        persona=added.values.get("persona") or None,
        messages=len(messages) - start,
        before=dict(before.values) if before is not None else {},
    )


def take_out(graph: CompiledStateGraph, exchange: Exchange) -> None:
    """Remove ``exchange`` (the thread's last) from its thread and put back the record of the
    turn before it, leaving the thread between turns."""
    cfg = config(exchange.thread_id)
    update = take_out_last_exchange(graph.get_state(cfg).values)
    if update is None:
        return
    update.update({key: exchange.before.get(key, empty) for key, empty in TURN_RECORD.items()})
    update = summary_put_back(update, exchange.before)
    graph.bulk_update_state(cfg, [[StateUpdate(update)], [StateUpdate(None, END)]])


def restore(graph: CompiledStateGraph, before: RunnableConfig) -> None:
    """Make the checkpoint ``before`` the thread's newest again (a copy of it, so the history
    keeps whatever came after)."""
    graph.update_state(before, None, as_node=END)


def _held_turn(snapshot: StateSnapshot, turn: int) -> str | None:
    """The id of the user message of turn ``turn`` (or a later one) that ``snapshot`` holds,
    None when it holds fewer user messages than ``turn``."""
    messages: list[AnyMessage] = list(snapshot.values.get("messages") or [])
    start = last_exchange_start(messages)
    if start is None or exchange_turn(messages, start) < turn:
        return None
    return str(messages[start].id)


def _added_and_before(
    graph: CompiledStateGraph, latest: StateSnapshot, message_id: str
) -> tuple[StateSnapshot, StateSnapshot | None, StateSnapshot]:
    """Walking back from ``latest`` by parent: the checkpoint in which ``message_id`` first
    appears (ingest added it), the one its run started from (LangGraph's input checkpoint;
    None when the history ends first), and the last one the walk read (the oldest, then)."""
    added = snapshot = latest
    while True:
        holds = any(m.id == message_id for m in snapshot.values.get("messages") or [])
        if holds:
            added = snapshot
        elif (snapshot.metadata or {}).get("source") == "input":
            return added, snapshot, snapshot
        if snapshot.parent_config is None:
            return added, None, snapshot
        snapshot = graph.get_state(snapshot.parent_config)
