"""Postgres connections the way LangGraph's Postgres saver and store use them, with agentmm's errors.

LangGraph's ``PostgresSaver``/``PostgresStore`` want autocommit connections, no server-side
prepared statements (``prepare_threshold=0``: safe behind PgBouncer) and dict rows; their
``from_conn_string`` opens one connection, which a worker serving many turns at once would
serialise on, so agentmm hands them a pool with those settings instead. psycopg (the ``fleet``
extra) is imported only when a Postgres URL is configured.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from agentmm.errors import AgentmmError

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

# Connections a worker's pool keeps at most: a turn holds one for its thread lock while the
# saver and the store take others for a moment each.
POOL_MAX = 16
CONNECT_TIMEOUT_S = 10.0
# The advisory lock held while LangGraph's tables are set up (any fixed 64-bit number): workers
# starting together would otherwise race in its migrations (CREATE TABLE of one name, twice).
SETUP_LOCK = 0x6167656E746D6D  # "agentmm"
SETUP_WAIT_S = 120.0
FLEET_HINT = "pip install 'agentmm[fleet]'"
# The fence against a dead worker's late writes (``AdvisoryLocks.fence``): two advisory-lock
# namespaces (the first of the two int4 keys; the second is the process's ``process_key``).
ALIVE_LOCKS = 0x616D6D61  # "amma": held (shared) by a process's lock connection while it lives
WRITER_LOCKS = 0x616D6D77  # "ammw": held (shared) by each connection of its thread pools
FENCE_WAIT_S = 10.0
_MARK = "SELECT pg_advisory_lock_shared(%s, %s)"  # a session's mark, in one namespace, held until it ends
# Ends each writer session whose process has no lock connection left (one row per session).
_END_ORPHAN_WRITERS = """
SELECT pg_terminate_backend(w.pid) FROM pg_locks w
WHERE w.locktype = 'advisory' AND w.granted AND w.objsubid = 2 AND w.classid::bigint = %(writers)s
  AND w.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND NOT EXISTS (
    SELECT 1 FROM pg_locks a
    WHERE a.locktype = 'advisory' AND a.granted AND a.objsubid = 2 AND a.classid::bigint = %(alive)s
      AND a.objid = w.objid AND a.database = w.database)
"""
_process_key: tuple[int, int] | None = None  # (pid, key), made anew in a forked child


class DatabaseError(AgentmmError):
    """A Postgres database cannot be reached or used."""


def redacted(url: str) -> str:
    """``url`` with its password replaced, for messages and ``doctor``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def connection_kwargs() -> dict[str, Any]:
    """What LangGraph's Postgres saver and store need of every connection."""
    from psycopg.rows import dict_row

    return {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}


def _require_psycopg(what: str) -> None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise DatabaseError(f"{what} in Postgres needs psycopg: {FLEET_HINT}") from exc


def process_key() -> int:
    """This process's key in the fence's lock namespaces: random (process ids repeat across
    machines), made anew in a forked child."""
    global _process_key
    if _process_key is None or _process_key[0] != os.getpid():
        _process_key = (os.getpid(), secrets.randbits(31))
    return _process_key[1]


def _mark_writer(conn: Any) -> None:
    conn.execute(_MARK, (WRITER_LOCKS, process_key()))


async def _mark_writer_async(conn: Any) -> None:
    await conn.execute(_MARK, (WRITER_LOCKS, process_key()))


def open_pool(url: str, *, what: str, writer: bool = False) -> ConnectionPool:
    """A connection pool for ``url``, opened once one connection is proven (``what`` names the
    use in the one-line error: "threads", "long-term memory"). ``writer``: each connection is
    marked as this process's thread writer, for the fence (``AdvisoryLocks.fence``); open this
    process's ``AdvisoryLocks`` first, or other workers take the pool for a dead one's."""
    check_reachable(url, what=what)  # the pool would retry quietly, then say only that it timed out
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        url, min_size=1, max_size=POOL_MAX, kwargs=connection_kwargs(), open=False, name=f"agentmm {what}",
        configure=_mark_writer if writer else None,
    )  # fmt: skip
    pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
    return pool


async def open_async_pool(url: str, *, what: str, writer: bool = False) -> AsyncConnectionPool:
    """``open_pool``'s async twin, bound to the running event loop."""
    _require_psycopg(what)
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        url, min_size=1, max_size=POOL_MAX, kwargs=connection_kwargs(), open=False, name=f"agentmm {what} (async)",
        configure=_mark_writer_async if writer else None,
    )  # fmt: skip
    await pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
    return pool


def check_reachable(url: str, *, what: str) -> str:
    """Connect once; the server's version, or ``DatabaseError`` saying why not in one line."""
    _require_psycopg(what)
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=int(CONNECT_TIMEOUT_S)) as conn:
            return str(conn.info.parameter_status("server_version") or "")
    except psycopg.Error as exc:
        raise _unreachable(url, what, exc) from exc


