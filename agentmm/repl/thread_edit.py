"""Taking turns back out of a thread: ``/undo``, ``/retry``, and a turn that failed half-way.

A thread is a LangGraph thread, so edits go through the graph's own ``update_state`` with
``RemoveMessage``: a new checkpoint is written and the old ones stay, as LangGraph intends.
The memories a turn wrote are deleted with it, so an undone exchange is not recalled later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AnyMessage, HumanMessage, RemoveMessage

from agentmm.memory.conversation import scope
from agentmm.threads import thread_exists, thread_values


@dataclass
class UndoneTurn:
    """What ``undo_last_exchange`` took out: enough to send the same message again."""

    text: str
    attachments: list[str] = field(default_factory=list)
    messages_removed: int = 0
    memories_forgotten: list[str] = field(default_factory=list)


def _config(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def last_exchange_start(messages: list[AnyMessage]) -> int | None:
    """Index of the last user message (the exchange runs from it to the end), None if none."""
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            return i
    return None


def undo_last_exchange(agent: Any, thread_id: str) -> UndoneTurn | None:
    """Remove the last user message and everything after it from the thread, and forget the
    memories that turn wrote. None when the thread has no exchange to undo.

    A persona's greeting before the first message stays: the thread keeps its opening.
    """
    if not thread_exists(agent.checkpointer, thread_id):
        return None
    values, _ = thread_values(agent.checkpointer, thread_id)
    messages: list[AnyMessage] = values.get("messages", [])
    start = last_exchange_start(messages)
    if start is None:
        return None
    removed = messages[start:]
    turn = sum(isinstance(m, HumanMessage) for m in messages[: start + 1])
    update: dict[str, Any] = {"messages": [RemoveMessage(id=m.id) for m in removed if m.id]}
    if values.get("window_start", 0) > start:
        update["window_start"] = start
    _update(agent, thread_id, update)
    forgotten = forget_turn_memories(agent, thread_id, turn, values)
    attachments = list(values.get("attachments") or []) if turn == _trace_turn(values) else []
    return UndoneTurn(text=removed[0].text, attachments=attachments, messages_removed=len(removed),
                      memories_forgotten=forgotten)  # fmt: skip


def forget_turn_memories(agent: Any, thread_id: str, turn: int, values: dict[str, Any]) -> list[str]:
    """Delete what turn ``turn`` wrote to long-term memory; the ids deleted.

    The remember node keys a turn's memories ``thread:turn:role`` in the thread persona's
    scope; the last turn's trace also lists them (``remembered``), which covers a persona
    switched since.
    """
    store = agent.store
    if store is None:
        return []
    user = agent.settings.user_id
    targets: set[tuple[tuple[str, ...], str]] = set()
    namespace = scope(user, values.get("persona") or None)
    for role in ("observation", "user", "assistant"):
        targets.add((namespace, f"{thread_id}:{turn}:{role}"))
    trace = values.get("trace") or {}
    if trace.get("turn") == turn:
        for row in trace.get("remembered") or []:
            targets.add((("memories", *str(row.get("scope", "")).split("/")), str(row["id"])))
    forgotten = []
    for ns, key in sorted(targets):
        if store.get(ns, key) is not None:
            store.delete(ns, key)
            forgotten.append(key)
    return forgotten


def _trace_turn(values: dict[str, Any]) -> int | None:
    return (values.get("trace") or {}).get("turn")


def _update(agent: Any, thread_id: str, update: dict[str, Any]) -> None:
    """Write the edit as if the graph's last node made it, so the thread is left between turns."""
    graph = agent.graph
    last = _last_node(graph)
    graph.update_state(_config(thread_id), update, as_node=last)


def _last_node(graph: Any) -> str:
    drawn = graph.get_graph()
    enders = [edge.source for edge in drawn.edges if edge.target == "__end__"]
    return enders[0] if enders else "generate"
