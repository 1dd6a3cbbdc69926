"""A thread held for a turn is held within its own process too: a second turn on it is refused
whatever keeps the thread, and a reader in the same process never takes the live turn's
mid-turn checkpoint for a dead one's (no rollback written under it)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agentmm.graphs.agent import Agent
from agentmm.thread_lock import ThreadInUseError, postgres_saver, turn_on
from agentmm.threads import thread_values
from tests.test_http_api import SlowEcho


def test_a_second_hold_in_the_same_process_is_refused_and_names_it(isolated_env: Path) -> None:
    with Agent(model=SlowEcho(pause=0.0), memory=False) as agent:
        agent.chat("hello", "t")
        with turn_on(agent.checkpointer, "t"):
            with (
                pytest.raises(ThreadInUseError, match="another turn in this process") as refused,
                turn_on(agent.checkpointer, "t"),
            ):
                pass
            with turn_on(agent.checkpointer, "u"):  # another thread is not held up
                pass
        assert refused.value.pid == os.getpid()
        with turn_on(agent.checkpointer, "t"):  # given back
            pass


def test_two_agents_on_one_file_cannot_answer_in_one_thread_at_once(isolated_env: Path) -> None:
    async def both() -> None:
        with Agent(model=SlowEcho(pause=0.2), memory=False) as first, Agent(model=SlowEcho(), memory=False) as second:
            running = asyncio.create_task(first.achat("one two three", "t"))
            await asyncio.sleep(0.3)
            with pytest.raises(ThreadInUseError):
                await second.achat("meanwhile", "t")
            assert (await running).reply.strip() == "Reply to: one two three"
            assert (await second.achat("after", "t")).reply.strip() == "Reply to: after"

    asyncio.run(both())


def test_turns_on_an_in_memory_saver_are_held_too(isolated_env: Path) -> None:
    async def both() -> None:
        with Agent(model=SlowEcho(pause=0.2), memory=False, checkpointer=InMemorySaver()) as agent:
            running = asyncio.create_task(agent.achat("one two", "t"))
            await asyncio.sleep(0.3)
            with pytest.raises(ThreadInUseError):
                await agent.achat("two", "t")
            await running
            messages = agent.graph.get_state(agent.config("t")).values["messages"]
            assert [m.text.strip() for m in messages] == ["one two", "Reply to: one two"]

    asyncio.run(both())


def test_a_reader_during_a_live_turn_writes_no_rollback(isolated_env: Path) -> None:
    async def read_while_answering() -> tuple[list[str], list[str]]:
        with Agent(model=SlowEcho(pause=0.2), memory=False) as agent:
            agent.chat("first", "t")
            running = asyncio.create_task(agent.achat("second message here", "t"))
            await asyncio.sleep(0.4)  # the reply is being written: the thread's newest checkpoint is mid-turn
            seen, _ = await asyncio.to_thread(thread_values, agent.checkpointer, "t")
            await running
            sources = [c.metadata.get("source") for c in agent.checkpointer.list(agent.config("t"))]
            return [m.text.strip() for m in seen["messages"]], sources

    seen, sources = asyncio.run(read_while_answering())
    assert seen[-1] == "second message here"  # shown as it is: a live process is answering it
    assert "fork" not in sources  # no rollback was written under the live turn


def test_a_thread_cannot_be_deleted_while_a_turn_runs_on_it(isolated_env: Path) -> None:
    """Deleted mid-turn, the turn's checkpoints were written back after it: the thread returned."""
    from agentmm.threads import delete_thread, thread_exists

    with Agent(model=SlowEcho(pause=0.0), memory=False) as agent:
        agent.chat("hello", "t")
        with turn_on(agent.checkpointer, "t"), pytest.raises(ThreadInUseError, match="thread t is in use"):
            delete_thread(agent.checkpointer, "t")
        assert thread_exists(agent.checkpointer, "t")
        delete_thread(agent.checkpointer, "t")
        assert not thread_exists(agent.checkpointer, "t")


def test_a_turn_and_a_listing_on_sqlite_threads_import_no_postgres_saver(tmp_path: Path) -> None:
    """Telling a Postgres saver apart cost every turn on SQLite the import of LangGraph's
    Postgres saver and psycopg (~0.1 s of CPU): a saver of that class cannot exist before its
    module is imported, so none is imported for it."""
    code = (
        "import sys; from pathlib import Path\n"
        "from agentmm.thread_lock import lockable, turn_on\n"
        "from agentmm.threads import open_checkpointer, thread_ids\n"
        f"saver = open_checkpointer(Path({str(tmp_path)!r}))\n"
        "with turn_on(saver, 't'):\n"
        "    assert lockable(saver)\n"
        "thread_ids(saver)\n"
        "import asyncio; from agentmm.threads import async_checkpointer\n"
        "async def turn():\n"
        "    async with async_checkpointer(saver):\n"
        "        pass\n"
        "asyncio.run(turn())\n"
        "print(sorted(m for m in ('langgraph.checkpoint.postgres', 'psycopg') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_postgres_saver_is_still_told_apart() -> None:
    postgres = pytest.importorskip("langgraph.checkpoint.postgres")

    class OwnSaver(postgres.PostgresSaver):  # a subclass, as a caller may pass
        pass

    assert postgres_saver(postgres.PostgresSaver.__new__(postgres.PostgresSaver))
    assert postgres_saver(OwnSaver.__new__(OwnSaver))
    assert not postgres_saver(InMemorySaver())
