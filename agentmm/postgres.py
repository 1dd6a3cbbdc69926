"""Postgres connections the way LangGraph's Postgres saver and store use them, with agentmm's errors.

LangGraph's ``PostgresSaver``/``PostgresStore`` want autocommit connections, no server-side
prepared statements (``prepare_threshold=0``: safe behind PgBouncer) and dict rows; their
``from_conn_string`` opens one connection, which a worker serving many turns at once would
serialise on, so agentmm hands them a pool with those settings instead. psycopg (the ``fleet``
extra) is imported only when a Postgres URL is configured.
"""

from __future__ import annotations

import contextlib
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


def open_pool(url: str, *, what: str) -> ConnectionPool:
    """A connection pool for ``url``, opened once one connection is proven (``what`` names the
    use in the one-line error: "threads", "long-term memory")."""
    check_reachable(url, what=what)  # the pool would retry quietly, then say only that it timed out
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        url, min_size=1, max_size=POOL_MAX, kwargs=connection_kwargs(), open=False, name=f"agentmm {what}"
    )
    pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
    return pool


async def open_async_pool(url: str, *, what: str) -> AsyncConnectionPool:
    """``open_pool``'s async twin, bound to the running event loop."""
    _require_psycopg(what)
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        url, min_size=1, max_size=POOL_MAX, kwargs=connection_kwargs(), open=False, name=f"agentmm {what} (async)"
    )
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
        reason = " ".join(str(exc).split())
        raise DatabaseError(f"cannot reach Postgres for {what} at {redacted(url)}: {reason}") from exc


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
    """The connection string of LangGraph's (sync) Postgres saver; None for any other saver."""
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError:
        return None
    if not isinstance(saver, PostgresSaver):
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
    Shared by the threads of one process; psycopg serialises its use."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._conn: Any = None
        self._guard = threading.Lock()

    def try_lock(self, key: str) -> bool:
        return _held(self._execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", key))

    def unlock(self, key: str) -> None:
        self._execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", key)

    def close(self) -> None:
        with self._guard:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _execute(self, sql: str, key: str) -> Any:
        import psycopg

        with self._guard:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            try:
                return self._conn.execute(sql, (key,)).fetchone()
            except psycopg.OperationalError:  # the connection broke: its locks went with it
                self._conn.close()
                self._conn = self._connect()
                return self._conn.execute(sql, (key,)).fetchone()

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.conninfo, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S))
