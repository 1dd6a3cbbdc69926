"""One suite over every store agentmm runs on: LangGraph's ``InMemoryStore`` (the reference),
agentmm's embedded ``ChromaStore`` and its ``PostgresMemoryStore`` (a real Postgres with pgvector),
all with the same deterministic embedder. Where a backend differs from LangGraph's semantics
for a reason, the test says so (xfail with the reason); everything else must agree."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.store.base import BaseStore, GetOp, PutOp
from langgraph.store.memory import InMemoryStore

from agentmm.memory.chroma_store import ChromaStore
from tests.memory.conftest import CharacterEmbeddings

BACKENDS = ["memory", "chroma", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_store(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, fake_embeddings: CharacterEmbeddings
) -> Iterator[Callable[[], BaseStore]]:
    """Opens the backend's store over one place (a second call: a second process on the same data,
    where the backend allows it)."""
    index: Any = {"dims": fake_embeddings.dims, "embed": fake_embeddings, "fields": ["text"]}
    opened: list[Any] = []
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None

    def make() -> BaseStore:
        if backend == "memory":
            store: Any = InMemoryStore(index=index)
        elif backend == "chroma":
            store = ChromaStore.from_path(tmp_path / "chroma", index=index)
        else:
            from agentmm.memory.postgres_store import PostgresMemoryStore

            assert url is not None
            store = PostgresMemoryStore.from_url(url, index=index)
        opened.append(store)
        return store  # type: ignore[no-any-return]

    yield make
    for store in opened:
        if hasattr(store, "close"):
            store.close()


@pytest.fixture
def store(open_store: Callable[[], BaseStore]) -> BaseStore:
    return open_store()


def keys(items: list[Any]) -> list[str]:
    return [item.key for item in items]


def xfail_on(backend: str, which: str, reason: str) -> None:
    if backend == which:
        pytest.xfail(reason)


# --- items -----------------------------------------------------------------------------------


def test_put_get_delete(store: BaseStore) -> None:
    ns = ("memories", "u", "p")
    assert store.get(ns, "a") is None
    store.put(ns, "a", {"text": "Alice lives in Lisbon", "n": 1, "nested": {"x": [1, 2]}})
    item = store.get(ns, "a")
    assert item is not None
    assert item.namespace == ns and item.key == "a"
    assert item.value == {"text": "Alice lives in Lisbon", "n": 1, "nested": {"x": [1, 2]}}
    assert item.created_at.tzinfo is not None
    store.delete(ns, "a")
    assert store.get(ns, "a") is None
    store.delete(ns, "never there")  # deleting nothing is fine


def test_created_at_survives_an_update(store: BaseStore, backend: str) -> None:
    xfail_on(backend, "memory", "LangGraph's InMemoryStore makes a new Item on update (Postgres keeps created_at)")
    ns = ("memories", "u", "p")
    store.put(ns, "a", {"text": "first"})
    before = store.get(ns, "a")
    time.sleep(0.01)
    store.put(ns, "a", {"text": "second"})
    after = store.get(ns, "a")
    assert before is not None and after is not None
    assert after.value == {"text": "second"}
    assert after.created_at == before.created_at
    assert after.updated_at > before.updated_at


def test_reads_in_a_batch_see_the_store_before_its_puts(store: BaseStore) -> None:
    ns = ("memories", "u", "p")
    results = store.batch([PutOp(ns, "a", {"text": "x"}), GetOp(ns, "a"), PutOp(ns, "a", {"text": "y"})])
    assert results[1] is None
    item = store.get(ns, "a")
    assert item is not None and item.value == {"text": "y"}  # the last put to a key wins


def test_namespaces_are_separate_and_prefixes_whole_labels(store: BaseStore) -> None:
    store.put(("memories", "u", "p"), "a", {"text": "one"})
    store.put(("memories", "u", "q"), "a", {"text": "two"})
    store.put(("memories", "uu", "p"), "b", {"text": "three"})
    store.put(("other",), "c", {"text": "four"})
    assert store.get(("memories", "u", "p"), "a").value == {"text": "one"}  # type: ignore[union-attr]
    assert store.get(("memories", "u", "q"), "a").value == {"text": "two"}  # type: ignore[union-attr]
    assert sorted(keys(store.search(("memories", "u")))) == ["a", "a"]
    assert sorted(keys(store.search(("memories",)))) == ["a", "a", "b"]
    assert len(store.search(())) == 4
    assert store.search(("memories", "u", "p", "deeper")) == []


def test_list_namespaces(store: BaseStore) -> None:
    for ns in [("memories", "u", "p"), ("memories", "u", "q"), ("memories", "v", "p"), ("notes", "u")]:
        store.put(ns, "k", {"text": "x"})
    assert store.list_namespaces() == [
        ("memories", "u", "p"), ("memories", "u", "q"), ("memories", "v", "p"), ("notes", "u"),
    ]  # fmt: skip
    assert store.list_namespaces(prefix=("memories", "u")) == [("memories", "u", "p"), ("memories", "u", "q")]
    assert store.list_namespaces(suffix=("p",)) == [("memories", "u", "p"), ("memories", "v", "p")]
    assert store.list_namespaces(prefix=("memories", "*", "p")) == [("memories", "u", "p"), ("memories", "v", "p")]
    assert store.list_namespaces(max_depth=2) == [("memories", "u"), ("memories", "v"), ("notes", "u")]
    assert store.list_namespaces(prefix=("memories",), max_depth=1) == [("memories",)]
    assert store.list_namespaces(limit=2, offset=1) == [("memories", "u", "q"), ("memories", "v", "p")]
    assert store.list_namespaces(prefix=("mem",)) == []


def test_an_emptied_namespace_is_not_listed(store: BaseStore, backend: str) -> None:
    store.put(("notes", "u"), "k", {"text": "x"})
    store.put(("memories", "u"), "k", {"text": "x"})
    store.delete(("notes", "u"), "k")
    xfail_on(backend, "memory", "LangGraph's InMemoryStore keeps listing a namespace whose items were deleted")
    assert store.list_namespaces() == [("memories", "u")]


# --- search ----------------------------------------------------------------------------------


def fill(store: BaseStore) -> None:
    ns = ("memories", "u", "p")
    for key, value in [
        ("lisbon", {"text": "Alice lives in Lisbon", "n": 10, "role": "user", "tags": ["a", "b"]}),
        ("tea", {"text": "Bob drinks green tea", "n": 9, "role": "assistant", "meta": {"lang": "en", "k": 1}}),
        ("chess", {"text": "Chen plays chess on Sundays", "n": 2.5, "role": "user", "meta": {"lang": "pt"}}),
        ("word", {"text": "a note", "n": 0, "role": "note"}),
    ]:
        store.put(ns, key, value)
        time.sleep(0.002)  # distinct updated_at for the order


def test_search_without_a_query_is_newest_first(store: BaseStore, backend: str) -> None:
    fill(store)
    assert sorted(keys(store.search(("memories",)))) == ["chess", "lisbon", "tea", "word"]
    xfail_on(backend, "memory", "InMemoryStore returns items in insertion order, Postgres and SQLite newest first")
    assert keys(store.search(("memories",))) == ["word", "chess", "tea", "lisbon"]


def test_search_with_a_query_ranks_by_similarity(store: BaseStore) -> None:
    fill(store)
    found = store.search(("memories",), query="Alice lives in Lisbon")
    assert found[0].key == "lisbon"
    scores = [item.score for item in found]
    assert all(score is not None for score in scores)
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert abs(scores[0] - 1.0) < 1e-4  # type: ignore[operator]  # cosine similarity with itself


def test_items_without_vectors_follow_the_ranked_ones(store: BaseStore, backend: str) -> None:
    fill(store)
    store.put(("memories", "u", "p"), "plain", {"content": "no text field"})
    xfail_on(backend, "postgres", "LangGraph's PostgresStore returns only items with vectors for a query search")
    found = store.search(("memories",), query="Lisbon", limit=10)
    assert found[-1].key == "plain" and found[-1].score is None
    assert len(found) == 5


def test_limit_and_offset(store: BaseStore) -> None:
    fill(store)
    everything = keys(store.search(("memories",), limit=10))
    assert keys(store.search(("memories",), limit=2)) == everything[:2]
    assert keys(store.search(("memories",), limit=2, offset=2)) == everything[2:4]
    assert store.search(("memories",), limit=2, offset=4) == []
    ranked = keys(store.search(("memories",), query="Alice in Lisbon", limit=10))
    assert keys(store.search(("memories",), query="Alice in Lisbon", limit=2, offset=1)) == ranked[1:3]


FILTERS: list[tuple[dict[str, Any], list[str]]] = [
    ({"role": "user"}, ["chess", "lisbon"]),
    ({"role": {"$eq": "user"}}, ["chess", "lisbon"]),
    ({"role": {"$ne": "user"}}, ["tea", "word"]),
    ({"meta": {"$ne": {"lang": "en", "k": 1}}}, ["chess", "lisbon", "word"]),  # no field: not equal
    ({"n": 10}, ["lisbon"]),
    ({"n": 10.0}, ["lisbon"]),
    ({"n": {"$gt": 9}}, ["lisbon"]),  # 10 > 9 as numbers ("10" < "9" as text)
    ({"n": {"$gte": 9}}, ["lisbon", "tea"]),
    ({"n": {"$lt": 9.5}}, ["chess", "tea", "word"]),
    ({"n": {"$lte": 2.5}}, ["chess", "word"]),
    ({"n": {"$gt": 1, "$lt": 10}}, ["chess", "tea"]),
    ({"role": "user", "n": {"$gt": 5}}, ["lisbon"]),
    ({"tags": ["a", "b"]}, ["lisbon"]),
    ({"tags": ["b", "a"]}, []),
    ({"meta": {"lang": "en"}}, ["tea"]),  # a nested object matches on the fields it names
    ({"meta": {"lang": {"$ne": "en"}}}, ["chess"]),
    ({"missing": "x"}, []),
]


@pytest.mark.parametrize(("flt", "want"), FILTERS, ids=[str(f) for f, _ in FILTERS])
def test_filters(store: BaseStore, flt: dict[str, Any], want: list[str]) -> None:
    fill(store)
    assert sorted(keys(store.search(("memories",), filter=flt, limit=10))) == want
    with_query = store.search(("memories",), query="Lisbon", filter=flt, limit=10)
    assert sorted(keys(with_query)) == want


def test_a_range_filter_skips_values_that_are_not_numbers(store: BaseStore, backend: str) -> None:
    fill(store)
    store.put(("memories", "u", "p"), "string", {"text": "eleven", "n": "11"})
    store.put(("memories", "u", "p"), "none", {"text": "no n"})
    xfail_on(backend, "memory", "InMemoryStore compares float(value): '11' passes, a missing field raises")
    assert sorted(keys(store.search(("memories",), filter={"n": {"$gt": 5}}, limit=10))) == ["lisbon", "tea"]


def test_the_filter_agentmm_uses_to_find_a_turn(store: BaseStore) -> None:
    store.put(("memories", "u", "p"), "t1:2:user", {"text": "x", "thread": "t1", "turn": 2})
    store.put(("memories", "u", "shared"), "t1:2:assistant", {"text": "y", "thread": "t1", "turn": 2})
    store.put(("memories", "u", "p"), "t1:3:user", {"text": "z", "thread": "t1", "turn": 3})
    store.put(("memories", "u", "p"), "t2:2:user", {"text": "z", "thread": "t2", "turn": 2})
    found = store.search(("memories",), filter={"thread": "t1", "turn": 2}, limit=10)
    assert sorted(keys(found)) == ["t1:2:assistant", "t1:2:user"]


def test_an_unknown_operator_is_refused(store: BaseStore) -> None:
    fill(store)
    with pytest.raises(ValueError, match="operator"):
        store.search(("memories",), filter={"n": {"$regex": "1"}})


def test_async_methods(store: BaseStore) -> None:
    async def go() -> None:
        ns = ("memories", "u", "p")
        await store.aput(ns, "a", {"text": "Alice lives in Lisbon"})
        await store.aput(ns, "b", {"text": "Bob drinks tea"})
        got = await store.aget(ns, "a")
        assert got is not None and got.value["text"] == "Alice lives in Lisbon"
        found = await store.asearch(("memories",), query="Lisbon Alice")
        assert found[0].key == "a"
        assert await store.alist_namespaces(prefix=("memories",)) == [ns]
        await store.adelete(ns, "a")
        assert await store.aget(ns, "a") is None

    asyncio.run(go())


def test_a_second_store_on_the_same_data_sees_the_writes(open_store: Callable[[], BaseStore], backend: str) -> None:
    if backend != "postgres":
        pytest.skip("only Postgres is shared by processes (InMemoryStore is one object, embedded Chroma one holder)")
    first, second = open_store(), open_store()
    first.put(("memories", "u", "p"), "a", {"text": "Alice lives in Lisbon"})
    item = second.get(("memories", "u", "p"), "a")
    assert item is not None and item.value == {"text": "Alice lives in Lisbon"}
    assert second.search(("memories",), query="Lisbon")[0].key == "a"
