"""ChromaStore against the cases LangGraph tests its own stores with (key-value, filters, namespaces).

Mirrors libs/checkpoint/tests/test_store.py and the backend suites (batch order, get/put/search/
list ops), with the behaviour agentmm adds: created_at kept on update, newest-first listing,
persistence across reopen, exact namespace scoping.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    PutOp,
    SearchOp,
)

from agentmm.errors import AgentmmError
from agentmm.memory import InvalidFilterError, chroma_store
from agentmm.memory.chroma_store import ChromaStore


def test_batch_order(store: ChromaStore) -> None:
    store.put(("test", "foo"), "key1", {"data": "value1"})
    store.put(("test", "bar"), "key2", {"data": "value2"})
    results = store.batch(
        [
            GetOp(("test", "foo"), "key1"),
            PutOp(("test", "bar"), "key2", {"data": "value2"}),
            SearchOp(("test",), filter={"data": "value1"}, limit=10, offset=0),
            ListNamespacesOp(match_conditions=None, max_depth=None, limit=10, offset=0),
            GetOp(("test",), "key3"),
        ]
    )
    assert len(results) == 5
    assert isinstance(results[0], Item) and results[0].value == {"data": "value1"}
    assert results[1] is None
    assert [i.key for i in results[2]] == ["key1"]
    assert results[3] == [("test", "bar"), ("test", "foo")]
    assert results[4] is None

    reordered = store.batch(
        [
            SearchOp(("test",), filter=None, limit=5, offset=0),
            GetOp(("test", "bar"), "key2"),
            ListNamespacesOp(match_conditions=None, max_depth=None, limit=5, offset=0),
            PutOp(("test",), "key3", {"data": "value3"}),
            GetOp(("test", "foo"), "key1"),
        ]
    )
    assert len(reordered[0]) == 2
    assert reordered[1].value == {"data": "value2"}
    assert reordered[2] == [("test", "bar"), ("test", "foo")]
    assert reordered[3] is None
    assert reordered[4].value == {"data": "value1"}
    # Reads in a batch see the store before the batch's puts.
    assert store.get(("test",), "key3").value == {"data": "value3"}


def test_batch_get_and_put_ops(store: ChromaStore) -> None:
    results = store.batch(
        [
            PutOp(("test",), "key1", {"data": "value1"}),
            PutOp(("test",), "key2", {"data": "value2"}),
            PutOp(("test",), "key3", None),
        ]
    )
    assert results == [None, None, None]
    got = store.batch([GetOp(("test",), "key1"), GetOp(("test",), "key2"), GetOp(("test",), "key3")])
    assert [g.key if g else None for g in got] == ["key1", "key2", None]


def test_last_put_in_a_batch_wins(store: ChromaStore) -> None:
    store.batch([PutOp(("t",), "k", {"v": 1}), PutOp(("t",), "k", {"v": 2}), PutOp(("t",), "j", {"v": 3})])
    assert store.get(("t",), "k").value == {"v": 2}
    store.batch([PutOp(("t",), "j", None), PutOp(("t",), "j", {"v": 4})])
    assert store.get(("t",), "j").value == {"v": 4}


def test_batch_search_ops(store: ChromaStore) -> None:
    for namespace, key, value in [
        (("test", "foo"), "key1", {"data": "value1", "tag": "a"}),
        (("test", "bar"), "key2", {"data": "value2", "tag": "a"}),
        (("test", "baz"), "key3", {"data": "value3", "tag": "b"}),
    ]:
        store.put(namespace, key, value)
    results = store.batch(
        [
            SearchOp(("test",), filter={"tag": "a"}, limit=10, offset=0),
            SearchOp(("test",), filter=None, limit=2, offset=0),
            SearchOp(("test", "foo"), filter=None, limit=10, offset=0),
        ]
    )
    assert sorted(i.key for i in results[0]) == ["key1", "key2"]
    assert [i.key for i in results[1]] == ["key3", "key2"]  # newest first
    assert [(i.namespace, i.key) for i in results[2]] == [(("test", "foo"), "key1")]


def test_basic_store_ops(store: ChromaStore) -> None:
    namespace = ("test", "documents")
    store.put(namespace, "doc1", {"title": "Test Document", "content": "Hello, World!"})
    item = store.get(namespace, "doc1")
    assert item is not None
    assert (item.namespace, item.key) == (namespace, "doc1")
    assert item.value == {"title": "Test Document", "content": "Hello, World!"}

    store.put(namespace, "doc1", {"title": "Updated Document", "content": "Hello, Updated!"})
    updated = store.get(namespace, "doc1")
    assert updated.value == {"title": "Updated Document", "content": "Hello, Updated!"}
    assert updated.updated_at > item.updated_at
    assert updated.created_at == item.created_at

    assert store.get(("test", "other_documents"), "doc1") is None
    store.delete(namespace, "doc1")
    assert store.get(namespace, "doc1") is None
    store.delete(namespace, "never-there")  # deleting nothing is fine


def test_values_round_trip(store: ChromaStore) -> None:
    value = {
        "text": "ünïcødé ✓ " + "x" * 5000,
        "nested": {"a": [1, 2.5, {"b": None}], "t": True},
        "empty": {},
        "list": [],
        "n": -3,
    }
    store.put(("t",), "weird key/with:chars.and.dots ✓", value)
    got = store.get(("t",), "weird key/with:chars.and.dots ✓")
    assert got.value == value
    assert store.search(("t",))[0].key == "weird key/with:chars.and.dots ✓"


def test_unserialisable_value_leaves_store_untouched(store: ChromaStore) -> None:
    store.put(("t",), "a", {"v": 1})
    with pytest.raises(TypeError):
        store.batch([PutOp(("t",), "a", {"v": 2}), PutOp(("t",), "b", {"v": object()})])
    assert store.get(("t",), "a").value == {"v": 1}
    assert store.get(("t",), "b") is None


def test_search(store: ChromaStore) -> None:
    data = [
        (("test", "docs"), "doc1", {"title": "First Doc", "author": "Alice", "tags": ["important"]}),
        (("test", "docs"), "doc2", {"title": "Second Doc", "author": "Bob", "tags": ["draft"]}),
        (("test", "images"), "img1", {"title": "Image 1", "author": "Alice", "tags": ["final"]}),
    ]
    for namespace, key, value in data:
        store.put(namespace, key, value)
    assert len(store.search(("test",))) == 3
    docs = store.search(("test", "docs"))
    assert sorted(i.key for i in docs) == ["doc1", "doc2"]
    assert all(i.namespace == ("test", "docs") for i in docs)
    alice = store.search(("test",), filter={"author": "Alice"})
    assert sorted(i.key for i in alice) == ["doc1", "img1"]
    assert [i.key for i in store.search(("test",), limit=2)] == ["img1", "doc2"]
    assert [i.key for i in store.search(("test",), offset=2)] == ["doc1"]
    assert all(i.score is None for i in store.search(("test",)))
    assert [i.key for i in store.search(("test",), filter={"tags": ["draft"]})] == ["doc2"]
    assert store.search(("nothing",)) == []


def test_filter_operators(store: ChromaStore) -> None:
    docs = {
        "a": {"color": "red", "score": 4.5, "n": 3, "flag": True, "meta": {"lang": "en", "level": 2}},
        "b": {"color": "red", "score": 3.0, "n": 10, "flag": False, "meta": {"lang": "pt", "level": 5}},
        "c": {"color": "green", "score": 4.0, "n": "3", "meta": {"lang": "en"}},
        "d": {"color": "blue", "score": None},
    }
    for key, value in docs.items():
        store.put(("f",), key, value)

    def keys(flt: dict) -> list[str]:
        return sorted(i.key for i in store.search(("f",), filter=flt))

    assert keys({"color": "red"}) == ["a", "b"]
    assert keys({"color": {"$eq": "red"}}) == ["a", "b"]
    assert keys({"color": {"$ne": "red"}}) == ["c", "d"]
    assert keys({"score": {"$gt": 3.0}}) == ["a", "c"]
    assert keys({"score": {"$gte": 3.0}}) == ["a", "b", "c"]
    assert keys({"score": {"$lt": 4.0}}) == ["b"]
    assert keys({"score": {"$lte": 4.0}}) == ["b", "c"]
    assert keys({"score": {"$gt": 3, "$lt": 4.5}}) == ["c"]
    assert keys({"score": {"$gte": 4.0}, "color": "green"}) == ["c"]
    assert keys({"n": 3}) == ["a"]  # the string "3" is not the number 3
    assert keys({"n": 3.0}) == ["a"]
    assert keys({"n": "3"}) == ["c"]
    assert keys({"flag": True}) == ["a"]
    assert keys({"flag": {"$ne": True}}) == ["b", "c", "d"]
    assert keys({"score": None}) == ["d"]
    assert keys({"missing": {"$ne": 1}}) == ["a", "b", "c", "d"]
    assert keys({"meta": {"lang": "en"}}) == ["a", "c"]
    assert keys({"meta.level": {"$gte": 2}}) == ["a", "b"]
    assert keys({"meta.lang": "pt"}) == ["b"]
    with pytest.raises(InvalidFilterError):
        keys({"score": {"$regex": "x"}})
    with pytest.raises(InvalidFilterError):
        keys({"score": {"$gt": "high"}})
    with pytest.raises(InvalidFilterError, match=r"\$regex"):
        store.search(("empty", "scope"), filter={"meta": {"level": {"$regex": "x"}}})
    assert issubclass(InvalidFilterError, AgentmmError)


def test_list_namespaces_basic(store: ChromaStore) -> None:
    namespaces = [
        ("a", "b", "c"),
        ("a", "b", "d", "e"),
        ("a", "b", "d", "i"),
        ("a", "b", "f"),
        ("a", "c", "f"),
        ("b", "a", "f"),
        ("users", "123"),
        ("users", "456", "settings"),
        ("admin", "users", "789"),
    ]
    store.batch([PutOp(ns, f"id_{i}", {"data": f"value_{i:02d}"}) for i, ns in enumerate(namespaces)])

    assert store.list_namespaces(prefix=("a", "b")) == [
        ("a", "b", "c"),
        ("a", "b", "d", "e"),
        ("a", "b", "d", "i"),
        ("a", "b", "f"),
    ]
    assert store.list_namespaces(suffix=("f",)) == [("a", "b", "f"), ("a", "c", "f"), ("b", "a", "f")]
    assert store.list_namespaces(prefix=("a",), suffix=("f",)) == [("a", "b", "f"), ("a", "c", "f")]
    assert store.list_namespaces(prefix=("a", "b"), max_depth=3) == [("a", "b", "c"), ("a", "b", "d"), ("a", "b", "f")]
    assert store.list_namespaces(prefix=("a", "b"), limit=2) == [("a", "b", "c"), ("a", "b", "d", "e")]
    assert store.list_namespaces(prefix=("a", "b"), offset=2) == [("a", "b", "d", "i"), ("a", "b", "f")]
    assert store.list_namespaces(prefix=("a", "*", "f")) == [("a", "b", "f"), ("a", "c", "f")]
    assert store.list_namespaces(suffix=("*", "f")) == [("a", "b", "f"), ("a", "c", "f"), ("b", "a", "f")]
    assert store.list_namespaces(prefix=("nonexistent",)) == []
    assert store.list_namespaces(prefix=("users", "123")) == [("users", "123")]


def test_list_namespaces_with_wildcards(store: ChromaStore) -> None:
    namespaces = [
        ("users", "123"),
        ("users", "456"),
        ("users", "789", "settings"),
        ("admin", "users", "789"),
        ("guests", "123"),
        ("guests", "456", "preferences"),
    ]
    store.batch([PutOp(ns, f"id_{i}", {"data": i}) for i, ns in enumerate(namespaces)])
    assert store.list_namespaces(prefix=("users", "*")) == [
        ("users", "123"),
        ("users", "456"),
        ("users", "789", "settings"),
    ]
    assert store.list_namespaces(suffix=("*", "preferences")) == [("guests", "456", "preferences")]
    assert store.list_namespaces(prefix=("*", "users"), suffix=("*", "settings")) == []


def test_list_namespaces_pagination_and_depth(store: ChromaStore) -> None:
    store.batch([PutOp(("namespace", f"sub_{i:02d}"), f"id_{i:02d}", {"i": i}) for i in range(20)])
    assert store.list_namespaces(prefix=("namespace",), limit=5) == [("namespace", f"sub_{i:02d}") for i in range(5)]
    assert store.list_namespaces(prefix=("namespace",), limit=5, offset=15) == [
        ("namespace", f"sub_{i:02d}") for i in range(15, 20)
    ]
    for i, ns in enumerate([("a", "b", "c", "d"), ("a", "b", "c", "e"), ("a", "b", "f"), ("a", "g"), ("h", "i", "j")]):
        store.put(ns, f"id_{i}", {"i": i})
    assert store.list_namespaces(max_depth=2, limit=4) == [("a", "b"), ("a", "g"), ("h", "i"), ("namespace", "sub_00")]
    assert len(store.list_namespaces(max_depth=1)) == 3


def test_list_namespaces_forgets_emptied_namespaces(store: ChromaStore) -> None:
    assert store.list_namespaces() == []
    store.put(("a", "b"), "k1", {"v": 1})
    store.put(("a", "b"), "k2", {"v": 2})
    store.put(("c",), "k", {"v": 3})
    assert store.list_namespaces() == [("a", "b"), ("c",)]
    store.delete(("a", "b"), "k1")
    assert store.list_namespaces() == [("a", "b"), ("c",)]
    store.delete(("a", "b"), "k2")
    assert store.list_namespaces() == [("c",)]


async def _async_roundtrip(store: ChromaStore) -> None:
    await store.aput(("test", "async"), "k1", {"text": "one", "n": 1})
    await store.aput(("test", "async"), "k2", {"text": "two", "n": 2})
    item = await store.aget(("test", "async"), "k1")
    assert item is not None and item.value == {"text": "one", "n": 1}
    found = await store.asearch(("test",), filter={"n": {"$gt": 1}})
    assert [i.key for i in found] == ["k2"]
    assert await store.alist_namespaces(prefix=("test",)) == [("test", "async")]
    await store.adelete(("test", "async"), "k1")
    assert await store.aget(("test", "async"), "k1") is None


@pytest.mark.asyncio
async def test_async_ops(store: ChromaStore) -> None:
    await _async_roundtrip(store)


@pytest.mark.asyncio
async def test_async_concurrent_ops(store: ChromaStore) -> None:
    docs = [(f"doc{i}", {"i": i, "color": ["red", "blue"][i % 2]}) for i in range(30)]
    await asyncio.gather(*(store.aput(("c",), key, value) for key, value in docs))
    await asyncio.gather(*(store.adelete(("c",), key) for key, _ in docs[:10]))
    results = await asyncio.gather(
        store.asearch(("c",), filter={"color": "red"}, limit=100),
        store.asearch(("c",), filter={"i": {"$lt": 15}}, limit=100),
        *(store.aget(("c",), key) for key, _ in docs),
    )
    assert sorted(i.value["i"] for i in results[0]) == list(range(10, 30, 2))
    assert sorted(i.value["i"] for i in results[1]) == list(range(10, 15))
    assert [g is None for g in results[2:]] == [True] * 10 + [False] * 20


@pytest.mark.asyncio
async def test_cannot_put_empty_namespace(store: ChromaStore) -> None:
    doc = {"foo": "bar"}
    for bad in [(), ("the", "thing.about"), ("some", "fun", ""), ("langgraph", "foo")]:
        with pytest.raises(InvalidNamespaceError):
            store.put(bad, "foo", doc)
        with pytest.raises(InvalidNamespaceError):
            await store.aput(bad, "foo", doc)
    for bad_raw in [(), ("a.b",), ("",)]:
        with pytest.raises(InvalidNamespaceError):
            store.batch([PutOp(bad_raw, "k", doc)])
    with pytest.raises(InvalidNamespaceError):
        store.batch([SearchOp(("a.b",))])

    await store.aput(("foo", "langgraph", "foo"), "bar", doc)
    assert (await store.aget(("foo", "langgraph", "foo"), "bar")).value == doc
    assert (await store.asearch(("foo", "langgraph", "foo")))[0].value == doc
    await store.adelete(("foo", "langgraph", "foo"), "bar")
    assert await store.aget(("foo", "langgraph", "foo"), "bar") is None

    # Past the public API a "langgraph" root is allowed, as in LangGraph's own stores.
    store.batch([PutOp(("langgraph", "foo"), "bar", doc)])
    assert store.get(("langgraph", "foo"), "bar").value == doc
    store.delete(("langgraph", "foo"), "bar")
    assert store.get(("langgraph", "foo"), "bar") is None


def test_ttl_is_refused(store: ChromaStore) -> None:
    with pytest.raises(NotImplementedError):
        store.put(("t",), "k", {"v": 1}, ttl=5)
    store.put(("t",), "k", {"v": 1}, ttl=None)


def test_namespace_scope_is_exact(store: ChromaStore) -> None:
    store.put(("memories", "u1", "p"), "k", {"who": "u1"})
    store.put(("memories", "u10", "p"), "k", {"who": "u10"})
    store.put(("memories", "u1"), "k", {"who": "u1-root"})
    assert [i.value["who"] for i in store.search(("memories", "u1", "p"))] == ["u1"]
    assert sorted(i.value["who"] for i in store.search(("memories", "u1"))) == ["u1", "u1-root"]
    assert store.get(("memories", "u1"), "k").value == {"who": "u1-root"}
    assert store.get(("memories", "u1", "p"), "k").value == {"who": "u1"}


def test_reopen_keeps_items_and_timestamps(tmp_path: Path) -> None:
    with ChromaStore.from_path(tmp_path / "s") as store:
        store.put(("t",), "k", {"v": 1})
        before = store.get(("t",), "k")
    with ChromaStore.from_path(tmp_path / "s") as store:
        after = store.get(("t",), "k")
        assert after == before
        assert store.list_namespaces() == [("t",)]


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = ChromaStore.from_path(tmp_path / "s")
    store.close()
    store.close()
    with pytest.raises(AgentmmError, match="closed"):
        store.get(("t",), "k")


def test_two_stores_in_one_process_share_the_directory(tmp_path: Path) -> None:
    with ChromaStore.from_path(tmp_path / "s") as first, ChromaStore.from_path(tmp_path / "s") as second:
        first.put(("t",), "k", {"v": 1})
        assert second.get(("t",), "k").value == {"v": 1}


def test_reads_are_paged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chroma fails one read of more than ~32k records ("too many SQL variables"), so reads page.

    A page of 3 records stands in for the real 5,000 so the test stays small.
    """
    monkeypatch.setattr(chroma_store, "MAX_PAGE", 3)
    with ChromaStore.from_path(tmp_path / "s") as store:
        store.batch([PutOp(("p", f"n{i % 4}"), f"k{i:02d}", {"i": i, "even": i % 2 == 0}) for i in range(20)])
        assert [i.key for i in store.search(("p",), limit=100)] == [f"k{i:02d}" for i in reversed(range(20))]
        assert [i.key for i in store.search(("p",), limit=4, offset=8)] == ["k11", "k10", "k09", "k08"]
        evens = store.search(("p",), filter={"even": True, "i": {"$ne": 4}}, limit=100)
        assert sorted(i.value["i"] for i in evens) == [0, 2, 6, 8, 10, 12, 14, 16, 18]
        assert store.list_namespaces() == [("p", f"n{i}") for i in range(4)]