def connect_locks(url: str, *, what: str) -> AdvisoryLocks:
    """An ``AdvisoryLocks`` for ``url``, connected now (before this process's writer pool
    opens), or ``DatabaseError`` in one line, as ``check_reachable``."""
    _require_psycopg(what)
    import psycopg

    locks = AdvisoryLocks(url)
    try:
        locks.open()
    except psycopg.Error as exc:
        raise _unreachable(url, what, exc) from exc
    return locks


def _unreachable(url: str, what: str, exc: Exception) -> DatabaseError:
    reason = " ".join(str(exc).split())
    return DatabaseError(f"cannot reach Postgres for {what} at {redacted(url)}: {reason}")


@contextlib.contextmanager
def setup_lock(pool: ConnectionPool, timeout_s: float = SETUP_WAIT_S) -> Iterator[Any]:
    """Hold the setup advisory lock on one of ``pool``'s connections, which is yielded: one process
    at a time runs a saver's or store's migrations.

    Waited for by trying again every 0.1 s, never by ``pg_advisory_lock``: a session blocked in
    that call is a running statement, and LangGraph's saver migrations include ``CREATE INDEX
    CONCURRENTLY``, which waits for every running statement to end, so the holder would wait for
    the waiter, forever (Postgres does not detect it; found with two ``agentmm serve`` workers
    starting together)."""
    with pool.connection() as conn:
        deadline = time.monotonic() + timeout_s
        while not _held(conn.execute("SELECT pg_try_advisory_lock(%s)", (SETUP_LOCK,)).fetchone()):
            if time.monotonic() > deadline:
                raise DatabaseError(f"another process has been setting up the database for over {timeout_s:.0f} s")
            time.sleep(0.1)
        try:
            yield conn
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK,))


def _held(row: Any) -> bool:
    return bool(next(iter(row.values())) if isinstance(row, dict) else row[0])


def saver_conninfo(saver: Any) -> str | None:
    """The connection string of LangGraph's (sync) Postgres saver; None for any other saver
    (told without importing the saver's module: ``thread_lock.postgres_saver``)."""
    from agentmm.thread_lock import postgres_saver

    if not postgres_saver(saver):
        return None
    from psycopg.conninfo import make_conninfo
    from psycopg_pool import ConnectionPool

    conn = saver.conn
    if isinstance(conn, ConnectionPool):
        return str(conn.conninfo)
    return make_conninfo(conn.info.dsn, password=conn.info.password)


class AdvisoryLocks:
    """Session advisory locks taken on one connection of their own (not a pool's), so holding
    locks for many turns at once never takes connections the saver needs: with each turn's lock
    on a pooled connection, 16 concurrent turns held all 16 and each then waited for a 17th to
    read its thread (found by benchmarks/fleet.py). Tries only, never waits (``try_lock``).
    Shared by the threads of one process; psycopg serialises its use.

    The connection also says this process is alive (``ALIVE_LOCKS``), which the fence against a
    dead worker's late writes reads (``fence``)."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._conn: Any = None
        self._guard = threading.Lock()

    def open(self) -> None:
        """Connect now (else on the first lock): before this process's writer pools open."""
        self._run(lambda conn: None)

    def try_lock(self, key: str) -> bool:
        return _held(self._execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", key))

    def unlock(self, key: str) -> None:
        self._execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", key)

    def fence(self, timeout_s: float = FENCE_WAIT_S) -> bool:
        """End the sessions a dead worker left writing threads; whether none is left.

        A worker killed mid-turn loses its lock connection at once, and with it the thread's
        lock, but a pooled connection of its may still hold statements the server has received
        and not yet run: a checkpoint of the cut-off turn that lands after the next worker took
        the thread and settled it, so that worker's turn is written after the cut-off message
        (found by the killed-worker test on a loaded CI machine). Every connection of a writer
        pool holds its process's ``WRITER_LOCKS`` key and the lock connection its ``ALIVE_LOCKS``
        key, both until they end; a writer whose process has no lock connection left is ended
        here (``pg_terminate_backend``), and waited for, before the thread is read. False if one
        outlives ``timeout_s`` (the role may not end other sessions): the thread is not safe
        to take."""
        keys = {"writers": WRITER_LOCKS, "alive": ALIVE_LOCKS}
        deadline = time.monotonic() + timeout_s
        while self._fetchall(_END_ORPHAN_WRITERS, keys):  # ended (or told to end) this round
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        with self._guard:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _execute(self, sql: str, key: str) -> Any:
        return self._run(lambda conn: conn.execute(sql, (key,)).fetchone())

    def _fetchall(self, sql: str, params: dict[str, Any]) -> list[Any]:
        return self._run(lambda conn: conn.execute(sql, params).fetchall())

    def _run(self, work: Any) -> Any:
        import psycopg

        with self._guard:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            try:
                return work(self._conn)
            except psycopg.OperationalError:  # the connection broke: its locks went with it
                self._conn.close()
                self._conn = self._connect()
                return work(self._conn)

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S))
        conn.execute(_MARK, (ALIVE_LOCKS, process_key()))
        return conn
