"""One turn at a time on a saved thread, across processes.

Two processes running a turn on one thread at once both start from the thread's last checkpoint
and each writes its turn after it; LangGraph then reads the later branch only, so a turn that
reported success is gone, or the thread holds a message without its reply (measured: two
``agentmm chat -m --thread T`` at once, long-term memory off). With memory on, the memory store's
directory lock keeps a second chat process out of the data dir altogether; with memory off, or
memory on a Chroma server, nothing did. So a turn on a thread kept in an SQLite file holds a lock
on that thread (``agentmm.dirlock``, a file beside the database named by a hash of the thread
id), and another process's turn on it is refused with one line naming the holder. A thread kept
in Postgres (``checkpointer_url``: several workers, maybe on several machines) is held by a
Postgres advisory lock instead. Turns on other threads, and readers, are not held up.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentmm.dirlock import DirectoryLock
from agentmm.errors import AgentmmError, DataDirError


class ThreadInUseError(AgentmmError):
    """Another process is running a turn on this thread."""

    def __init__(self, thread_id: str, pid: int | None) -> None:
        self.thread_id = thread_id
        self.pid = pid
        holder = f"PID {pid}" if pid else "another process"
        super().__init__(
            f"thread {thread_id} is in use by {holder}, which is answering in it; "
            "wait for its reply, or continue in another thread"
        )


@contextlib.contextmanager
def turn_on(checkpointer: Any, thread_id: str) -> Iterator[None]:
    """Hold ``thread_id`` for one turn if ``checkpointer`` keeps threads in an SQLite file or in
    Postgres (any other saver: a no-op, its storage is not ours to lock); raise
    :class:`ThreadInUseError` if another process (or another turn of this one) holds it."""
    if postgres_saver(checkpointer):
        with _advisory_lock(checkpointer, thread_id):
            yield
        return
    database = sqlite_file(checkpointer)
    if database is None:
        yield
        return
    name = hashlib.sha256(thread_id.encode()).hexdigest()[:32]
    lock = DirectoryLock(
        database.with_name(f"{database.name}.locks"),
        f"{name}.lock",
        in_use=lambda _directory, pid: ThreadInUseError(thread_id, pid),
        unusable=lambda directory, exc: DataDirError(
            f"cannot lock thread {thread_id} in {directory}: {exc.strerror or exc}"
        ),
    )
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def sqlite_file(checkpointer: Any) -> Path | None:
    """The database file of a LangGraph SQLite saver; None for any other saver or an in-memory one."""
    conn = getattr(checkpointer, "conn", None)
    if not isinstance(conn, sqlite3.Connection):
        return None
    guard = getattr(checkpointer, "lock", None)
    with guard if guard is not None else contextlib.nullcontext():
        try:
            rows = conn.execute("PRAGMA database_list").fetchall()
        except sqlite3.Error:
            return None
    path = next((row[2] for row in rows if row[1] == "main"), "")
    return Path(path) if path else None


def lockable(checkpointer: Any) -> bool:
    """Whether ``turn_on`` really holds threads of this saver (so a run nobody holds is dead)."""
    return postgres_saver(checkpointer) or sqlite_file(checkpointer) is not None


def postgres_saver(checkpointer: Any) -> bool:
    """Whether ``checkpointer`` is LangGraph's (sync) Postgres saver."""
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError:
        return False
    return isinstance(checkpointer, PostgresSaver)


@contextlib.contextmanager
def _advisory_lock(saver: Any, thread_id: str) -> Iterator[None]:
    """A Postgres session advisory lock on the thread, on a connection held for the turn.

    Every worker on the database sees it; one that dies (even by SIGKILL) loses its session and
    with it the lock, so its thread is free again for the next turn, which settles what it left.
    A saver built on a single connection (not a pool) shares that session among its turns, and
    Postgres's advisory locks are re-entrant within a session: such a saver locks against other
    processes only.
    """
    from psycopg_pool import ConnectionPool

    key = f"agentmm thread {thread_id}"
    conn_or_pool = saver.conn
    with (
        conn_or_pool.connection()
        if isinstance(conn_or_pool, ConnectionPool)
        else contextlib.nullcontext(conn_or_pool) as conn
    ):
        row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0)) AS held", (key,)).fetchone()
        held = row["held"] if isinstance(row, dict) else row[0]
        if not held:
            raise ThreadInUseError(thread_id, None)
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
