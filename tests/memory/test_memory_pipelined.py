"""A write batch with many texts is embedded chunk by chunk while earlier chunks are written,
and still leaves the store as it was when it fails part way."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from langgraph.store.base import GetOp, PutOp

from agentmm.memory import chroma_store
from agentmm.memory.chroma_store import ChromaStore

CHUNK = 4


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chroma_store, "PIPELINE_CHUNK", CHUNK)


def puts(n: int, namespace: tuple[str, ...] = ("docs",), prefix: str = "k") -> list[PutOp]:
    return [PutOp(namespace, f"{prefix}{i}", {"text": f"note number {i} about {prefix}"}) for i in range(n)]


def test_many_puts_are_written_in_chunks_and_searchable(
    tmp_path: Path, embeddings_cls: Any, make_vector_store: Any
) -> None:
    calls: list[int] = []

    class Counting(embeddings_cls):  # type: ignore[misc,valid-type]
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            calls.append(len(texts))
            return super().embed_documents(texts)

    with make_vector_store(tmp_path / "s", Counting(32), ["text"]) as store:
        store.put(("docs",), "k0", {"text": "old"})
        calls.clear()
        results = store.batch([GetOp(("docs",), "k0"), *puts(11)])
        assert results[0].value == {"text": "old"}  # reads see the store before the batch
        assert calls == [4, 4, 3]
        assert len(store.search(("docs",), limit=20)) == 11
        assert store.search(("docs",), query="note number 7 about k", limit=1)[0].key == "k7"


def test_next_chunk_embeds_while_the_last_is_written(
    tmp_path: Path, embeddings_cls: Any, make_vector_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    writing = threading.Event()
    overlapped: list[bool] = []

    class Waiting(embeddings_cls):  # type: ignore[misc,valid-type]
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            if "note number 4 about k" in texts:
                overlapped.append(writing.wait(timeout=10))  # chunk 2 waits for chunk 1's write
            return super().embed_documents(texts)

    original = ChromaStore._apply_puts

    def slow_apply(self: ChromaStore, plan: Any, vectors: Any, **kwargs: Any) -> None:
        writing.set()
        original(self, plan, vectors, **kwargs)

    monkeypatch.setattr(ChromaStore, "_apply_puts", slow_apply)
    with make_vector_store(tmp_path / "s", Waiting(32), ["text"]) as store:
        store.batch(puts(8))
        assert overlapped == [True]
        assert len(store.search(("docs",), limit=20)) == 8


def test_failure_part_way_leaves_the_store_as_it_was(
    tmp_path: Path, embeddings_cls: Any, make_vector_store: Any
) -> None:
    class FailingThird(embeddings_cls):  # type: ignore[misc,valid-type]
        armed = False
        calls = 0

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            if self.armed:
                self.calls += 1
                if self.calls == 3:
                    raise RuntimeError("embedder down")
            return super().embed_documents(texts)

    embedder = FailingThird(32)
    with make_vector_store(tmp_path / "s", embedder, ["text"]) as store:
        store.put(("docs",), "k1", {"text": "the original second note"})
        before = store.search(("docs",), query="the original second note", limit=1)[0]
        embedder.armed = True
        with pytest.raises(RuntimeError, match="embedder down"):
            store.batch([*puts(12), *puts(2, namespace=("fresh",))])
        embedder.armed = False
        assert [i.key for i in store.search(("docs",), limit=20)] == ["k1"]
        assert store.get(("docs",), "k1").value == {"text": "the original second note"}
        after = store.search(("docs",), query="the original second note", limit=1)[0]
        assert after.key == "k1" and after.score == pytest.approx(before.score, abs=1e-6)
        assert after.created_at == before.created_at
        assert store.list_namespaces() == [("docs",)]
        # The store takes the same batch once the embedder is back.
        store.batch(puts(12))
        assert len(store.search(("docs",), limit=20)) == 12


def test_unstorable_value_in_a_late_chunk_writes_nothing(tmp_path: Path, embeddings_cls: Any) -> None:
    embedder = embeddings_cls(32)
    index = {"dims": 32, "embed": embedder, "fields": ["text"]}
    with ChromaStore.from_path(tmp_path / "s", index=index) as store:  # type: ignore[arg-type]
        bad = PutOp(("docs",), "bad", {"text": "last", "v": object()})
        with pytest.raises(TypeError):
            store.batch([*puts(10), bad])
        assert store.search(("docs",), limit=20) == []
        assert store.list_namespaces() == []


def test_async_batch_takes_the_same_path(tmp_path: Path, embeddings_cls: Any, make_vector_store: Any) -> None:
    with make_vector_store(tmp_path / "s", embeddings_cls(32), ["text"]) as store:
        asyncio.run(store.abatch(puts(9)))
        assert len(store.search(("docs",), limit=20)) == 9
