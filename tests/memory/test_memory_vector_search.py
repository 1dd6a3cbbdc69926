"""Semantic search through ChromaStore, mirroring LangGraph's vector-store tests with a fake embedder."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langgraph.store.base import PutOp, SearchOp

from agentmm.memory import EmbeddingDimsMismatchError
from agentmm.memory.chroma_store import ChromaStore

MakeStore = Callable[[Path, Any, "list[str] | None"], ChromaStore]


def test_vector_insert_with_auto_embedding(tmp_path: Path, fake_embeddings: Any, make_vector_store: MakeStore) -> None:
    with make_vector_store(tmp_path / "s", fake_embeddings, fields=None) as store:
        docs = [
            ("doc1", {"text": "short text"}),
            ("doc2", {"text": "longer text document"}),
            ("doc3", {"text": "longest text document here"}),
            ("doc4", {"description": "text in description field"}),
            ("doc5", {"content": "text in content field"}),
            ("doc6", {"body": "text in body field"}),
        ]
        for key, value in docs:
            store.put(("test",), key, value)
        results = store.search(("test",), query="long text")
        assert {"doc2", "doc3"} <= {r.key for r in results}
        assert all(r.score is not None for r in results)


@pytest.mark.asyncio
async def test_async_vector_insert_with_auto_embedding(vector_store: ChromaStore) -> None:
    for key, text in [("doc1", "short text"), ("doc2", "longer text document"), ("doc3", "longest text document")]:
        await vector_store.aput(("test",), key, {"text": text})
    results = await vector_store.asearch(("test",), query="long text")
    assert {"doc2", "doc3"} <= {r.key for r in results}


def test_vector_update_with_embedding(vector_store: ChromaStore) -> None:
    store = vector_store
    store.put(("test",), "doc1", {"text": "zany zebra Xerxes"})
    store.put(("test",), "doc2", {"text": "something about dogs"})
    store.put(("test",), "doc3", {"text": "text about birds"})
    initial = store.search(("test",), query="Zany Xerxes")
    assert initial[0].key == "doc1"
    initial_score = initial[0].score

    store.put(("test",), "doc1", {"text": "new text about dogs"})
    after = store.search(("test",), query="Zany Xerxes")
    after_score = next(r.score for r in after if r.key == "doc1")
    assert after_score < initial_score
    for r in store.search(("test",), query="new text about dogs"):
        if r.key == "doc1":
            assert r.score > after_score

    store.put(("test",), "doc4", {"text": "new text about dogs"}, index=False)
    assert not any(r.key == "doc4" for r in store.search(("test",), query="new text about dogs", limit=3))
    # Unindexed items still come after the ranked ones, unscored.
    tail = store.search(("test",), query="new text about dogs", limit=10)
    assert [r.key for r in tail][-1] == "doc4" and tail[-1].score is None


def test_vector_search_with_filters(vector_store: ChromaStore) -> None:
    docs = [
        ("doc1", {"text": "red apple", "color": "red", "score": 4.5}),
        ("doc2", {"text": "red car", "color": "red", "score": 3.0}),
        ("doc3", {"text": "green apple", "color": "green", "score": 4.0}),
        ("doc4", {"text": "blue car", "color": "blue", "score": 3.5}),
    ]
    for key, value in docs:
        vector_store.put(("test",), key, value)
    results = vector_store.search(("test",), query="apple", filter={"color": "red"})
    assert results[0].key == "doc1" and len(results) == 2
    results = vector_store.search(("test",), query="car", filter={"color": "red"})
    assert results[0].key == "doc2" and len(results) == 2
    results = vector_store.search(("test",), query="bbbbluuu", filter={"score": {"$gt": 3.2}})
    assert results[0].key == "doc4" and len(results) == 3
    results = vector_store.search(("test",), query="apple", filter={"score": {"$gte": 4.0}, "color": "green"})
    assert [r.key for r in results] == ["doc3"]


def test_vector_search_filter_deeper_than_first_page(vector_store: ChromaStore) -> None:
    """A filter only Python can check (a nested field) must still fill the page from deep ranks."""
    vector_store.batch(
        [PutOp(("t",), f"d{i}", {"text": f"apple pie number {i}", "meta": {"keep": i % 25 == 0}}) for i in range(100)]
    )
    results = vector_store.search(("t",), query="apple pie", filter={"meta": {"keep": True}}, limit=4)
    assert sorted(r.key for r in results) == ["d0", "d25", "d50", "d75"]


@pytest.mark.asyncio
async def test_async_batched_vector_search_concurrent(vector_store: ChromaStore) -> None:
    colors = ["red", "blue", "green", "yellow", "purple"]
    things = ["apple", "car", "house", "book", "phone"]
    scores = [3.0, 3.5, 4.0, 4.5, 5.0]
    docs = [
        (
            f"doc{i}",
            {"text": f"{colors[i % 5]} {things[i % 5]}", "color": colors[i % 5], "score": scores[i % 5], "i": i},
        )
        for i in range(50)
    ]
    await asyncio.gather(
        *[vector_store.aput(("test",), k, v) for k, v in docs],
        *[vector_store.adelete(("test",), k) for k, _ in docs],
        *[vector_store.aput(("test",), k, v) for k, v in docs],
    )
    queries: list[tuple[str, dict[str, Any]]] = [
        ("apple", {"color": "red"}),
        ("car", {"color": "blue"}),
        ("phone", {"score": {"$gt": 4.99}}),
        ("book", {"score": {"$lte": 3.5}}),
        ("apple", {"score": {"$gte": 3.0}, "color": "red"}),
        ("house", {"i": {"$gt": 25}}),
        ("phone", {"i": {"$lte": 10}}),
    ]
    all_results = await asyncio.gather(*(vector_store.asearch(("test",), query=q, filter=f) for q, f in queries))
    for results, (query, flt) in zip(all_results, queries, strict=True):
        assert results, f"no results for {query!r} with {flt}"
        for r in results:
            if "color" in flt:
                assert r.value["color"] == flt["color"]
            for field in ("score", "i"):
                for op, bound in flt.get(field, {}).items():
                    v = r.value[field]
                    assert {"$gt": v > bound, "$gte": v >= bound, "$lt": v < bound, "$lte": v <= bound}[op]


def test_vector_search_pagination(vector_store: ChromaStore) -> None:
    for i in range(5):
        vector_store.put(("test",), f"doc{i}", {"text": f"test document number {i}"})
    page1 = vector_store.search(("test",), query="test", limit=2)
    page2 = vector_store.search(("test",), query="test", limit=2, offset=2)
    assert len(page1) == 2 and len(page2) == 2
    assert not {r.key for r in page1} & {r.key for r in page2}
    everything = vector_store.search(("test",), query="test", limit=10)
    assert len(everything) == 5
    assert [r.key for r in everything[:4]] == [r.key for r in page1 + page2]
    assert [r.score for r in everything] == sorted((r.score for r in everything), reverse=True)


def test_vector_search_edge_cases(vector_store: ChromaStore) -> None:
    vector_store.put(("test",), "doc1", {"text": "test document"})
    assert len(vector_store.search(("test",), query="")) == 1
    assert len(vector_store.search(("test",), query=None)) == 1
    assert len(vector_store.search(("test",), query="test " * 100)) == 1
    assert len(vector_store.search(("test",), query="test!@#$%^&*()")) == 1
    assert vector_store.search(("elsewhere",), query="test") == []


def test_embed_with_path(tmp_path: Path, fake_embeddings: Any, make_vector_store: MakeStore) -> None:
    with make_vector_store(tmp_path / "s", fake_embeddings, fields=["key0", "key1", "key3"]) as store:
        store.put(("test",), "doc1", {"key1": "xxx", "key2": "yyy", "key3": "zzz"})
        store.put(("test",), "doc2", {"key0": "uuu", "key1": "vvv", "key2": "www", "key3": "xxx"})
        results = store.search(("test",), query="xxx")
        assert len(results) == 2 and results[0].key != results[1].key
        ascore = results[0].score
        assert ascore == pytest.approx(results[1].score, abs=1e-3)

        results = store.search(("test",), query="uuu")
        assert results[0].key == "doc2" and results[0].score > results[1].score
        assert results[0].score == pytest.approx(ascore, abs=1e-3)

        results = store.search(("test",), query="zzz")
        assert results[0].key == "doc1" and results[0].score > results[1].score

        results = store.search(("test",), query="www")  # key2 is not indexed
        assert len(results) == 2 and all(r.score < ascore for r in results)


def test_embed_with_path_operation_config(tmp_path: Path, fake_embeddings: Any, make_vector_store: MakeStore) -> None:
    with make_vector_store(tmp_path / "s", fake_embeddings, fields=["key17"]) as store:
        store.put(
            ("test",), "doc3", {"key0": "aaa", "key1": "bbb", "key2": "ccc", "key3": "ddd"}, index=["key0", "key1"]
        )
        store.put(
            ("test",), "doc4", {"key0": "eee", "key1": "bbb", "key2": "fff", "key3": "ggg"}, index=["key1", "key3"]
        )
        results = store.search(("test",), query="aaa")
        assert len(results) == 2 and results[0].key == "doc3" and results[0].score > results[1].score
        results = store.search(("test",), query="ggg")
        assert len(results) == 2 and results[0].key == "doc4" and results[0].score > results[1].score
        results = store.search(("test",), query="bbb")
        assert results[0].score == pytest.approx(results[1].score, abs=1e-3)
        assert all(r.score < 0.9 for r in store.search(("test",), query="ccc"))

        store.put(("test",), "doc5", {"key0": "hhh", "key1": "iii"}, index=False)
        results = store.search(("test",))
        assert len(results) == 3 and all(r.score is None for r in results)
        assert any(r.key == "doc5" for r in results)
        assert [r.key for r in store.search(("test",), query="hhh")][-1] == "doc5"


def test_array_paths_embed_each_element(tmp_path: Path, fake_embeddings: Any, make_vector_store: MakeStore) -> None:
    with make_vector_store(tmp_path / "s", fake_embeddings, fields=["notes[*].text"]) as store:
        store.put(("t",), "many", {"notes": [{"text": "qqqq"}, {"text": "zzzz"}]})
        store.put(("t",), "one", {"notes": [{"text": "mmmm"}]})
        assert store.search(("t",), query="zzzz")[0].key == "many"
        assert store.search(("t",), query="qqqq")[0].key == "many"
        assert store.search(("t",), query="mmmm")[0].key == "one"


@pytest.mark.parametrize("query", ["aaa", "abcd", "poisson"])
def test_scores_are_cosine_similarity(
    tmp_path: Path, fake_embeddings: Any, make_vector_store: MakeStore, query: str
) -> None:
    with make_vector_store(tmp_path / "s", fake_embeddings, fields=["key0"]) as store:
        store.put(("test",), "doc", {"key0": "aaa"}, index=["key0", "key1"])
        results = store.search((), query=query)
        a, b = fake_embeddings.embed_query("aaa"), fake_embeddings.embed_query(query)
        cosine = sum(x * y for x, y in zip(a, b, strict=True)) / (
            math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        )
        assert len(results) == 1
        assert results[0].score == pytest.approx(cosine, abs=1e-3)


def test_batch_searches_embed_each_query_once(
    tmp_path: Path, fake_embeddings: Any, make_vector_store: MakeStore
) -> None:
    calls: list[str] = []

    class Counting(type(fake_embeddings)):  # type: ignore[misc]
        def embed_query(self, text: str) -> list[float]:
            calls.append(text)
            return super().embed_query(text)

    embedder = Counting(fake_embeddings.dims)
    with make_vector_store(tmp_path / "s", embedder, fields=["text"]) as store:
        store.put(("t",), "k", {"text": "hello"})
        store.batch([SearchOp(("t",), query="hello"), SearchOp(("t",), query="hello", limit=1)])
    assert calls == ["hello"]


def test_failed_embedding_leaves_store_untouched(
    tmp_path: Path, fake_embeddings: Any, make_vector_store: MakeStore
) -> None:
    class Failing(type(fake_embeddings)):  # type: ignore[misc]
        fail = False

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            if self.fail:
                raise RuntimeError("embedder down")
            return super().embed_documents(texts)

    embedder = Failing(fake_embeddings.dims)
    with make_vector_store(tmp_path / "s", embedder, fields=["text"]) as store:
        store.put(("t",), "k", {"text": "before"})
        embedder.fail = True
        with pytest.raises(RuntimeError):
            store.put(("t",), "k", {"text": "after"})
        assert store.get(("t",), "k").value == {"text": "before"}
        embedder.fail = False
        assert store.search(("t",), query="before")[0].score == pytest.approx(1.0, abs=1e-3)


def test_other_embedding_width_is_refused(tmp_path: Path, fake_embeddings: Any, make_vector_store: MakeStore) -> None:
    with make_vector_store(tmp_path / "s", fake_embeddings, fields=["text"]) as store:
        store.put(("t",), "k", {"text": "hello"})
    with pytest.raises(EmbeddingDimsMismatchError, match="64-dim"):
        make_vector_store(tmp_path / "s", type(fake_embeddings)(dims=32), fields=["text"])
    # The refused open released the directory: the right width opens again.
    with make_vector_store(tmp_path / "s", fake_embeddings, fields=["text"]) as store:
        assert store.search(("t",), query="hello")[0].key == "k"


def test_vectors_survive_reopen_without_reembedding(
    tmp_path: Path, fake_embeddings: Any, make_vector_store: MakeStore
) -> None:
    with make_vector_store(tmp_path / "s", fake_embeddings, fields=["text"]) as store:
        store.put(("t",), "k", {"text": "persistent memory"})
    with make_vector_store(tmp_path / "s", fake_embeddings, fields=["text"]) as store:
        hit = store.search(("t",), query="persistent memory")[0]
        assert hit.key == "k" and hit.score == pytest.approx(1.0, abs=1e-3)


class _LosesVectors:
    """A Chroma vectors collection whose ``query`` never returns the vectors of ``lost`` items,
    as Chroma's HNSW index did after deletes and upserts (chroma-core/chroma#7758: a memory
    taken back by an undone import and written again was not found by meaning)."""

    def __init__(self, collection: Any, lost: set[str]) -> None:
        self._collection, self._lost = collection, lost

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def query(self, **kwargs: Any) -> Any:
        got = self._collection.query(**kwargs)
        found = zip(got["ids"][0], got["distances"][0], strict=True)
        pairs = [(i, d) for i, d in found if i.split(":")[0] not in self._lost]
        return {**got, "ids": [[i for i, _ in pairs]], "distances": [[d for _, d in pairs]]}


def test_a_vector_the_index_lost_is_still_found_and_scored_exactly(vector_store: ChromaStore) -> None:
    from agentmm.memory import _records as rec

    store = vector_store
    for key, text in [("a", "zany zebra Xerxes"), ("b", "something about dogs"), ("c", "text about birds")]:
        store.put(("test",), key, {"text": text})
    whole = {r.key: r.score for r in store.search(("test",), query="dogs", limit=10)}
    store._vectors = _LosesVectors(store._vectors, {rec.item_id(("test",), "b")})
    found = store.search(("test",), query="dogs", limit=10)
    assert [r.key for r in found] == sorted(whole, key=lambda k: whole[k] or 0, reverse=True)
    assert {r.key: r.score for r in found} == pytest.approx(whole)


def _vector_ids(store: ChromaStore) -> set[str]:
    return set(store._vectors.get(include=[])["ids"])


def test_no_vector_id_is_used_again_after_a_delete(vector_store: ChromaStore) -> None:
    """Chroma's HNSW index can lose a live vector whose id was deleted and added again
    (chroma-core/chroma#7758): each write gives an item's texts ids of its own generation."""
    store = vector_store
    store.put(("test",), "a", {"text": "the lighthouse lamp is old"})
    first = _vector_ids(store)
    store.delete(("test",), "a")
    assert _vector_ids(store) == set()
    store.put(("test",), "a", {"text": "the lighthouse lamp is old"})
    second = _vector_ids(store)
    assert len(first) == len(second) == 1 and not first & second
    store.put(("test",), "a", {"text": "the lighthouse lamp is new"})  # an update: new ids, the old ones gone
    third = _vector_ids(store)
    assert len(third) == 1 and not third & (first | second)
    hit = store.search(("test",), query="the lighthouse lamp is new", limit=1)[0]
    assert hit.key == "a" and hit.score == pytest.approx(1.0, abs=1e-3)


def test_a_store_written_before_generations_still_recalls_and_is_rewritten_cleanly(
    tmp_path: Path, fake_embeddings: Any, make_vector_store: MakeStore
) -> None:
    """Vectors of a store written before had ids '<item>:<index>': read alike; the next write of
    their item replaces them with new ones, leaving none of the old."""
    from agentmm.memory import _records as rec

    path = tmp_path / "old"
    with make_vector_store(path, fake_embeddings, ["text"]) as store:
        for key, text in [("a", "zany zebra Xerxes"), ("b", "something about dogs"), ("c", "text about birds")]:
            store.put(("test",), key, {"text": text})
        # Back to the old layout: the same vectors under '<item>:<index>' ids.
        got = store._vectors.get(include=["embeddings", "metadatas"])
        old_ids = [f"{rec.item_of_vector(i)}:0" for i in got["ids"]]
        store._vectors.delete(ids=got["ids"])
        store._vectors.add(ids=old_ids, embeddings=got["embeddings"], metadatas=got["metadatas"])
    with make_vector_store(path, fake_embeddings, ["text"]) as store:
        assert _vector_ids(store) == set(old_ids)
        found = store.search(("test",), query="something about dogs", limit=3)
        assert found[0].key == "b" and found[0].score == pytest.approx(1.0, abs=1e-3)
        assert {hit.key for hit in found if hit.score is not None} == {"a", "b", "c"}
        near, _ = store.nearest_items("something about dogs", 3, ("test",))
        assert near[0] == (rec.item_id(("test",), "b"), pytest.approx(1.0, abs=1e-3))
        store.put(("test",), "b", {"text": "something about cats"})
        ids = _vector_ids(store)
        assert len(ids) == 3 and f"{rec.item_id(('test',), 'b')}:0" not in ids  # the old one replaced
        assert store.search(("test",), query="something about cats", limit=1)[0].key == "b"
        assert store.search(("test",), query="zany zebra Xerxes", limit=1)[0].key == "a"
