"""Threads in Postgres (``checkpointer_url``): LangGraph's Postgres saver as agentmm configures it,
on a real Postgres the tests start (``tests/pg_server.py``).

What a fleet of workers needs of it: every worker sees every thread, a turn holds its thread
against every other worker (a Postgres advisory lock, freed when a worker dies), and a turn a
killed worker left half done is settled by the next one, as with SQLite.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate

from agentmm.graphs.agent import Agent
from agentmm.postgres import DatabaseError
from agentmm.settings import load_settings
from agentmm.thread_lock import ThreadInUseError, turn_on
from agentmm.threads import async_checkpointer, close_saver, list_threads, open_saver, thread_ids, thread_values
from tests.test_crash_safety import THREAD, EchoModel, kill_at, start_turn

ROOT = Path(__file__).resolve().parents[1]


def test_the_async_saver_agentmm_opens_passes_langgraphs_conformance_suite(postgres_url: str) -> None:
    saver = open_saver(load_settings(checkpointer_url=postgres_url))

    @checkpointer_test(name="agentmm Postgres")
    async def agentmm_postgres():  # type: ignore[no-untyped-def]
        async with async_checkpointer(saver) as twin:
            yield twin

    try:
        report = asyncio.run(validate(agentmm_postgres))
    finally:
        saver.conn.close()
    assert report.passed_all_base(), report.print_report()


def test_every_agent_on_the_url_sees_the_thread(postgres_url: str) -> None:
    with Agent(checkpointer_url=postgres_url, model=EchoModel()) as first:
        first.chat("the lighthouse keeper", "t1")
    with Agent(checkpointer_url=postgres_url, model=EchoModel()) as second:
        reply = second.chat("and the boat", "t1")
        values, _ = thread_values(second.checkpointer, "t1")
        assert reply.reply.strip() == "Reply to: and the boat"
    texts = [m.text.strip() for m in values["messages"]]
    assert texts == ["the lighthouse keeper", "Reply to: the lighthouse keeper", "and the boat",
                     "Reply to: and the boat"]  # fmt: skip


def test_threads_commands_read_postgres(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Agent(checkpointer_url=postgres_url, model=EchoModel()) as agent:
        agent.chat("first thread", "a1")
        agent.chat("second thread", "b2")
    saver = open_saver(load_settings(checkpointer_url=postgres_url))
    try:
        assert [t.thread_id for t in list_threads(saver)] == ["b2", "a1"]  # newest first
        assert thread_ids(saver) == ["b2", "a1"]  # the frames only, through a copy of the saver
    finally:
        saver.conn.close()
    monkeypatch.setenv("AGENTMM_CHECKPOINTER_URL", postgres_url)
    cli = [sys.executable, "-m", "agentmm.cli"]
    shown = subprocess.run([*cli, "threads", "show", "a1", "--json"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert '"first thread"' in shown.stdout
    deleted = subprocess.run([*cli, "threads", "delete", "a1"], capture_output=True, text=True, timeout=120)
    assert deleted.returncode == 0, deleted.stderr
    listed = subprocess.run([*cli, "threads", "list", "--json"], capture_output=True, text=True, timeout=120)
    assert '"b2"' in listed.stdout and '"a1"' not in listed.stdout


def test_a_turn_holds_its_thread_against_every_other_worker(postgres_url: str) -> None:
    settings = load_settings(checkpointer_url=postgres_url)
    one, other = open_saver(settings), open_saver(settings)  # two pools: two workers
    try:
        with turn_on(one, "busy"):
            with pytest.raises(ThreadInUseError, match="thread busy is in use"), turn_on(other, "busy"):
                pass
            with turn_on(other, "free"):  # other threads are not held up
                pass
        with turn_on(other, "busy"):  # released with the turn
            pass
    finally:
        one.conn.close()
        other.conn.close()


def test_a_killed_workers_lock_is_freed_and_its_cut_off_turn_rolled_back(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTMM_CHECKPOINTER_URL", postgres_url)
    with Agent(model=EchoModel()) as agent:
        agent.chat("before the crash", THREAD)
    marker = tmp_path / "replying"
    proc = start_turn(tmp_path / "data", "cut off", memory=False, reply_marker=str(marker))
    kill_at(proc, marker)  # SIGKILL while it holds the thread, before its reply
    with Agent(model=EchoModel()) as agent:
        result = agent.chat("after the crash", THREAD)  # the lock went with the worker's session
        values, _ = thread_values(agent.checkpointer, THREAD)
    assert result.reply.strip() == "Reply to: after the crash"
    texts = [m.text.strip() for m in values["messages"]]
    assert texts == ["before the crash", "Reply to: before the crash", "after the crash", "Reply to: after the crash"]


def test_an_unreachable_database_is_one_line(isolated_env: Path) -> None:
    from tests.pg_server import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(DatabaseError, match=r"cannot reach Postgres for threads at postgresql://postgres@127\.0\.0\.1"):
        open_saver(load_settings(checkpointer_url=url))
    done = subprocess.run([sys.executable, "-m", "agentmm.cli", "threads", "list"], capture_output=True, text=True,
                          timeout=120, env={**_env(), "AGENTMM_CHECKPOINTER_URL": url})  # fmt: skip
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_doctor_checks_the_thread_database(postgres_url: str) -> None:
    from agentmm.doctor import threads_check
    from tests.pg_server import free_port

    good = threads_check(load_settings(checkpointer_url=postgres_url))
    assert good["ok"] and "Postgres at postgresql://postgres@127.0.0.1" in good["detail"]
    bad = threads_check(load_settings(checkpointer_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x"))
    assert not bad["ok"] and bad["detail"].startswith("cannot reach Postgres for threads")


def test_more_concurrent_turns_than_the_pool_has_connections(postgres_url: str) -> None:
    """Each turn holds its thread's lock for the whole turn; the locks live on a connection of
    their own, so turns past the pool's size still get connections to read and write their
    threads (with the locks on pooled connections, 16 turns held all 16 and waited forever)."""
    from agentmm.postgres import POOL_MAX
    from tests.test_http_api import SlowEcho

    async def many() -> list[str]:
        with Agent(checkpointer_url=postgres_url, model=SlowEcho(pause=0.05)) as agent:
            turns = [agent.achat(f"message {n}", f"thread{n}") for n in range(POOL_MAX + 8)]
            results = await asyncio.wait_for(asyncio.gather(*turns), timeout=120)
        return [r.reply.strip() for r in results]

    replies = asyncio.run(many())
    assert replies == [f"Reply to: message {n}" for n in range(POOL_MAX + 8)]


LATE_WRITE_GATE = 0x6C617465  # an advisory lock the test holds, so the dead worker's write waits


def late_writer(url: str, marker: str) -> None:
    """A worker that holds thread "late" and has sent a write its server has not run yet (it
    waits for the test's lock): what a worker killed mid-turn leaves (run by the test as a child)."""
    saver = open_saver(load_settings(checkpointer_url=url))
    with turn_on(saver, "late"), saver.conn.connection() as conn:  # type: ignore[union-attr]
        sql = f"SELECT pg_advisory_lock({LATE_WRITE_GATE}); INSERT INTO late_writes VALUES ('cut off')"
        conn.pgconn.send_query(sql.encode())
        while conn.pgconn.flush():
            pass
        Path(marker).write_text("sent")
        time.sleep(600)


def test_a_dead_workers_late_write_cannot_land_after_the_next_worker_takes_its_thread(
    postgres_url: str, tmp_path: Path
) -> None:
    """The killed worker's lock goes with its lock connection at once, but a write its pooled
    connection had sent still runs when the server gets to it; the next holder of the thread ends
    that connection first (``AdvisoryLocks.fence``), and leaves a live worker's alone."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as gate:
        gate.execute("CREATE TABLE late_writes (text TEXT)")
        gate.execute("SELECT pg_advisory_lock(%s)", (LATE_WRITE_GATE,))
        live = open_saver(load_settings(checkpointer_url=postgres_url))  # another worker, alive
        marker = tmp_path / "sent"
        code = "import sys; from tests.test_postgres_threads import late_writer; late_writer(*sys.argv[1:])"
        child = subprocess.Popen([sys.executable, "-c", code, postgres_url, str(marker)], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            _wait_for(lambda: marker.exists() and _waiting_writes(gate) == 1, child)
            child.kill()
            child.wait(30)
            nxt = open_saver(load_settings(checkpointer_url=postgres_url))
            try:
                _wait_for(lambda: _took(nxt, "late"), None)  # once the dead lock connection is gone
            finally:
                close_saver(nxt)
            gate.execute("SELECT pg_advisory_unlock(%s)", (LATE_WRITE_GATE,))
            time.sleep(0.5)  # a write still queued would run now
            assert gate.execute("SELECT count(*) FROM late_writes").fetchone()[0] == 0
            with live.conn.connection() as conn:  # type: ignore[union-attr]
                assert conn.execute("SELECT 1").fetchone() is not None  # the live worker's pool is untouched
        finally:
            child.kill()
            close_saver(live)


def _waiting_writes(conn: Any) -> int:
    sql = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%late_writes%'"
    return int(conn.execute(sql).fetchone()[0])


def _took(saver: Any, thread_id: str) -> bool:
    try:
        with turn_on(saver, thread_id):
            return True
    except ThreadInUseError:
        return False


def _wait_for(done: Any, child: Any) -> None:
    deadline = time.monotonic() + 60
    while not done():
        if child is not None:
            assert child.poll() is None, child.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
