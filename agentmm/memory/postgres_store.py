"""Long-term memory in Postgres with pgvector: LangGraph's own ``PostgresStore``, with what agentmm adds.

``PostgresMemoryStore`` is LangGraph's ``PostgresStore`` (its tables ``store`` and
``store_vectors``, its migrations, its SQL) over a psycopg ``ConnectionPool``
(``agentmm.postgres.open_pool``), opened by ``from_url`` with ``setup()`` run (idempotent, under an
advisory lock so workers starting together do not race). Any number of worker processes may use
one database. What this subclass adds:

- **one-line errors**: an unreachable server is ``StoreUnreachableError``, a server or database
  without pgvector ``VectorExtensionError``, vectors of another width ``EmbeddingDimsMismatchError``,
  a failing query ``MemoryStoreError``;
- **a change log**, so hybrid recall follows writes (``IncrementalStore``) instead of re-reading
  the scope every turn: a trigger on ``store`` writes the (prefix, key) of every inserted,
  updated or deleted row to ``agentmm_store_changes`` with the writing transaction's id.
  ``revision`` is a snapshot (``pg_current_snapshot()``); ``changed_since(snapshot)`` is every
  logged change whose transaction that snapshot did not see. Commit order does not matter (a
  transaction that began before the snapshot and committed after it is not visible in it, so it
  is reported), so it is exact with any number of writers. The log is pruned to
  ``LOG_KEEP`` rows; a snapshot older than what was pruned gets ``None`` (a full read);
- ``nearest_items``: pgvector's HNSW index on ``store_vectors`` (LangGraph's own search joins
  ``store`` and sorts on an expression, so it scans every vector), returning record ids;
- **agentmm's filter semantics** (``agentmm.memory.filters``): ``$gt``/``$gte``/``$lt``/``$lte``
  compare numbers (LangGraph's SQL compares the text: ``"10" < "9"``), ``$ne`` matches an item
  without the field, a nested object without operators matches its fields (as ``InMemoryStore``);
- a batch is one transaction (LangGraph's runs each statement on its own), its puts written
  in chunks (a Postgres statement takes at most 65,535 parameters), an updated item's old vectors
  replaced (not left behind when a field went away), timestamps in UTC whatever the server's
  time zone; ``restore_timestamps`` (import keeps the exported times) and ``count``.

Semantics that stay LangGraph's Postgres ones: a search with a query returns only items that
have vectors (``InMemoryStore`` and ``ChromaStore`` append the others unscored); a search without
one is newest first.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC
from types import TracebackType
from typing import TYPE_CHECKING, Any

from langgraph.store.base import GetOp, IndexConfig, Item, ListNamespacesOp, Op, PutOp, Result, SearchOp
from langgraph.store.postgres.base import (
    PLACEHOLDER,
    PostgresStore,
    _decode_ns_bytes,
    _group_ops,
    _row_to_search_item,
)

from agentmm.memory._journal import ItemRef
from agentmm.memory.errors import (
    EmbeddingDimsMismatchError,
    MemoryStoreError,
    StoreUnreachableError,
    VectorExtensionError,
)
from agentmm.memory.filters import validate
from agentmm.postgres import setup_lock

if TYPE_CHECKING:
    from psycopg import Connection, Cursor
    from psycopg_pool import ConnectionPool

# Rows of the change log kept (a reader whose snapshot predates the oldest pruned change reads
# its scope in full once); pruned at open and every PRUNE_EVERY write batches of a process.
LOG_KEEP = 100_000
PRUNE_EVERY = 1000
# Puts per INSERT: LangGraph's statement takes 4 parameters a row, Postgres 65,535 at most.
PUT_CHUNK = 1000
# HNSW's candidate list for nearest_items (pgvector's default, 40, caps how many rows it returns).
MIN_EF_SEARCH = 100
MAX_EF_SEARCH = 1000
_SEPARATOR = "\x00"  # no Postgres text holds NUL, so prefix + NUL + key names one item

CHANGE_LOG_SQL = [
    """
