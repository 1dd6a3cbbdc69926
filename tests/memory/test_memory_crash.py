"""A write batch cut short between its Chroma calls (a process killed mid-batch) leaves no item
that listing or search cannot see.

Each Chroma call is atomic and nothing undoes the calls made before a kill, so the store a
killed batch leaves is the one a batch leaves when its N-th write raises: the client below (a
real ``PersistentClient`` behind the store's own client seam) raises there, and the store is
then reopened and checked. ``benchmarks/soak.py`` found the real case: ``memory import`` killed
after the item rows were written left every imported memory without its vector.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from langgraph.store.base import PutOp

from agentmm.memory.chroma_store import ChromaStore
from tests.memory.conftest import CharacterEmbeddings

WRITES = ("add", "upsert", "update", "delete")
OLD = ("memories", "ada", "nora")
NEW = ("memories", "ada", "brand-new")


class Killed(Exception):
    """Stands in for SIGKILL: raised by the write that would not happen."""


class _Collection:
    def __init__(self, inner: Any, budget: list[int]) -> None:
        self._inner = inner
        self._budget = budget

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in WRITES:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            if self._budget[0] == 0:
                raise Killed(name)
            self._budget[0] -= 1
            return attr(*args, **kwargs)

        return write


class DyingClient:
    """A Chroma client whose collections allow ``writes`` writes, then fail as if killed."""

    def __init__(self, inner: Any, writes: int) -> None:
        self._inner = inner
        self._budget = [writes]

    def get_or_create_collection(self, *args: Any, **kwargs: Any) -> _Collection:
        return _Collection(self._inner.get_or_create_collection(*args, **kwargs), self._budget)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def index(embeddings: CharacterEmbeddings) -> dict[str, Any]:
    return {"dims": embeddings.dims, "embed": embeddings, "fields": ["text"]}


def batch() -> list[PutOp]:
    """New items in a new namespace, one changed item, one deleted: every kind of write."""
    return [
        *(PutOp(NEW, f"n{i}", {"text": f"brand new memory number {i} about boats"}) for i in range(3)),
        PutOp(OLD, "k0", {"text": "changed memory about a red bicycle"}),
        PutOp(OLD, "k1", None),
    ]


@pytest.mark.parametrize("writes", range(8))
def test_a_batch_killed_after_any_write_leaves_every_item_listed_and_searchable(tmp_path: Path, writes: int) -> None:
    import chromadb
    from chromadb.config import Settings

    path = tmp_path / "store"
    embeddings = CharacterEmbeddings(dims=64)
    with ChromaStore.from_path(path, index=index(embeddings)) as store:
        store.batch([PutOp(OLD, f"k{i}", {"text": f"old memory {i} of the harbour"}) for i in range(3)])

    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    try:
        dying = ChromaStore(DyingClient(client, writes), index=index(embeddings))  # type: ignore[arg-type]
        with contextlib.suppress(Killed):
            dying.batch(batch())
    finally:
        client.close()

    with ChromaStore.from_path(path, index=index(embeddings)) as store:
        items = store.search(("memories",), limit=100)  # every item, listed namespace or not
        listed = set(store.list_namespaces(prefix=("memories",)))
        for item in items:
            found = store.search(item.namespace, query=item.value["text"], limit=100)
            scored = {hit.key for hit in found if hit.score is not None}
            assert item.key in scored, f"{item.key} has no vector: a query never finds it by meaning"
            assert item.namespace in listed, f"{item.key} is in a namespace listing does not show"
        keys = {item.key for item in items}
        assert {"k0", "k2"} <= keys  # what the batch did not touch, or only changed, is still there


@pytest.mark.parametrize("writes", range(8))
def test_a_batch_killed_after_any_write_leaves_no_item_with_vectors_of_another_text(
    tmp_path: Path, writes: int
) -> None:
    """A write gives an item's texts new vector ids and deletes the old ones after the new row:
    killed in between, the old text's vectors would still find the item. Such a batch is made
    whole or not at all: each item ends with exactly the vectors of its own text."""
    import chromadb
    from chromadb.config import Settings

    from agentmm.memory import _records as rec
    from agentmm.memory._lock import DirectoryLock

    path = tmp_path / "store"
    embeddings = CharacterEmbeddings(dims=64)
    with ChromaStore.from_path(path, index=index(embeddings)) as store:
        store.batch([PutOp(OLD, f"k{i}", {"text": f"old memory {i} of the harbour"}) for i in range(3)])

    lock = DirectoryLock(path)  # an embedded store's: what a write must take back is logged in its folder
    lock.acquire()
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    try:
        dying = ChromaStore(DyingClient(client, writes), index=index(embeddings), dir_lock=lock)  # type: ignore[arg-type]
        with contextlib.suppress(Killed):
            dying.batch(batch())
    finally:
        client.close()
        lock.release()

    with ChromaStore.from_path(path, index=index(embeddings)) as store:
        for item in store.search(("memories",), limit=100):
            owner = store.record_id(item.namespace, item.key)
            got = store._vectors.get(where={rec.ITEM: owner}, include=["embeddings"])
            assert len(got["ids"]) == 1, f"{item.key} has {len(got['ids'])} vectors"
            assert list(got["embeddings"][0]) == pytest.approx(embeddings.embed_query(item.value["text"]), abs=1e-6)
