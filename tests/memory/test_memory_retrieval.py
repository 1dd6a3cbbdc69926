"""Hybrid recall: BM25 and dense rankings fused by reciprocal rank fusion."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from langgraph.store.base import Item, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore

from agentmm.memory import retrieval
from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.retrieval import ahybrid_search, fuse, hybrid_search

SCOPE = ("memories", "u1", "alice")
MEMORIES = {
    "sister": "Alice's sister Marguerite lives in Lisbon",
    "tea": "Alice drinks green tea every morning",
    "code": "The locker code is 7319",
    "cat": "The cat is called Quixotl",
    "rain": "Alice dislikes walking in the rain",
}


def _fill(store: ChromaStore | InMemoryStore) -> None:
    store.batch([PutOp(SCOPE, key, {"text": text, "kind": "fact"}) for key, text in MEMORIES.items()])
    store.batch([PutOp(("memories", "u10", "alice"), key, {"text": text}) for key, text in MEMORIES.items()])


def _item(key: str) -> Item:
    now = datetime.now(UTC)
    return Item(value={}, key=key, namespace=("n",), created_at=now, updated_at=now)


def test_fuse_is_reciprocal_rank_fusion() -> None:
    a, b, c = _item("a"), _item("b"), _item("c")
    hits = fuse({"dense": [a, b], "bm25": [c, b]}, k=3, rrf_k=60)
    assert [h.key for h in hits] == ["b", "a", "c"]
    assert hits[0].score == pytest.approx(2 / 62)
    assert hits[0].ranks == {"dense": 2, "bm25": 2}
    assert hits[1].score == pytest.approx(1 / 61) and hits[1].found_by == ("dense",)
    assert hits[2].found_by == ("bm25",)
    assert fuse({"dense": [a, b]}, k=1)[0].key == "a"


def test_rare_words_are_found_lexically(vector_store: ChromaStore) -> None:
    _fill(vector_store)
    hits = hybrid_search(vector_store, SCOPE, "what is the cat Quixotl doing", k=3)
    assert hits[0].key == "cat"
    assert "bm25" in hits[0].found_by and hits[0].ranks["bm25"] == 1
    assert hits[0].dense_score is not None
    assert hybrid_search(vector_store, SCOPE, "7319", k=1)[0].key == "code"
    assert hybrid_search(vector_store, SCOPE, "Marguerite", k=1)[0].key == "sister"


def test_hybrid_hits_stay_in_scope_and_honour_filters(vector_store: ChromaStore) -> None:
    _fill(vector_store)
    hits = hybrid_search(vector_store, SCOPE, "Alice tea rain cat", k=10)
    assert len(hits) == len(MEMORIES)
    assert all(h.namespace == SCOPE for h in hits)
    assert hybrid_search(vector_store, SCOPE, "tea", k=10, filter={"kind": "other"}) == []
    assert hybrid_search(vector_store, SCOPE, "   ", k=10) == []


def test_lexical_index_follows_writes(vector_store: ChromaStore) -> None:
    _fill(vector_store)
    assert "bm25" not in {r for h in hybrid_search(vector_store, SCOPE, "Zanzibar", k=5) for r in h.ranks}
    vector_store.put(SCOPE, "trip", {"text": "Next summer Alice flies to Zanzibar"})
    hit = hybrid_search(vector_store, SCOPE, "Zanzibar", k=1)[0]
    assert hit.key == "trip" and hit.ranks["bm25"] == 1
    vector_store.delete(SCOPE, "trip")
    assert all(h.key != "trip" for h in hybrid_search(vector_store, SCOPE, "Zanzibar", k=5))


def test_lexical_index_is_reused_and_updated_incrementally(
    vector_store: ChromaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(vector_store)
    builds: list[int] = []
    real_build = retrieval._build_index
    monkeypatch.setattr(retrieval, "_build_index", lambda *a: builds.append(1) or real_build(*a))
    reads: list[str] = []
    real_batch = vector_store.batch

    def recording_batch(ops: list) -> list:
        ops = list(ops)
        reads.extend(
            "full-read" if isinstance(op, SearchOp) and not op.query else type(op).__name__
            for op in ops
            if not isinstance(op, PutOp)
        )
        return real_batch(ops)

    monkeypatch.setattr(vector_store, "batch", recording_batch)
    hybrid_search(vector_store, SCOPE, "tea", k=2)
    hybrid_search(vector_store, SCOPE, "rain", k=2)
    assert len(builds) == 1 and reads.count("full-read") == 1

    vector_store.put(SCOPE, "tea", {"text": "Alice switched to black tea"})
    vector_store.put(("memories", "u10", "alice"), "tea", {"text": "not in this scope"})
    reads.clear()
    hits = hybrid_search(vector_store, SCOPE, "black", k=1)
    assert hits[0].key == "tea" and hits[0].ranks.get("bm25") == 1
    assert len(builds) == 1  # updated in place, never rebuilt
    assert reads == ["GetOp"]  # only the one item written in scope: dense hits map onto the cache
    assert all(h.key != "tea" for h in hybrid_search(vector_store, SCOPE, "green", k=5) if "bm25" in h.ranks)


def test_any_langgraph_store_works(fake_embeddings: object) -> None:
    store = InMemoryStore(index={"dims": 64, "embed": fake_embeddings, "fields": ["text"]})  # type: ignore[typeddict-item]
    _fill(store)
    hits = hybrid_search(store, SCOPE, "Quixotl", k=2)
    assert hits[0].key == "cat" and set(hits[0].found_by) == {"dense", "bm25"}


def test_cached_dense_ranking_is_the_stores_own(vector_store: ChromaStore, fake_embeddings: object) -> None:
    """Over an embedded store, dense hits come from vector ids mapped onto the cache; they must
    be what ``store.search`` ranks, scores included, and the fused result what any store gives."""
    _fill(vector_store)
    vector_store.put(SCOPE, "gone", {"text": "Alice drinks tea"})
    vector_store.delete(SCOPE, "gone")
    reference = InMemoryStore(index={"dims": 64, "embed": fake_embeddings, "fields": ["text"]})  # type: ignore[typeddict-item]
    _fill(reference)
    for query in ("green tea in the morning", "Quixotl", "where does the sister live"):
        hits = hybrid_search(vector_store, SCOPE, query, k=5)
        expected = hybrid_search(reference, SCOPE, query, k=5)
        assert [(h.key, h.ranks) for h in hits] == [(h.key, h.ranks) for h in expected]
        dense = {h.key: h.score for h in vector_store.search(SCOPE, query=query, limit=10)}
        for hit in hits:
            assert hit.dense_score == pytest.approx(dense[hit.key], abs=1e-5)
            assert hit.value == vector_store.get(SCOPE, hit.key).value  # type: ignore[union-attr]


def test_cached_dense_search_finds_a_small_scope_among_many_others(vector_store: ChromaStore) -> None:
    crowd = ("memories", "u2", "alice")
    vector_store.batch([PutOp(crowd, f"tea{i}", {"text": f"Alice drinks green tea {i}"}) for i in range(300)])
    vector_store.put(SCOPE, "mine", {"text": "Bob sails to Oslo"})
    hybrid_search(vector_store, SCOPE, "warm up the cache", k=1)
    # The nearest vectors overall are all the crowd's: the scope's own are asked for.
    hits = hybrid_search(vector_store, SCOPE, "Alice drinks green tea 150", k=3, candidates=5)
    assert [h.key for h in hits] == ["mine"] and hits[0].found_by == ("dense",)


def test_a_store_without_a_journal_is_reindexed_only_where_it_changed(
    fake_embeddings: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = InMemoryStore(index={"dims": 64, "embed": fake_embeddings, "fields": ["text"]})  # type: ignore[typeddict-item]
    _fill(store)
    builds: list[int] = []
    real_build = retrieval._build_index
    monkeypatch.setattr(retrieval, "_build_index", lambda *a: builds.append(1) or real_build(*a))
    cache = retrieval.RecallCache()  # InMemoryStore cannot carry one: the caller's is kept
    assert hybrid_search(store, SCOPE, "Quixotl", k=1, cache=cache)[0].key == "cat"
    store.put(SCOPE, "trip", {"text": "Next summer Alice flies to Zanzibar"})
    store.put(SCOPE, "cat", {"text": "The cat is now called Mittens"})
    store.delete(SCOPE, "code")
    found = hybrid_search(store, SCOPE, "Zanzibar Mittens 7319", k=10, cache=cache)
    lexical = {h.key: h.ranks.get("bm25") for h in found}
    assert lexical["trip"] and lexical["cat"] and "code" not in lexical
    assert all("bm25" not in h.ranks for h in hybrid_search(store, SCOPE, "Quixotl", k=10, cache=cache))
    assert builds == [1]


def test_the_recall_path_is_declared_and_a_full_read_is_logged_once_per_store(
    vector_store: ChromaStore, fake_embeddings: object, caplog: pytest.LogCaptureFixture
) -> None:
    from agentmm.memory import IncrementalStore, recall_path

    index = {"dims": 64, "embed": fake_embeddings, "fields": ["text"]}
    plain, other = InMemoryStore(index=index), InMemoryStore(index=index)  # type: ignore[arg-type]
    assert isinstance(vector_store, IncrementalStore) and not isinstance(plain, IncrementalStore)
    assert recall_path(vector_store) == "incremental" and recall_path(plain) == "full read"
    cache, other_cache = retrieval.RecallCache(), retrieval.RecallCache()
    with caplog.at_level("WARNING", logger="agentmm.memory.retrieval"):
        hybrid_search(vector_store, SCOPE, "tea", k=1)
        assert caplog.records == []  # the incremental path says nothing
        for _ in range(3):
            hybrid_search(plain, SCOPE, "tea", k=1, cache=cache)
        hybrid_search(other, SCOPE, "tea", k=1, cache=other_cache)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and all("InMemoryStore is not an incremental store" in w for w in warned)


def test_the_recall_cache_belongs_to_the_store(vector_store: ChromaStore) -> None:
    _fill(vector_store)
    hybrid_search(vector_store, SCOPE, "tea", k=1)
    cache = retrieval.recall_cache(vector_store)
    assert cache is retrieval.recall_cache(vector_store) and len(cache.corpora) == 1
    assert not hasattr(retrieval, "_cache") and not hasattr(retrieval, "_pool")


@pytest.mark.asyncio
async def test_async_hybrid_search(vector_store: ChromaStore) -> None:
    _fill(vector_store)
    hits = await ahybrid_search(vector_store, SCOPE, "locker code 7319", k=2)
    assert hits[0].key == "code"


def test_fuse_weights_scale_each_retriever() -> None:
    from langgraph.store.base import Item

    from agentmm.memory.retrieval import fuse

    now = __import__("datetime").datetime.now()
    a, b = (Item(value={"text": t}, key=t, namespace=("n",), created_at=now, updated_at=now) for t in "ab")
    rankings = {"dense": [a, b], "bm25": [b]}
    assert [h.key for h in fuse(rankings, 2)] == ["b", "a"]  # equal weights: b is found twice
    assert [h.key for h in fuse(rankings, 2, weights={"dense": 1.0, "bm25": 0.01})] == ["a", "b"]


def test_the_turns_trace_says_which_recall_path_ran(vector_store: ChromaStore, fake_embeddings: object) -> None:
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langgraph.checkpoint.memory import InMemorySaver

    from agentmm.graphs.chat import build_graph
    from agentmm.settings import Settings
    from agentmm.tokens import TokenCounter

    plain = InMemoryStore(index={"dims": 64, "embed": fake_embeddings, "fields": ["text"]})  # type: ignore[typeddict-item]
    paths = {}
    for name, store in (("chroma", vector_store), ("in memory", plain)):
        model = GenericFakeChatModel(messages=iter([AIMessage("Noted."), AIMessage("Tea, I think.")]))
        graph = build_graph(Settings(memory_min_similarity=0.0), model=model, checkpointer=InMemorySaver(), store=store,
                            counter=TokenCounter(lambda t: len(t.split())))  # fmt: skip
        config = {"configurable": {"thread_id": name}}
        graph.invoke({"input": "Alice drinks green tea every morning"}, config)
        state = graph.invoke({"input": "What does Alice drink?"}, config)
        paths[name] = state["trace"]["recall_path"]
    assert paths == {"chroma": "incremental", "in memory": "full read"}


def test_each_hit_says_how_much_of_the_query_s_content_words_it_holds(
    vector_store: ChromaStore, fake_embeddings: object
) -> None:
    """``overlap``: the IDF-weighed share of the query's content words a hit's text holds;
    function words and the words that frame a question to memory ("called", "remember") are
    not content, a word most memories have weighs less, one none has counts against."""
    from agentmm.memory.conversation import recall
    from agentmm.memory.multihop import two_round_search

    _fill(vector_store)
    in_memory = InMemoryStore(index={"dims": 64, "embed": fake_embeddings, "fields": ["text"]})
    _fill(in_memory)
    for store in (vector_store, in_memory):
        cache = retrieval.RecallCache()
        overlap = {h.key: h.overlap for h in hybrid_search(store, SCOPE, "What is my cat called?", k=5, cache=cache)}
        assert overlap["cat"] == 1.0  # "cat" is the question's only content word
        assert overlap["tea"] == 0.0
        # "alice" is in three of five memories, "lisbon" in one, "paris" in none.
        sister = hybrid_search(store, SCOPE, "Does Alice remember Lisbon or Paris?", k=5, cache=cache)
        by_key = {h.key: h.overlap for h in sister}
        assert 0.0 < by_key["tea"] < by_key["sister"] < 1.0
        assert hybrid_search(store, SCOPE, "what is it?", k=5, cache=cache)[0].overlap is None  # no content words
    # Recall's other rounds and the trace keep it.
    assert {h.key: h.overlap for h in two_round_search(vector_store, SCOPE, "my cat", k=5)}["cat"] == 1.0
    traced = {r.key: r.as_trace()["overlap"] for r in recall(vector_store, [SCOPE], "my cat", k=5, rerank=True)}
    assert traced["cat"] == 1.0


def test_an_empty_scope_is_searched_without_tokenising_the_query(
    vector_store: ChromaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new user's first recall tokenised its query for an empty BM25 index: the import of
    bm25s and scipy (~0.2 s of CPU) on every first turn of a fresh data dir, for no hit."""
    tokenised: list[list[str]] = []
    real_tokenize = retrieval._tokenize
    monkeypatch.setattr(
        retrieval, "_tokenize", lambda texts, stemmer: tokenised.append(texts) or real_tokenize(texts, stemmer)
    )
    assert hybrid_search(vector_store, SCOPE, "what is the cat Quixotl doing", k=3) == []
    assert [texts for texts in tokenised if texts] == []  # (an empty scope's index is built from no text)
    _fill(vector_store)  # a scope with memories still searches lexically
    assert hybrid_search(vector_store, SCOPE, "Quixotl", k=1)[0].ranks.get("bm25") == 1
    assert ["Quixotl"] in tokenised