CREATE TABLE IF NOT EXISTS agentmm_store_changes (
    id bigserial PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    prefix text NOT NULL,
    key text NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS agentmm_store_changes_xid ON agentmm_store_changes (xid)",
    """
CREATE TABLE IF NOT EXISTS agentmm_store_pruned (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    below xid8 NOT NULL
)""",
    """
CREATE OR REPLACE FUNCTION agentmm_store_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO agentmm_store_changes (prefix, key) VALUES (OLD.prefix, OLD.key);
    END IF;
    IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR (OLD.prefix, OLD.key) IS DISTINCT FROM (NEW.prefix, NEW.key)) THEN
        INSERT INTO agentmm_store_changes (prefix, key) VALUES (NEW.prefix, NEW.key);
    END IF;
    RETURN NULL;
END $$""",
    """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'agentmm_store_changed'
                   AND tgrelid = 'store'::regclass) THEN
        CREATE TRIGGER agentmm_store_changed AFTER INSERT OR UPDATE OR DELETE ON store
            FOR EACH ROW EXECUTE FUNCTION agentmm_store_changed();
    END IF;
END $$""",
]


class PostgresMemoryStore(PostgresStore):
    """LangGraph's ``PostgresStore`` over a connection pool, an ``IncrementalStore`` (module docstring).

    Open it with :meth:`from_url`; :meth:`close` closes the pool.
    """

    def __init__(self, pool: ConnectionPool, *, index: IndexConfig | None = None, location: str = "postgres") -> None:
        super().__init__(pool, index=dict(index) if index else None)  # type: ignore[arg-type]
        self.pool = pool
        self.location = location
        self._closed = False
        self._writes = 0
        self._writes_lock = threading.Lock()

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, *, index: IndexConfig | None = None) -> PostgresMemoryStore:
        """Open a pool on ``url`` (postgresql://...) and set the database up (idempotent)."""
        from agentmm.postgres import DatabaseError, open_pool, redacted

        try:
            pool = open_pool(url, what="long-term memory")
        except DatabaseError as exc:
            raise StoreUnreachableError(str(exc)) from exc
        try:
            store = cls(pool, index=index, location=redacted(url))
            store.setup()
        except BaseException:
            pool.close()
            raise
        return store

    def setup(self) -> None:
        """LangGraph's migrations, then agentmm's change log; pgvector and the vectors' width
        checked first. One process at a time (an advisory lock): workers may start together."""
        with self._errors("set up"), setup_lock(self.pool) as conn:
            if self.index_config:
                self._require_pgvector(conn)
                self._check_dims(conn)
            super().setup()
            with conn.transaction():
                for sql in CHANGE_LOG_SQL:
                    conn.execute(sql)
            self._prune(conn)

    def _require_pgvector(self, conn: Connection[Any]) -> None:
        import psycopg

        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') AS installed, "
            "EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') AS available, "
            "current_database() AS db, current_user AS who"
        ).fetchone()
        assert row is not None
        if row["installed"]:
            return
        if not row["available"]:
            raise VectorExtensionError(
                f"Postgres at {self.location} has no pgvector extension, which long-term memory needs for its "
                "vectors: install pgvector on the server (https://github.com/pgvector/pgvector)"
            )
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            raise VectorExtensionError(
                f"pgvector is installed on the Postgres server at {self.location} but not in database "
                f"{row['db']}, and user {row['who']} may not create it ({_one_line(exc)}): run "
                f"CREATE EXTENSION vector in {row['db']} as its owner or a superuser"
            ) from exc

    def _check_dims(self, conn: Connection[Any]) -> None:
        row = conn.execute(
            "SELECT atttypmod AS dims FROM pg_attribute "
            "WHERE attrelid = to_regclass('store_vectors') AND attname = 'embedding'"
        ).fetchone()
        dims = int(self.index_config["dims"]) if self.index_config else None
        if row is not None and dims is not None and int(row["dims"]) > 0 and int(row["dims"]) != dims:
            raise EmbeddingDimsMismatchError(
                f"memory store {self.location} holds {row['dims']}-dim vectors but the embedder makes {dims}-dim "
                "ones; use the same embedding model or another database"
            )

    # --- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.stop_ttl_sweeper(timeout=1.0)
        self.pool.close()

    def __enter__(self) -> PostgresMemoryStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def count(self, prefix: tuple[str, ...] = ()) -> int:
        """How many items the store holds under ``prefix`` (every namespace by default)."""
        where, params = "TRUE", ()
        if prefix:
            path = ".".join(prefix)
            where, params = r"prefix = %s OR prefix LIKE %s ESCAPE '\'", (path, _escape_like(path) + ".%")
        with self._errors("count"), self.pool.connection() as conn:
            row = conn.execute(f"SELECT count(*) AS n FROM store WHERE {where}", params).fetchone()
        return int(row["n"]) if row else 0

    def pgvector_version(self) -> str | None:
        """The version of pgvector in this database (``None``: not there)."""
        with self._errors("inspect"), self.pool.connection() as conn:
            row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        return str(row["extversion"]) if row else None

    def restore_timestamps(self, rows: Sequence[tuple[tuple[str, ...], str, str, str]]) -> None:
        """Set (namespace, key, created_at, updated_at) on existing items: an import keeps the
        exported times, so export -> import -> export is identical."""
        if not rows:
            return
        with self._errors("restore timestamps of"), self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "UPDATE store SET created_at = v.c, updated_at = v.u FROM (SELECT unnest(%s::text[]) AS p, "
                "unnest(%s::text[]) AS k, unnest(%s::timestamptz[]) AS c, unnest(%s::timestamptz[]) AS u) AS v "
                "WHERE store.prefix = v.p AND store.key = v.k",
                (
                    [".".join(ns) for ns, _, _, _ in rows],
                    [key for _, key, _, _ in rows],
                    [created for _, _, created, _ in rows],
                    [updated for _, _, _, updated in rows],
                ),
            )

    # --- change tracking (IncrementalStore) ---------------------------------------------

    @property
    def revision(self) -> str:
        """The database's snapshot now (``pg_current_snapshot()`` as text)."""
        with self._errors("read the revision of"), self.pool.connection() as conn:
            row = conn.execute("SELECT pg_current_snapshot()::text AS snap").fetchone()
        assert row is not None
        return str(row["snap"])

    def changed_since(self, revision: Any) -> set[ItemRef] | None:
        """Items written by transactions the snapshot ``revision`` did not see; ``None`` when the
        log no longer reaches back that far."""
        if not isinstance(revision, str):
            return None
        with self._errors("read the changes of"), self.pool.connection() as conn:
            pruned = conn.execute(
                "SELECT below >= pg_snapshot_xmin(%s::pg_snapshot) AS lost FROM agentmm_store_pruned", (revision,)
            ).fetchone()
            if pruned is not None and pruned["lost"]:
                return None
            rows = conn.execute(
                "SELECT DISTINCT prefix, key FROM agentmm_store_changes WHERE xid >= pg_snapshot_xmin(%s::pg_snapshot) "
                "AND NOT pg_visible_in_snapshot(xid, %s::pg_snapshot)",
                (revision, revision),
            ).fetchall()
        return {(tuple(row["prefix"].split(".")), row["key"]) for row in rows}

    def record_id(self, namespace: tuple[str, ...], key: str) -> str:
        """The id :meth:`nearest_items` gives the item (namespace, key)."""
        return ".".join(namespace) + _SEPARATOR + str(key)

    def nearest_items(
        self, query: str, n: int, namespace: tuple[str, ...] | None = None
    ) -> tuple[list[tuple[str, float]], bool]:
        """Ids of the items owning the ``n`` vectors nearest to ``query`` (under ``namespace`` if
        given), best first with cosine similarity; and whether that was every vector.

        Without a namespace pgvector's HNSW index answers (``ef_search`` raised to ``n``); with
        one, an exact scan of the scope's vectors (the index would drop the other scopes' rows
        after it found them, returning fewer than asked)."""
        if self.embeddings is None:
            raise MemoryStoreError(f"memory store {self.location} has no embedding index")
        vector = self.embeddings.embed_query(query)
        n = max(1, n)
        with self._errors("search"), self.pool.connection() as conn, conn.transaction():
            if namespace:
                path = ".".join(namespace)
                conn.execute("SET LOCAL enable_indexscan = off")
                rows = conn.execute(
                    "SELECT prefix, key, embedding <=> %s::vector AS distance FROM store_vectors "
                    r"WHERE prefix = %s OR prefix LIKE %s ESCAPE '\' ORDER BY embedding <=> %s::vector LIMIT %s",
                    (vector, path, _escape_like(path) + ".%", vector, n),
                ).fetchall()
            else:
                ef = min(MAX_EF_SEARCH, max(MIN_EF_SEARCH, n))
                conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef),))
                rows = conn.execute(
                    "SELECT prefix, key, embedding <=> %s::vector AS distance FROM store_vectors "
                    "ORDER BY embedding <=> %s::vector LIMIT %s",
                    (vector, vector, n),
                ).fetchall()
        best: dict[str, float] = {}
        for row in sorted(rows, key=lambda r: float(r["distance"])):
            best.setdefault(row["prefix"] + _SEPARATOR + row["key"], 1.0 - float(row["distance"]))
        return list(best.items()), len(rows) < n

    # --- BaseStore ----------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """LangGraph's batch as one transaction on a pooled connection: reads see the store as it
        was before the batch, puts are applied last (the last put to a key winning)."""
        if self._closed:
            raise MemoryStoreError(f"memory store {self.location} is closed")
        from psycopg.rows import dict_row

        grouped, count = _group_ops(ops)
        searches: list[tuple[int, SearchOp]] = grouped.get(SearchOp, [])  # type: ignore[assignment]
        for _, op in searches:
            validate(op.filter)
        # Search queries are embedded before a connection is taken, with embed_query (LangGraph
        # embeds them as documents; agentmm's embedder remembers its last queries).
        prepared = self._prepare_batch_search_queries(searches)[0] if searches else []
        if searches and self.index_config and self.embeddings is not None:
            for idx, (_, op) in enumerate(searches):
                if op.query:
                    vector = self.embeddings.embed_query(op.query)
                    params = prepared[idx][1]
                    prepared[idx] = (prepared[idx][0], [vector if p is PLACEHOLDER else p for p in params])
        results: list[Result] = [None] * count
        with (
            self._errors("use"),
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(binary=True, row_factory=dict_row) as cur,
        ):
            if GetOp in grouped:
                self._batch_get_ops(grouped[GetOp], results, cur)  # type: ignore[arg-type]
            for (idx, _), (query, params) in zip(searches, prepared, strict=True):
                cur.execute(query, params)
                results[idx] = [
                    _row_to_search_item(_decode_ns_bytes(row["prefix"]), row, loader=self._deserializer)
                    for row in cur.fetchall()
                ]
            if ListNamespacesOp in grouped:
                self._batch_list_namespaces_ops(grouped[ListNamespacesOp], results, cur)  # type: ignore[arg-type]
            if PutOp in grouped:
                self._batch_put_ops(grouped[PutOp], cur)  # type: ignore[arg-type]
        if PutOp in grouped:
            self._count_write()
        return [_in_utc(result) for result in results]

    def _batch_put_ops(self, put_ops: Sequence[tuple[int, PutOp]], cur: Cursor[Any]) -> None:
        """LangGraph's puts in chunks, each updated item's old vectors dropped first."""
        latest: dict[ItemRef, tuple[int, PutOp]] = {}
        for idx, op in put_ops:
            latest.pop((op.namespace, op.key), None)
            latest[(op.namespace, op.key)] = (idx, op)
        ordered = list(latest.values())
        for start in range(0, len(ordered), PUT_CHUNK):
            chunk = ordered[start : start + PUT_CHUNK]
            if self.index_config:
                written = [op for _, op in chunk if op.value is not None]
                if written:
                    cur.execute(
                        "DELETE FROM store_vectors WHERE (prefix, key) IN "
                        "(SELECT unnest(%s::text[]), unnest(%s::text[]))",
                        ([".".join(op.namespace) for op in written], [op.key for op in written]),
                    )
            super()._batch_put_ops(chunk, cur)

    def _get_filter_condition(self, key: str, op: str, value: Any) -> tuple[str, list[Any]]:
        """One condition of a filter ``{key: {op: value}}`` (agentmm's semantics, module docstring).

        LangGraph calls this for each entry of a filter's mapping; an entry that is not an
        operator is a field of a nested object (``{"a": {"b": 1}}`` matches ``a.b == 1``)."""
        return _condition([key], op, value)

    # --- helpers --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """A database error as one ``MemoryStoreError`` line naming the store."""
        import psycopg
        from psycopg_pool import PoolClosed, PoolTimeout

        try:
            yield
        except PoolClosed as exc:
            raise MemoryStoreError(f"memory store {self.location} is closed") from exc
        except PoolTimeout as exc:
            raise StoreUnreachableError(f"cannot {doing} memory store {self.location}: no connection ({exc})") from exc
        except psycopg.OperationalError as exc:
            raise StoreUnreachableError(f"cannot {doing} memory store {self.location}: {_one_line(exc)}") from exc
        except psycopg.Error as exc:
            raise MemoryStoreError(f"cannot {doing} memory store {self.location}: {_one_line(exc)}") from exc

    def _count_write(self) -> None:
        with self._writes_lock:
            self._writes += 1
            due = self._writes % PRUNE_EVERY == 0
        if due:
            with contextlib.suppress(MemoryStoreError), self._errors("prune"), self.pool.connection() as conn:
                self._prune(conn)

    def _prune(self, conn: Connection[Any]) -> None:
        """Drop change-log rows past the newest ``LOG_KEEP`` whose transactions every snapshot now
        sees; remember below which transaction id rows may be gone."""
        with conn.transaction():
            row = conn.execute(
                "SELECT LEAST(pg_snapshot_xmin(pg_current_snapshot()), "
                "(SELECT xid FROM agentmm_store_changes ORDER BY id DESC OFFSET %s LIMIT 1)) AS below",
                (LOG_KEEP,),
            ).fetchone()
            if row is None or row["below"] is None:
                return
            conn.execute("DELETE FROM agentmm_store_changes WHERE xid < %s::xid8", (row["below"],))
            conn.execute(
                "INSERT INTO agentmm_store_pruned (below) VALUES (%s::xid8) "
                "ON CONFLICT (one) DO UPDATE SET below = GREATEST(agentmm_store_pruned.below, EXCLUDED.below)",
                (row["below"],),
            )


def _condition(path: list[str], op: str, value: Any) -> tuple[str, list[Any]]:
    field = "(value #> %s::text[])"
    if op == "$eq":
        return f"{field} = %s::jsonb", [path, _json(value)]
    if op == "$ne":
        return f"{field} IS DISTINCT FROM %s::jsonb", [path, _json(value)]
    if op in ("$gt", "$gte", "$lt", "$lte"):
        sign = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
        # CASE keeps the cast from being tried on a value that is not a number.
        return (
            f"(CASE WHEN jsonb_typeof({field}) = 'number' THEN ({field})::text::numeric {sign} %s::numeric "
            "ELSE false END)",
            [path, path, str(float(value))],
        )
    if op.startswith("$"):
        from agentmm.memory.errors import InvalidFilterError

        raise InvalidFilterError(f"unsupported filter operator {op!r}")
    # A field of a nested object: the object must be there (as InMemoryStore's filter requires).
    inner = [*path, op]
    parts = [(f"jsonb_typeof({field}) = 'object'", [path])]
    if isinstance(value, Mapping):
        parts += [_condition(inner, k, v) for k, v in value.items()]
        if not any(str(k).startswith("$") for k in value):
            parts.append((f"jsonb_typeof({field}) = 'object'", [inner]))
    else:
        parts.append((f"{field} = %s::jsonb", [inner, _json(value)]))
    return " AND ".join(f"({p})" for p, _ in parts), [param for _, params in parts for param in params]


def _json(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode("utf-8")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _in_utc(result: Result) -> Result:
    """Items with their timestamps in UTC (Postgres answers in the session's time zone)."""
    if isinstance(result, Item):
        result.created_at = result.created_at.astimezone(UTC)
        result.updated_at = result.updated_at.astimezone(UTC)
    elif isinstance(result, list):
        for item in result:
            if isinstance(item, Item):
                item.created_at = item.created_at.astimezone(UTC)
                item.updated_at = item.updated_at.astimezone(UTC)
    return result
