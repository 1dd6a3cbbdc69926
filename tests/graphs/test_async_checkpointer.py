"""Async runs over the SQLite threads go through LangGraph's ``AsyncSqliteSaver`` on the same file
(``async_checkpointer``), and sync turns see what they wrote."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from agentmm.graphs.agent import Agent
from agentmm.graphs.turn import turn_loop
from agentmm.threads import async_checkpointer, list_threads, open_checkpointer, thread_values
from agentmm.tools.builtin import roll_dice
from tests.graphs.scripted_model import ScriptedToolModel, call


def test_an_async_turn_asks_for_approval_and_sync_turns_go_on(tmp_path: Path) -> None:
    """``astream_events`` runs the turn through the Agent's one runner: a tool call that needs
    approval is asked through ``on_approval`` (here a coroutine) and the run resumes in the
    same stream; the async saver's checkpoints are what the sync turns read after it."""
    script = [call("roll_dice", notation="d6"), AIMessage("Six it is."), AIMessage("Bye.")]
    agent = Agent(model=ScriptedToolModel(script=script), tools=[roll_dice], data_dir=tmp_path, memory=False,
                  approve_tools=["roll_dice"])  # fmt: skip
    asked: list[dict[str, Any]] = []

    async def approve(request: dict[str, Any]) -> bool:
        asked.append(request)
        return True

    async def run() -> list[dict[str, Any]]:
        events = [e async for e in agent.astream_events("roll", "web", on_approval=approve)]
        async with agent.async_graph() as graph:  # for a caller's own async LangGraph calls
            assert isinstance(graph.checkpointer, AsyncSqliteSaver)
            assert not (await graph.aget_state(agent.config("web"))).interrupts
        return events

    with agent:
        events = asyncio.run(run())
        assert [(a["tool"], a["args"]) for a in asked] == [("roll_dice", {"notation": "d6"})]
        text = "".join(e["data"]["chunk"].text for e in events if e["event"] == "on_chat_model_stream")
        assert text == "Six it is."
        assert {e["event"] for e in events} >= {"on_chain_start", "on_chain_end", "on_tool_start", "on_tool_end"}
        assert agent.chat("thanks", "web").reply == "Bye."  # the sync saver reads what the async one wrote
        values, _ = thread_values(agent.checkpointer, "web")
        assert [m.type for m in values["messages"]] == ["human", "ai", "tool", "ai", "human", "ai"]
        assert values["messages"][2].status == "success" and values["trace"]["turn"] == 2
        assert [(t.thread_id, t.turns) for t in list_threads(agent.checkpointer)] == [("web", 2)]


def test_only_a_file_backed_sqlite_saver_gets_an_async_twin(tmp_path: Path) -> None:
    memory = InMemorySaver()
    saver = open_checkpointer(tmp_path)

    async def run() -> None:
        async with async_checkpointer(memory) as same:
            assert same is memory
        async with async_checkpointer(saver) as twin:
            assert isinstance(twin, AsyncSqliteSaver)
            assert await twin.aget_tuple({"configurable": {"thread_id": "none", "checkpoint_ns": ""}}) is None
        with pytest.raises(ValueError, match="no active connection"):  # closed with the run
            await twin.conn.execute("SELECT 1")
        # the sync saver stays open
        assert saver.get_tuple({"configurable": {"thread_id": "none", "checkpoint_ns": ""}}) is None

    asyncio.run(run())
    saver.conn.close()


def test_a_turn_is_flushed_to_the_disk_once_before_it_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The async saver commits without waiting for the disk (a killed process loses nothing
    of a commit; SQLite's FULL mode would wait ~2 ms on each of a turn's commits); the turn
    has SQLite checkpoint the thread database's WAL once (the WAL synced, then its pages
    copied), after its last checkpoint, before it returns."""
    from agentmm.graphs import turn as turn_module
    from agentmm.threads import sync_to_disk

    flushed: list[tuple[int, tuple[int, int, int] | None]] = []

    def spy(saver: Any) -> tuple[int, int, int] | None:
        written = saver.conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
        flushed.append((written, result := sync_to_disk(saver)))
        return result

    monkeypatch.setattr(turn_module, "sync_to_disk", spy)
    agent = Agent(model=ScriptedToolModel(script=[AIMessage("Hello.")]), data_dir=tmp_path, memory=False)
    with agent:
        turn = agent.stream("hi", "t")
        for _ in turn:
            pass
        ((written, answer),) = flushed
        assert written == agent.checkpointer.conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
        assert answer is not None and answer[0] == 0 and answer[1] == answer[2] > 0  # every frame copied

        async def synchronous() -> int:
            graph = await turn_loop(agent).graph()
            cursor = await graph.checkpointer.conn.execute("PRAGMA synchronous")
            return (await cursor.fetchone())[0]

        assert turn_loop(agent).thread.run(synchronous()) == 1  # NORMAL
        values, _ = thread_values(agent.checkpointer, "t")
        assert values["messages"][-1].text == "Hello."