def test_chroma_log_is_saved_often(tmp_path: Path) -> None:
    """Chroma rereads its whole write log on every write until the HNSW index is next saved;
    a store made with Chroma's own threshold (1,000) is brought down to agentmm's on reopen,
    and the log then stays under it however many writes come."""
    import sqlite3

    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(str(tmp_path / "s"), settings=Settings(anonymized_telemetry=False))
    hnsw = {"hnsw": {"space": "l2"}}
    made = client.get_or_create_collection("agentmm-items", embedding_function=None, configuration=hnsw)
    assert made.configuration["hnsw"]["sync_threshold"] != chroma_store.SYNC_THRESHOLD
    with ChromaStore.from_path(tmp_path / "s") as store:
        for collection in (store._items, store._namespaces, store._vectors):
            assert collection.configuration["hnsw"]["sync_threshold"] == chroma_store.SYNC_THRESHOLD
        for i in range(3 * chroma_store.SYNC_THRESHOLD):
            store.put(("t",), f"k{i}", {"v": i})
        assert len(store.search(("t",), limit=1000)) == 3 * chroma_store.SYNC_THRESHOLD
    with sqlite3.connect(tmp_path / "s" / "chroma.sqlite3") as db:
        (waiting,) = db.execute("SELECT count(*) FROM embeddings_queue").fetchone()
    assert waiting < 2 * chroma_store.SYNC_THRESHOLD  # two collections written, each under its threshold
