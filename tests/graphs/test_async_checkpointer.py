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
from langgraph.types import Command

from agentmm.graphs.agent import Agent
from agentmm.threads import async_checkpointer, list_threads, open_checkpointer, thread_values
from agentmm.tools.builtin import roll_dice
from tests.graphs.scripted_model import ScriptedToolModel, call


def test_an_async_turn_paused_for_approval_resumes_and_sync_turns_go_on(tmp_path: Path) -> None:
    script = [call("roll_dice", notation="d6"), AIMessage("Six it is."), AIMessage("Bye.")]
    agent = Agent(model=ScriptedToolModel(script=script), tools=[roll_dice], data_dir=tmp_path, memory=False,
                  approve_tools=["roll_dice"])  # fmt: skip

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        paused = [e async for e in agent.astream_events("roll", "web")]
        async with agent.async_graph() as graph:
            assert isinstance(graph.checkpointer, AsyncSqliteSaver)
            assert (await graph.aget_state(agent.config("web"))).interrupts
            resumed = [e async for e in graph.astream_events(Command(resume=True), agent.config("web"), version="v2")]
        return paused, resumed

    with agent:
        paused, resumed = asyncio.run(run())
        assert not any(e["event"] == "on_chat_model_stream" and e["data"]["chunk"].text for e in paused)
        text = "".join(e["data"]["chunk"].text for e in resumed if e["event"] == "on_chat_model_stream")
        assert text == "Six it is."
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
