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

Within one process the hold is not re-entrant, whatever keeps the thread: a second turn on a held
thread (another request of an async web app, another Agent on the same file) is refused as
another process's is, and so is a reader's rollback (``threads.roll_back_dead_turn``), which
would otherwise take the mid-turn checkpoint of a live turn for a dead one's and write a rollback
under it. Neither flock nor a Postgres session lock says that by itself: both are counted per
process (or session), so ``turn_on`` first claims the thread in this process (``_claimed``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentmm.dirlock import DirectoryLock
from agentmm.errors import AgentmmError, DataDirError

LOCKS_ATTRIBUTE = "_agentmm_thread_locks"
_LOCKS_GUARD = threading.Lock()  # makes one AdvisoryLocks per saver when turns start together
# The threads this process holds for a turn, by (where they are kept, thread id); see ``_claimed``.
_CLAIMED: set[tuple[str, str]] = set()
_CLAIMED_GUARD = threading.Lock()


class ThreadInUseError(AgentmmError):
    """Another process is running a turn on this thread."""

    def __init__(self, thread_id: str, pid: int | None) -> None:
        self.thread_id = thread_id
        self.pid = pid
        holder = "another turn in this process" if pid == os.getpid() else f"PID {pid}" if pid else "another process"
        super().__init__(
            f"thread {thread_id} is in use by {holder}, which is answering in it; "
            "wait for its reply, or continue in another thread"
        )


@contextlib.contextmanager
def turn_on(checkpointer: Any, thread_id: str) -> Iterator[None]:
    """Hold ``thread_id`` for one turn: against other processes if ``checkpointer`` keeps threads
    in an SQLite file or in Postgres (any other saver's storage is not ours to lock), and against
    other turns of this process whatever the saver; raise :class:`ThreadInUseError` if another
    process, or another turn of this one, holds it."""
    if postgres_saver(checkpointer):
        locks = _locks_of(checkpointer)
        with _claimed(f"postgres {locks.conninfo}", thread_id), _advisory_lock(locks, thread_id):
            yield
        return
    database = sqlite_file(checkpointer)
    if database is None:
        with _claimed(f"saver {id(checkpointer)}", thread_id):  # held while the caller holds the saver
            yield
        return
    with _claimed(f"sqlite {database.resolve()}", thread_id), _file_lock(database, thread_id):
        yield


@contextlib.contextmanager
def _claimed(place: str, thread_id: str) -> Iterator[None]:
    """Claim ``thread_id`` of the threads kept at ``place`` in this process; ``ThreadInUseError``
    naming this process if a turn of it holds the thread already."""
    key = (place, thread_id)
    with _CLAIMED_GUARD:
        if key in _CLAIMED:
            raise ThreadInUseError(thread_id, os.getpid())
        _CLAIMED.add(key)
    try:
        yield
    finally:
        with _CLAIMED_GUARD:
            _CLAIMED.discard(key)


@contextlib.contextmanager
def _file_lock(database: Path, thread_id: str) -> Iterator[None]:
    """The thread's lock file beside an SQLite database, held against other processes."""
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
    """Whether ``checkpointer`` is LangGraph's (sync) Postgres saver. Looked up among the
    modules already imported, not imported: no such saver exists before its module is, and
    importing it (psycopg with it, ~0.1 s of CPU) for this test was a cost of every turn and
    every thread listing on SQLite."""
    module = sys.modules.get("langgraph.checkpoint.postgres")
    saver_class = getattr(module, "PostgresSaver", None)
    return isinstance(saver_class, type) and isinstance(checkpointer, saver_class)


@contextlib.contextmanager
def _advisory_lock(locks: Any, thread_id: str) -> Iterator[None]:
    """A Postgres session advisory lock on the thread, held for the turn.

    Every worker on the database sees it; one that dies (even by SIGKILL) loses its session and
    with it the lock, so its thread is free again for the next turn, which settles what it left.
    The locks of one saver live on one connection of their own (``AdvisoryLocks``), kept on the
    saver, never on the saver's pool. They are re-entrant per session, so ``turn_on`` claims the
    thread in this process first.
    """
    key = f"agentmm thread {thread_id}"
    if not locks.try_lock(key):
        raise ThreadInUseError(thread_id, None)
    try:
        if not locks.fence():  # a dead holder's writes may still land: not safe to take
            raise ThreadInUseError(thread_id, None)
        yield
    finally:
        locks.unlock(key)


def _locks_of(saver: Any) -> Any:
    """The saver's ``AdvisoryLocks`` (made on first use, kept as an attribute of the saver, closed
    by ``close_locks``)."""
    from agentmm.postgres import AdvisoryLocks, saver_conninfo

    locks = getattr(saver, LOCKS_ATTRIBUTE, None)
    if locks is None:
        with _LOCKS_GUARD:
            locks = getattr(saver, LOCKS_ATTRIBUTE, None)
            if locks is None:
                locks = AdvisoryLocks(saver_conninfo(saver) or "")
                setattr(saver, LOCKS_ATTRIBUTE, locks)
    return locks


def keep_locks(saver: Any, locks: Any) -> None:
    """Give a Postgres saver the ``AdvisoryLocks`` its opener connected before its writer pool."""
    setattr(saver, LOCKS_ATTRIBUTE, locks)


def open_locks(saver: Any) -> None:
    """Connect a Postgres saver's ``AdvisoryLocks`` now: before a writer pool for it opens."""
    _locks_of(saver).open()


def close_locks(saver: Any) -> None:
    """Close the connection holding a Postgres saver's thread locks, if it has one."""
    locks = getattr(saver, LOCKS_ATTRIBUTE, None)
    if locks is not None:
        locks.close()
