"""A LangGraph ``BaseStore`` over chromadb: agentmm's long-term memory.

Embedded (``from_path``: a ``PersistentClient`` directory, guarded so only one process opens
it) or a Chroma server (``from_url``: any number of processes). Records are laid out as
``_records`` describes. Semantics follow LangGraph's own stores:

- reads in a batch see the store as it was before the batch; puts are applied last, the
  last put to one (namespace, key) winning;
- a search without a query returns the newest items first (as the Postgres and SQLite
  stores do); with a query, items ranked by their best-matching text (cosine similarity in
  ``score``), then items that have no vectors, unscored (as ``InMemoryStore`` does);
- filters are LangGraph's (``filters``), checked exactly in Python after Chroma has
  narrowed the candidates;
- ``created_at`` survives updates; ``updated_at`` moves.

Writes are built in full (JSON, metadata, vectors) before the first one reaches Chroma, so
a bad value or a failing embedder leaves the store untouched. A batch with more than
``PIPELINE_CHUNK`` texts (an import, an evaluation's conversation) is embedded and written
chunk by chunk, the next chunk embedding while the last is written; its values are all
serialised first, and what its written chunks replaced is read before each is written, so a
failure part way is undone (``_undo``) and the promise holds.

Several batches that must stand or fall together (an import: its items, then their exported
timestamps) run in :meth:`ChromaStore.all_or_nothing`: what each write replaces is logged in
the store's directory before it is written, and a block that does not finish is taken back,
in the process if it can, else by the next open of the directory (a process killed part way).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
)

from agentmm.errors import Hint
from agentmm.memory import _records as rec
from agentmm.memory import _undo
from agentmm.memory._journal import ItemRef, Revision
from agentmm.memory._lock import DirectoryLock
from agentmm.memory.errors import (
    EmbeddingDimsMismatchError,
    MemoryStoreError,
    StoreDamagedError,
    StoreUnreachableError,
)
from agentmm.memory.filters import matches, namespace_matches, pushdown, scalar_metadata, validate

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from langchain_core.embeddings import Embeddings

DEFAULT_SEARCH_EF = 400
# Chroma keeps every write in its SQLite log (``embeddings_queue``) until the collection's
# HNSW index is next saved, every ``sync_threshold`` writes (1,000 by default), and each
# write reads that whole log again: a memory turn's two upserts took 19-25 ms each with ~600
# records waiting against 6 ms just after a save. Saving every 100 writes keeps the log short:
# remember fell from 59 to 27 ms (median, 300 seeded turns), seeding 300 turns from 12.5 to
# 8.2 s; a save itself writes only the changed HNSW elements (p99 of a 2-vector upsert at
# 30,000 vectors: 30 ms, mean 6.5 ms against 7.7 ms).
SYNC_THRESHOLD = 100
# A batch with more texts than this is embedded in chunks of this many puts, each while the
# chunk before it is written: the embedder and Chroma's writes each leave part of the CPU idle,
# so overlapping them ingests 10k memories at 416-419 texts/s instead of 346-371 (2 cores).
PIPELINE_CHUNK = 256
DEFAULT_COLLECTION_PREFIX = "agentmm"
DEFAULT_PORT = 8000
MAX_PAGE = 5000
# How many nearest vectors a query search reads before giving up on filling its page with
# items that pass a filter Chroma cannot check itself (nested fields, $ne, lists).
MAX_CANDIDATES = 5000

T = TypeVar("T")


@dataclass
class _Plan:
    """What a batch needs before it touches Chroma: its ops, deduplicated puts, texts to embed."""

    ops: list[Op]
    puts: dict[ItemRef, PutOp] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    texts: dict[str, list[tuple[tuple[str, ...], str, str]]] = field(default_factory=dict)


class ChromaStore(BaseStore):
    """LangGraph store backed by Chroma, with optional semantic search.

    Pass ``index`` (``{"dims": 384, "embed": embedder, "fields": ["text"]}``) to embed the
    given fields of every put and allow ``search(..., query=...)``.
    """

    supports_ttl = False

    def __init__(
        self,
        client: ClientAPI,
        *,
        index: IndexConfig | None = None,
        collection_prefix: str = DEFAULT_COLLECTION_PREFIX,
        search_ef: int = DEFAULT_SEARCH_EF,
        location: str = "chroma",
        dir_lock: DirectoryLock | None = None,
    ) -> None:
        self.location = location
        self.index_config: IndexConfig | None = dict(index) if index else None  # type: ignore[assignment]
        self.embeddings: Embeddings | None = ensure_embeddings(index["embed"]) if index else None
        self._fields: list[tuple[str, str | list[str]]] = [
            (p, p if p == "$" else tokenize_path(p)) for p in ((index or {}).get("fields") or ["$"])
        ]
        self._client = client
        self._dir_lock = dir_lock
        # Only an embedded store knows every write made to it (no other process may write).
        self._journal = dir_lock.journal if dir_lock is not None else None
        self._mutex = threading.RLock()
        self._closed = False
        self._undo_log: _undo.UndoLog | None = None  # while an all_or_nothing block runs
        self._items = self._collection(f"{collection_prefix}-items", "l2")
        self._namespaces = self._collection(f"{collection_prefix}-namespaces", "l2")
        self._vectors = self._collection(f"{collection_prefix}-vectors", "cosine", ef_search=search_ef)
        # Chroma turns one read into one SQL statement with a variable per record, and SQLite
        # refuses more than 32,766: every unbounded read is paged at the write batch size.
        self._max_batch = max(1, int(client.get_max_batch_size()))
        self._page = min(self._max_batch, MAX_PAGE)
        self._max_candidates = min(self._max_batch, MAX_CANDIDATES)
        self._settle_cut_off_block()
        self._check_dims()

    # --- construction -------------------------------------------------------------------

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        *,
        index: IndexConfig | None = None,
        collection_prefix: str = DEFAULT_COLLECTION_PREFIX,
        search_ef: int = DEFAULT_SEARCH_EF,
    ) -> ChromaStore:
        """Open (or create) an embedded store in a directory this process then holds."""
        lock = DirectoryLock(Path(path).expanduser())
        lock.acquire()
        client = None
        try:
            import chromadb
            from chromadb.config import Settings

            try:
                client = chromadb.PersistentClient(
                    path=str(lock.directory), settings=Settings(anonymized_telemetry=False)
                )
                return cls(
                    client,
                    index=index,
                    collection_prefix=collection_prefix,
                    search_ef=search_ef,
                    location=str(lock.directory),
                    dir_lock=lock,
                )
            except (chromadb.errors.InternalError, sqlite3.DatabaseError) as exc:
                raise StoreDamagedError(_damaged(lock.directory, exc), see=RESTORE_EXPORT) from exc
        except BaseException:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
            else:
                _forget_unopened_system(str(lock.directory))
            lock.release()
            raise

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        index: IndexConfig | None = None,
        headers: Mapping[str, str] | None = None,
        collection_prefix: str = DEFAULT_COLLECTION_PREFIX,
        search_ef: int = DEFAULT_SEARCH_EF,
    ) -> ChromaStore:
        """Connect to a Chroma server (``chroma run``), e.g. ``http://127.0.0.1:8000``."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MemoryStoreError(f"memory store URL {url!r} is not an http(s) URL")
        import chromadb
        from chromadb.config import Settings

        try:
            client = chromadb.HttpClient(
                host=parts.hostname,
                port=parts.port or (443 if parts.scheme == "https" else DEFAULT_PORT),
                ssl=parts.scheme == "https",
                headers=dict(headers or {}),
                settings=Settings(anonymized_telemetry=False),
            )
            client.heartbeat()
        except Exception as exc:
            raise StoreUnreachableError(f"no Chroma server answers at {url}: {exc}") from exc
        return cls(client, index=index, collection_prefix=collection_prefix, search_ef=search_ef, location=url)

    def _collection(self, name: str, space: str, **tuned: int) -> Collection:
        """The collection, made with these HNSW settings; one made earlier is brought to the
        ``tuned`` ones (``space`` cannot change after creation)."""
        tuned = {"sync_threshold": SYNC_THRESHOLD, **tuned}
        collection = self._client.get_or_create_collection(
            name,
            embedding_function=None,
            configuration={"hnsw": {"space": space, **tuned}},  # type: ignore[arg-type, typeddict-item]
        )
        _tune_hnsw(collection, tuned)
        return collection

    def _check_dims(self) -> None:
        """Refuse an embedder whose vectors are not as wide as the ones already stored."""
        if not self.index_config:
            return
        dims = int(self.index_config["dims"])
        stored = (self._vectors.metadata or {}).get(rec.DIMS)
        if stored is None:
            sample = self._vectors.get(limit=1, include=["embeddings"])
            embeddings = sample.get("embeddings")
            if embeddings is not None and len(embeddings) > 0:
                stored = len(embeddings[0])
            else:
                self._vectors.modify(metadata={rec.DIMS: dims})
                return
        if int(stored) != dims:
            raise EmbeddingDimsMismatchError(
                f"memory store {self.location} holds {stored}-dim vectors but the embedder makes {dims}-dim ones; "
                "use the same embedding model or another store"
            )

    # --- all or nothing ----------------------------------------------------------------

    @property
    def _undo_path(self) -> Path | None:
        return self._dir_lock.directory / _undo.UNDO_FILENAME if self._dir_lock is not None else None

    @contextlib.contextmanager
    def all_or_nothing(self) -> Iterator[None]:
        """Every write this store makes in the block stands, or none does.

        What each write replaces is read and logged before it is written (for an embedded
        store in its directory, synced), and the block holds the store's mutex, so other
        threads see the block whole or not at all. A block that raises (Ctrl-C included) is
        taken back here; one whose process dies, or whose taking back fails, is taken back by
        the next open of the directory. A block inside a block joins the outer one. A Chroma
        server's store logs in memory only: a killed process cannot be taken back there.
        """
        with self._mutex:
            if self._undo_log is not None:
                yield
                return
            if self._closed:
                raise MemoryStoreError(f"memory store {self.location} is closed")
            log = self._undo_log = _undo.UndoLog(self._undo_path)
            try:
                yield
            except BaseException:
                self._undo_log = None
                try:
                    self._roll_back(log.entries)
                except BaseException:
                    log.detach()  # the next open takes it back
                    raise
                log.close()
                raise
            self._undo_log = None
            log.close()

    def _log_undo(self, refs: Iterable[ItemRef]) -> None:
        """In an all_or_nothing block: log what writing ``refs`` replaces, before it is written.
        Items the block already logged are skipped: their state before the block is logged."""
        log = self._undo_log
        if log is None:
            return
        fresh = {rec.item_id(*ref): ref for ref in refs}
        fresh = {record_id: ref for record_id, ref in fresh.items() if record_id not in log.ids}
        for chunk in _chunks(list(fresh), self._max_batch):
            log.add([fresh[i] for i in chunk], _undo.backup(self._items, self._vectors, chunk))

    def _roll_back(self, entries: Sequence[tuple[list[ItemRef], _undo.Backup]]) -> None:
        """Put back what a block's writes replaced, newest first, so each item ends as it was
        before the block; then drop the namespaces that it alone had filled."""
        refs = [ref for written, _ in entries for ref in written]
        for _, saved in reversed(entries):
            _undo.restore(self._items, self._vectors, saved)
        self._unregister_if_empty({namespace for namespace, _ in refs})
        if self._journal is not None:
            self._journal.record(refs)

    def _settle_cut_off_block(self) -> None:
        """Take back an all_or_nothing block a killed process left in the directory: once per
        hold of the directory (the first store of this process to open it), never under a
        block this process is running."""
        path = self._undo_path
        shared = self._dir_lock.shared if self._dir_lock is not None else None
        first = object()
        if path is None or shared is None or shared.setdefault("undo_settled", first) is not first:
            return
        if not path.exists():
            return
        with self._mutex:
            self._roll_back(_undo.read_log(path))
            path.unlink(missing_ok=True)

    # --- lifecycle ----------------------------------------------------------------------

    def restore_timestamps(self, rows: Sequence[tuple[tuple[str, ...], str, str, str]]) -> None:
        """Set (namespace, key, created_at, updated_at) on existing items: an import keeps the
        exported times, so export -> import -> export is identical."""
        with self._mutex:
            self._log_undo((tuple(namespace), key) for namespace, key, _, _ in rows)
            for chunk in _chunks(list(rows), self._max_batch):
                ids = [rec.item_id(namespace, key) for namespace, key, _, _ in chunk]
                found = self._existing_metadata(ids)
                updates = [
                    (record, {**found[record], rec.CREATED_AT: created, rec.UPDATED_AT: updated})
                    for record, (_, _, created, updated) in zip(ids, chunk, strict=True)
                    if record in found
                ]
                if updates:
                    self._items.update(ids=[r for r, _ in updates], metadatas=[m for _, m in updates])

    def close(self) -> None:
        """Release the Chroma client and, for an embedded store, the directory lock."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(Exception):
                self._client.close()
            if self._dir_lock is not None:
                self._dir_lock.release()

    def __enter__(self) -> ChromaStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- change tracking ----------------------------------------------------------------

    @property
    def revision(self) -> Revision | None:
        """A token of the store's state for caches; ``None`` for a server store, which others change."""
        return self._journal.revision if self._journal is not None else None

    def changed_since(self, revision: Revision) -> set[ItemRef] | None:
        """(namespace, key) of the items written since ``revision``, or ``None`` if unknown."""
        return self._journal.changed_since(revision) if self._journal is not None else None

    # --- for callers that keep the items themselves -------------------------------------

    def record_id(self, namespace: tuple[str, ...], key: str) -> str:
        """The id :meth:`nearest_items` gives the item (namespace, key)."""
        return rec.item_id(tuple(namespace), str(key))

    def nearest_items(
        self, query: str, n: int, namespace: tuple[str, ...] | None = None
    ) -> tuple[list[tuple[str, float]], bool]:
        """Ids of the items owning the ``n`` vectors nearest to ``query`` (only vectors under
        ``namespace`` if given), best first with cosine similarity; and whether that was all.

        No item is read: hybrid recall already holds the scope's items in its cache, and
        reading 50 candidates' values from Chroma cost more than the search (measured).
        """
        if self.embeddings is None:
            raise MemoryStoreError(f"memory store {self.location} has no embedding index")
        vector = self.embeddings.embed_query(query)
        where = rec.combine(rec.scope_clauses(namespace)) if namespace else None
        n = max(1, min(n, self._max_candidates))
        with self._mutex:
            if self._closed:
                raise MemoryStoreError(f"memory store {self.location} is closed")
            got = self._vectors.query(query_embeddings=[vector], n_results=n, where=where, include=["distances"])
        vector_ids = (got["ids"] or [[]])[0]
        best: dict[str, float] = {}
        for vector_id, distance in zip(vector_ids, (got["distances"] or [[]])[0], strict=True):
            best.setdefault(rec.item_of_vector(vector_id), 1.0 - float(distance))
        return list(best.items()), len(vector_ids) < n

    # --- BaseStore ----------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ops in order; embeddings are computed before Chroma is touched."""
        plan = self._plan(ops)
        queries: dict[str, list[float]] = {}
        vectors: dict[str, list[float]] = {}
        if self.embeddings is not None:
            queries = {q: self.embeddings.embed_query(q) for q in plan.queries}
            if len(plan.texts) > PIPELINE_CHUNK:
                return self._execute_pipelined(plan, queries)
            vectors = self._embed(plan)
        return self._execute(plan, queries, vectors)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async twin of :meth:`batch`: embeds with the async API, runs Chroma in a thread."""
        plan = self._plan(ops)
        if self.embeddings is not None and len(plan.texts) > PIPELINE_CHUNK:
            return await asyncio.to_thread(self.batch, plan.ops)
        queries: dict[str, list[float]] = {}
        vectors: dict[str, list[float]] = {}
        if self.embeddings is not None:
            embedded = await asyncio.gather(*(self.embeddings.aembed_query(q) for q in plan.queries))
            queries = dict(zip(plan.queries, embedded, strict=True))
            texts = list(plan.texts)
            if texts:
                vectors = dict(zip(texts, await self.embeddings.aembed_documents(texts), strict=True))
        return await asyncio.to_thread(self._execute, plan, queries, vectors)

    # --- planning -----------------------------------------------------------------------

    def _plan(self, ops: Iterable[Op]) -> _Plan:
        plan = _Plan(ops=list(ops))
        for op in plan.ops:
            if isinstance(op, PutOp):
                rec.check_labels(op.namespace, allow_empty=False)
                plan.puts[(tuple(op.namespace), str(op.key))] = op
            elif isinstance(op, GetOp):
                rec.check_labels(op.namespace)
            elif isinstance(op, SearchOp):
                rec.check_labels(op.namespace_prefix)
                validate(op.filter)
                if op.query and self.embeddings is not None and op.query not in plan.queries:
                    plan.queries.append(op.query)
            elif isinstance(op, ListNamespacesOp):
                for condition in op.match_conditions or ():
                    rec.check_labels(condition.path)
            else:
                raise ValueError(f"Unknown operation type: {type(op)}")
        if self.embeddings is not None:
            plan.texts = self._texts_to_embed(plan.puts)
        return plan

    def _texts_to_embed(self, puts: Mapping[ItemRef, PutOp]) -> dict[str, list[tuple[tuple[str, ...], str, str]]]:
        """Each distinct text once, with every (namespace, key, path) it was found at."""
        texts: dict[str, list[tuple[tuple[str, ...], str, str]]] = defaultdict(list)
        for (namespace, key), op in puts.items():
            if op.value is None or op.index is False:
                continue
            paths = self._fields if op.index is None else [(p, tokenize_path(p)) for p in op.index]
            for path, tokens in paths:
                found = get_text_at_path(op.value, tokens)
                if len(found) == 1:
                    texts[found[0]].append((namespace, key, path))
                else:
                    for i, text in enumerate(found):
                        texts[text].append((namespace, key, f"{path}.{i}"))
        return texts

    # --- execution ----------------------------------------------------------------------

    def _execute(
        self, plan: _Plan, queries: Mapping[str, list[float]], vectors: Mapping[str, list[float]]
    ) -> list[Result]:
        with self._mutex:
            if self._closed:
                raise MemoryStoreError(f"memory store {self.location} is closed")
            results: list[Result] = [None] * len(plan.ops)
            gets = [(i, op) for i, op in enumerate(plan.ops) if isinstance(op, GetOp)]
            if gets:
                found = self._fetch_items([rec.item_id(tuple(op.namespace), str(op.key)) for _, op in gets])
                for i, op in gets:
                    results[i] = found.get(rec.item_id(tuple(op.namespace), str(op.key)))
            for i, op in enumerate(plan.ops):
                if isinstance(op, SearchOp):
                    results[i] = self._search(op, queries.get(op.query) if op.query else None)
                elif isinstance(op, ListNamespacesOp):
                    results[i] = self._list_namespaces(op)
            if plan.puts:
                stale = self._vectors_of([rec.item_id(*ref) for ref, op in plan.puts.items() if op.value is not None])
                # A write that replaces vectors deletes the old ones after the new row: a kill in
                # between would leave them, matching the old text. Such a write is made whole or
                # not at all (logged first, as an import is); one of new items only is not.
                with self.all_or_nothing() if stale else contextlib.nullcontext():
                    self._log_undo(plan.puts)
                    self._apply_puts(plan, vectors, stale=stale)
            return results

    def _embed(self, plan: _Plan) -> dict[str, list[float]]:
        texts = list(plan.texts)
        if not texts or self.embeddings is None:
            return {}
        return dict(zip(texts, self.embeddings.embed_documents(texts), strict=True))

    def _execute_pipelined(self, plan: _Plan, queries: Mapping[str, list[float]]) -> list[Result]:
        """Reads first (against the store as it was), then the puts in chunks, each chunk's texts
        embedded in a worker thread while the chunk before it is written. A value that cannot
        be stored fails before the first write; a failure after it undoes the written chunks."""
        for op in plan.puts.values():
            if op.value is not None:
                json.dumps(dict(op.value), ensure_ascii=False)
        chunks = []
        for refs in _chunks(list(plan.puts), PIPELINE_CHUNK):
            puts = {ref: plan.puts[ref] for ref in refs}
            chunks.append(_Plan(ops=[], puts=puts, texts=self._texts_to_embed(puts)))
        written: list[tuple[_Plan, _undo.Backup]] = []
        # The mutex is held throughout, so other threads see the batch whole or not at all.
        with self._mutex, ThreadPoolExecutor(1, thread_name_prefix="agentmm-embed") as worker:
            pending: Future[dict[str, list[float]]] = worker.submit(self._embed, chunks[0])
            results = self._execute(_Plan(ops=plan.ops), queries, {})  # while the first chunk embeds
            try:
                for i, chunk in enumerate(chunks):
                    vectors = pending.result()
                    if i + 1 < len(chunks):
                        pending = worker.submit(self._embed, chunks[i + 1])
                    saved = _undo.backup(self._items, self._vectors, [rec.item_id(*ref) for ref in chunk.puts])
                    if self._undo_log is not None:  # a block's write: its log takes it back
                        self._undo_log.add(chunk.puts, saved)
                    else:
                        written.append((chunk, saved))
                    # The reads above checked the store open, and close() waits for the mutex.
                    self._apply_puts(chunk, vectors, existing=saved.existing)
            except BaseException:
                pending.cancel()
                self._undo(written)
                raise
        return results

    def _undo(self, written: Sequence[tuple[_Plan, _undo.Backup]]) -> None:
        """Put back what the written chunks of a failed batch replaced, newest chunk first."""
        for chunk, saved in reversed(written):
            _undo.restore(self._items, self._vectors, saved)
            self._unregister_if_empty({namespace for namespace, _ in chunk.puts})
            if self._journal is not None:
                self._journal.record(chunk.puts)

    def _scan(
        self, collection: Collection, where: dict[str, Any] | None, *, documents: bool = False
    ) -> Iterator[tuple[str, Mapping[str, Any], str]]:
        """Every record matching ``where``, page by page: (id, metadata, document or "")."""
        include: list[Any] = ["metadatas", "documents"] if documents else ["metadatas"]
        offset = 0
        while True:
            got = collection.get(where=where, limit=self._page, offset=offset, include=include)
            ids = got["ids"]
            docs = got["documents"] if documents else [""] * len(ids)
            yield from zip(ids, got["metadatas"], docs, strict=True)
            if len(ids) < self._page:
                return
            offset += len(ids)

    def _fetch_items(self, ids: Sequence[str]) -> dict[str, Item]:
        found: dict[str, Item] = {}
        for chunk in _chunks(list(dict.fromkeys(ids)), self._max_batch):
            got = self._items.get(ids=chunk, include=["metadatas", "documents"])
            for record_id, metadata, document in zip(got["ids"], got["metadatas"], got["documents"], strict=True):
                found[record_id] = rec.decode_item(metadata, document)
        return found

    # --- search -------------------------------------------------------------------------

    def _search(self, op: SearchOp, query_vector: list[float] | None) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        clauses = rec.scope_clauses(prefix) + pushdown(op.filter)
        if query_vector is None:
            page = self._newest_first(clauses, op.filter, prefix, op.offset, op.offset + op.limit)
            return [_search_item(item, None) for item in page]
        ranked, exhausted = self._nearest(query_vector, clauses, op, prefix)
        want = op.offset + op.limit
        if exhausted and len(ranked) < want:
            ranked = self._with_unreached(query_vector, clauses, op, prefix, ranked)
        page = [_search_item(item, score) for item, score in ranked[op.offset : want]]
        if len(ranked) < want:
            # Like InMemoryStore: items without vectors follow the ranked ones, unscored.
            start = max(0, op.offset - len(ranked))
            unranked = self._newest_first(
                [*clauses, {rec.VECTOR_COUNT: 0}], op.filter, prefix, start, start + op.limit - len(page)
            )
            page += [_search_item(item, None) for item in unranked]
        return page

    def _newest_first(
        self,
        clauses: list[dict[str, Any]],
        filter: Mapping[str, Any] | None,
        prefix: tuple[str, ...],
        start: int,
        stop: int,
    ) -> list[Item]:
        """The [start:stop] slice of the items in scope that pass the filter, newest first."""
        where = rec.combine(clauses)
        if filter:
            items = [
                item
                for _, metadata, document in self._scan(self._items, where, documents=True)
                if (item := rec.decode_item(metadata, document)).namespace[: len(prefix)] == prefix
                and matches(item.value, filter)
            ]
            return sorted(items, key=lambda it: (it.updated_at, it.key), reverse=True)[start:stop]
        # No filter: order on metadata alone, then fetch the documents of the slice only.
        order = sorted(
            ((record_id, metadata) for record_id, metadata, _ in self._scan(self._items, where)),
            key=lambda r: (str(r[1][rec.UPDATED_AT]), str(r[1][rec.KEY])),
            reverse=True,
        )
        page = [record_id for record_id, _ in order[start:stop]]
        found = self._fetch_items(page)
        return [found[i] for i in page if i in found]

    def _nearest(
        self, query_vector: list[float], clauses: list[dict[str, Any]], op: SearchOp, prefix: tuple[str, ...]
    ) -> tuple[list[tuple[Item, float]], bool]:
        """Items ranked by their closest vector, enough of them to fill the page after filtering;
        and whether the query read every vector in scope.

        The first query is unfiltered and checked here: enough whenever the scope holds much
        of the store (one user's memories), and ~10x cheaper than Chroma's metadata filter
        (4 vs 45 ms at 10k vectors, measured). Only when the nearest vectors overall do not
        fill the page from the scope does Chroma filter, reading deeper until the page fills.
        """
        want = op.offset + op.limit
        if want <= 0:
            return [], False
        n = min(self._max_candidates, max(2 * want, 20))
        items: dict[str, Item | None] = {}
        ranked, exhausted = self._rank(query_vector, None, n, op, prefix, items)
        where = rec.combine(clauses)
        while len(ranked) < want and not exhausted:
            ranked, exhausted = self._rank(query_vector, where, n, op, prefix, items)
            if n >= self._max_candidates:
                break
            n = min(self._max_candidates, n * 4)
        return ranked, exhausted

    def _with_unreached(
        self,
        query_vector: list[float],
        clauses: list[dict[str, Any]],
        op: SearchOp,
        prefix: tuple[str, ...],
        ranked: list[tuple[Item, float]],
    ) -> list[tuple[Item, float]]:
        """``ranked`` with the in-scope items that have vectors but that a query reading every
        vector in scope did not return, scored exactly from their stored vectors.

        Chroma's HNSW index can lose live vectors after deletes and upserts (chroma-core/chroma
        #7758, open on 1.5.9: ``get`` returns them, ``query`` never does); a memory taken back
        by an undone import and written again was then never found by meaning. Only a search
        whose query came back short of its page reads this far, so the scope holds fewer vectors
        than the query asked for, and the scan is as small.
        """
        import numpy as np

        seen = {rec.item_id(item.namespace, item.key) for item, _ in ranked}
        where = rec.combine([*clauses, {rec.VECTOR_COUNT: {"$gt": 0}}])
        unreached = [record_id for record_id, _, _ in self._scan(self._items, where) if record_id not in seen]
        if not unreached:
            return ranked
        query = np.asarray(query_vector, dtype=np.float64)
        query /= np.linalg.norm(query) or 1.0
        best: dict[str, float] = {}
        for chunk in _chunks(unreached, self._max_batch):
            got = self._vectors.get(where={rec.ITEM: {"$in": list(chunk)}}, include=["embeddings", "metadatas"])
            for metadata, vector in zip(got["metadatas"], got["embeddings"], strict=True):
                array = np.asarray(vector, dtype=np.float64)
                similarity = float(array @ query / (np.linalg.norm(array) or 1.0))
                owner = str(metadata[rec.ITEM])
                best[owner] = max(best.get(owner, -1.0), similarity)
        found = self._fetch_items(list(best))
        ranked = ranked + [
            (item, score)
            for record_id, score in best.items()
            if (item := found.get(record_id)) is not None
            and item.namespace[: len(prefix)] == prefix
            and matches(item.value, op.filter)
        ]
        return sorted(ranked, key=lambda pair: pair[1], reverse=True)

    def _rank(
        self,
        query_vector: list[float],
        where: dict[str, Any] | None,
        n: int,
        op: SearchOp,
        prefix: tuple[str, ...],
        items: dict[str, Item | None],
    ) -> tuple[list[tuple[Item, float]], bool]:
        """The in-scope items passing the filter among the n nearest vectors, nearest first, as
        many as the page needs; and whether the n were all there is.

        The query returns distances only and items are fetched in rank order, a page at a time:
        Chroma reading the metadata of every candidate cost more than the search itself (10 vs
        3 ms for 100 candidates at 100k vectors, measured), and in one user's scope the first
        page of candidates is usually the page.
        """
        got = self._vectors.query(query_embeddings=[query_vector], n_results=n, where=where, include=["distances"])
        vector_ids = (got["ids"] or [[]])[0]
        distances = (got["distances"] or [[]])[0]
        best: dict[str, float] = {}
        for vector_id, distance in zip(vector_ids, distances, strict=True):
            best.setdefault(rec.item_of_vector(vector_id), float(distance))
        want = op.offset + op.limit
        order = list(best)
        ranked: list[tuple[Item, float]] = []
        start, size = 0, want
        while start < len(order) and len(ranked) < want:
            chunk = order[start : start + size]
            start, size = start + len(chunk), 2 * size
            missing = [i for i in chunk if i not in items]
            fetched = self._fetch_items(missing)
            items.update({i: fetched.get(i) for i in missing})
            ranked += [
                (item, 1.0 - best[record_id])
                for record_id in chunk
                if (item := items[record_id]) is not None
                and item.namespace[: len(prefix)] == prefix
                and matches(item.value, op.filter)
            ]
        return ranked, len(vector_ids) < n

    # --- namespaces ---------------------------------------------------------------------

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        namespaces = [rec.namespace_of(metadata) for _, metadata, _ in self._scan(self._namespaces, None)]
        for condition in op.match_conditions or ():
            namespaces = [ns for ns in namespaces if namespace_matches(ns, condition.match_type, tuple(condition.path))]
        if op.max_depth is not None:
            namespaces = [ns[: op.max_depth] for ns in namespaces]
        return sorted(set(namespaces))[op.offset : op.offset + op.limit]

    def _register(self, namespaces: Iterable[tuple[str, ...]]) -> None:
        """Make sure the namespaces are listed; called before their items are written, so an
        item is never in a namespace that listing does not show (a killed write at worst lists
        a namespace that holds nothing). Writes run under the store's mutex and no other process
        writes its directory, so no emptying of the namespace can come in between.

        Reading first spares a write (each costs a disk sync) for namespaces already listed.
        """
        rows = {rec.namespace_id(ns): rec.namespace_metadata(ns) for ns in namespaces}
        for chunk in _chunks(list(rows), self._max_batch):
            for listed in self._namespaces.get(ids=list(chunk), include=[])["ids"]:
                rows.pop(listed, None)
        for chunk in _chunks(list(rows.items()), self._max_batch):
            self._namespaces.upsert(
                ids=[i for i, _ in chunk],
                embeddings=[rec.placeholder_embedding(i) for i, _ in chunk],
                metadatas=[m for _, m in chunk],
            )

    def _unregister_if_empty(self, namespaces: Iterable[tuple[str, ...]]) -> None:
        """Drop emptied namespaces from the registry; re-check so a concurrent put is never hidden."""
        for ns in namespaces:
            if self._has_items(ns):
                continue
            self._namespaces.delete(ids=[rec.namespace_id(ns)])
            if self._has_items(ns):
                self._register([ns])

    def _has_items(self, namespace: tuple[str, ...]) -> bool:
        got = self._items.get(where={rec.NAMESPACE: ".".join(namespace)}, limit=1, include=[])
        return bool(got["ids"])

    # --- writes -------------------------------------------------------------------------

    def _apply_puts(
        self,
        plan: _Plan,
        text_vectors: Mapping[str, list[float]],
        existing: Mapping[str, Mapping[str, Any]] | None = None,
        stale: Sequence[str] | None = None,
    ) -> None:
        """Write the plan's puts; ``existing`` (the items' stored metadata by id) and ``stale``
        (the ids of the vectors now pointing at the items written) when the caller has just
        read them."""
        now = rec.now_iso()
        generation = rec.new_generation()  # new vector ids: none is ever added again after a delete
        ids = {ref: rec.item_id(*ref) for ref in plan.puts}
        if existing is None:
            existing = self._existing_metadata(list(ids.values()))
        if stale is None:
            stale = self._vectors_of([ids[ref] for ref, op in plan.puts.items() if op.value is not None])
        by_item = self._vectors_by_item(plan, text_vectors)

        item_rows: list[tuple[str, str, dict[str, Any]]] = []
        vector_rows: list[tuple[str, list[float], dict[str, Any]]] = []
        deleted: list[str] = []
        written: set[tuple[str, ...]] = set()
        emptied: set[tuple[str, ...]] = set()
        for (namespace, key), op in plan.puts.items():
            record_id = ids[(namespace, key)]
            if op.value is None:
                if record_id in existing:
                    deleted.append(record_id)
                    emptied.add(namespace)
                continue
            value = dict(op.value)
            scalars = scalar_metadata(value)
            place = {**rec.namespace_metadata(namespace), rec.KEY: key}
            item_vectors = by_item.get((namespace, key), [])
            previous = existing.get(record_id)
            item_rows.append(
                (
                    record_id,
                    json.dumps(value, ensure_ascii=False),
                    {
                        **place,
                        **scalars,
                        rec.CREATED_AT: str(previous[rec.CREATED_AT]) if previous else now,
                        rec.UPDATED_AT: now,
                        rec.VECTOR_COUNT: len(item_vectors),
                    },
                )
            )
            placed = {**scalars, **rec.vector_metadata(namespace, record_id)}
            for j, (_, vector) in enumerate(item_vectors):
                vector_rows.append((rec.vector_id(record_id, j, generation), vector, dict(placed)))
            written.add(namespace)

        # Each Chroma call is atomic, but a batch is several: ordered so that a process killed
        # between any two leaves no item that search cannot find. An item is visible only once
        # its row is written, so its namespace is listed and its vectors are in place before
        # that row; vectors without a row (a killed batch's, or a deleted item's) match nothing
        # and are deleted when the key is written again. (Rows first, the soak in
        # benchmarks/soak.py found imports killed after them with every vector missing.) An
        # item's old vectors (``stale``) go once its new row is written.
        self._register(written)
        for chunk in _chunks(vector_rows, self._max_batch):
            self._vectors.upsert(
                ids=[i for i, _, _ in chunk], embeddings=[v for _, v, _ in chunk], metadatas=[m for _, _, m in chunk]
            )
        for chunk in _chunks(deleted, self._max_batch):
            self._items.delete(ids=chunk)
        for chunk in _chunks(item_rows, self._max_batch):
            self._items.upsert(
                ids=[i for i, _, _ in chunk],
                embeddings=[rec.placeholder_embedding(i) for i, _, _ in chunk],
                documents=[d for _, d, _ in chunk],
                metadatas=[m for _, _, m in chunk],
            )
        for chunk in _chunks(list(stale), self._max_batch):
            self._vectors.delete(ids=list(chunk))
        gone = [i for i in deleted if int(existing[i].get(rec.VECTOR_COUNT) or 0) > 0]
        for chunk in _chunks(gone, self._max_batch):
            self._vectors.delete(where={rec.ITEM: {"$in": list(chunk)}})
        self._unregister_if_empty(emptied - written)
        if self._journal is not None:
            self._journal.record(plan.puts)

    def _vectors_of(self, items: Sequence[str]) -> list[str]:
        """The ids of the vectors pointing at ``items``: their own, and any a killed write left."""
        found: list[str] = []
        for chunk in _chunks(list(dict.fromkeys(items)), self._max_batch):
            found += self._vectors.get(where={rec.ITEM: {"$in": list(chunk)}}, include=[])["ids"]
        return found

    def _existing_metadata(self, ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        existing: dict[str, Mapping[str, Any]] = {}
        for chunk in _chunks(list(ids), self._max_batch):
            got = self._items.get(ids=chunk, include=["metadatas"])
            existing.update(zip(got["ids"], got["metadatas"], strict=True))
        return existing

    def _vectors_by_item(
        self, plan: _Plan, text_vectors: Mapping[str, list[float]]
    ) -> dict[ItemRef, list[tuple[str, list[float]]]]:
        dims = int(self.index_config["dims"]) if self.index_config else None
        by_item: dict[ItemRef, list[tuple[str, list[float]]]] = defaultdict(list)
        for text, refs in plan.texts.items():
            vector = text_vectors[text]
            if not (isinstance(vector, list) and all(type(x) is float for x in vector)):
                vector = [float(x) for x in vector]  # e.g. numpy floats from another embedder
            if dims is not None and len(vector) != dims:
                raise EmbeddingDimsMismatchError(
                    f"the embedder made a {len(vector)}-dim vector but the memory index is configured for {dims}"
                )
            if not any(vector):
                continue  # a zero vector has no direction: cosine distance is undefined
            for namespace, key, path in refs:
                by_item[(namespace, key)].append((path, vector))
        return by_item


RESTORE_EXPORT = Hint(cli="agentmm memory import FILE restores an export")


def _forget_unopened_system(path: str) -> None:
    """Drop the System chromadb cached for ``path`` when no ``PersistentClient`` came of it.

    chromadb keeps one System per directory and caches it before starting it; a start that
    fails (a damaged ``chroma.sqlite3``) leaves it cached, half started, so the next open of
    that path in this process (the server, the REPL retrying) got
    ``'RustBindingsAPI' object has no attribute 'bindings'`` instead of ``StoreDamagedError``.
    Only that path's entry goes (``clear_system_cache`` would drop every open store's), and
    only while no client holds it; ``_release_system`` is chromadb's own undo for a client
    that failed to open. Stopping the half-started System may fail on what never started.
    """
    with contextlib.suppress(Exception):
        from chromadb.api.shared_system_client import SharedSystemClient

        if path not in SharedSystemClient._identifier_to_refcount:
            SharedSystemClient._release_system(path)


def _damaged(directory: Path, exc: BaseException) -> str:
    """One line for a store whose database will not open: what SQLite said, and what to do."""
    said = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return (f"the memory store in {directory} is damaged and cannot be opened ({said}); move that folder away "
            "to start an empty one, or put back a copy")  # fmt: skip


def _tune_hnsw(collection: Collection, wanted: Mapping[str, int]) -> None:
    """A collection made earlier (or by an older agentmm) keeps its own HNSW settings; bring
    the ones Chroma lets change after creation to what this store asks for."""
    with warnings.catch_warnings():
        # Chroma calls a collection made with embedding_function=None "legacy"; nothing to act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        hnsw = (collection.configuration or {}).get("hnsw") or {}
    changed = {key: value for key, value in wanted.items() if hnsw.get(key) != value}
    if changed:
        with contextlib.suppress(Exception):  # a server that refuses keeps working, only slower
            collection.modify(configuration={"hnsw": changed})  # type: ignore[typeddict-item]


def _search_item(item: Item, score: float | None) -> SearchItem:
    return SearchItem(
        namespace=item.namespace,
        key=item.key,
        value=item.value,
        created_at=item.created_at,
        updated_at=item.updated_at,
        score=score,
    )


def _chunks(rows: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
