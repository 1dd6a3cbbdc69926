"""Late-interaction reranking: token vectors from the exported embedder, MaxSim over recall's
candidates fused with their order, kept per text in the store's recall cache."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langgraph.store.base import Item

from agentmm.memory.conversation import recall
from agentmm.memory.rerank import rerank, token_embedder
from agentmm.memory.retrieval import RERANKED, HybridHit, RecallCache, hybrid_search, recall_cache


class WordVectors:
    """Token vectors from words: each word a fixed random unit vector, so shared words match."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def _word(self, word: str) -> np.ndarray:
        rng = np.random.default_rng(abs(hash(word.lower().strip("?.,!"))) % 2**32)
        v = rng.normal(size=16).astype(np.float32)
        return v / np.linalg.norm(v)

    def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        self.calls.append(list(texts))
        return [np.stack([self._word(w) for w in t.split()]) if t.split() else np.zeros((0, 16), np.float32)
                for t in texts]  # fmt: skip


def hit(key: str, text: str, rank: int) -> HybridHit:
    item = Item(value={"content": text}, key=key, namespace=("m",), created_at="2024-01-01T00:00:00+00:00",
                updated_at="2024-01-01T00:00:00+00:00")  # fmt: skip
    return HybridHit(item, 1.0 / (60 + rank), {"dense": rank}, 0.5)


def test_the_candidate_sharing_the_questions_words_moves_up() -> None:
    hits = [hit(f"filler{i}", f"weather chat number {i} today", i + 1) for i in range(8)]
    hits.append(hit("answer", "Malik has taken up cello lessons", 9))
    embedder, cache = WordVectors(), RecallCache()
    ranked = rerank(hits, "which lessons has Malik taken up", embedder, cache)
    answer = next(h for h in ranked if h.key == "answer")
    assert answer.ranks == {"dense": 9, RERANKED: 1}
    assert answer.found_by == ("dense",)  # the reranker found nothing
    # Fused by reciprocal rank with the order it came in: up from 9th, not straight to the top.
    assert [h.key for h in ranked].index("answer") < 8
    assert len(ranked) == 9 and {h.key for h in ranked} == {h.key for h in hits}


def test_token_vectors_are_kept_per_text_and_only_the_head_is_reranked() -> None:
    hits = [hit(f"k{i}", f"memory text {i}", i + 1) for i in range(6)]
    embedder, cache = WordVectors(), RecallCache()
    first = rerank(hits, "text 3", embedder, cache, depth=4)
    assert [h.key for h in first[4:]] == ["k4", "k5"]  # past the depth: as they were
    assert embedder.calls == [[f"memory text {i}" for i in range(4)], ["text 3"]]
    rerank(hits, "another question", embedder, cache, depth=4)
    assert embedder.calls[2:] == [["another question"]]  # the candidates' vectors were kept
    assert all(v.dtype == np.float16 for v in cache.token_vectors.values())


def test_a_store_without_token_vectors_is_not_reranked(vector_store: Any) -> None:
    assert token_embedder(vector_store) is None  # the fake embedder has no token vectors
    vector_store.put(("m", "ada"), "k", {"text": "Ada: hello", "content": "hello"})
    assert [r.key for r in recall(vector_store, [("m", "ada")], "hello", rerank=True)] == ["k"]


@pytest.mark.slow
def test_reranking_with_the_shipped_embedder(tmp_path: Path) -> None:
    """End to end on the real MiniLM: the exported graph gives token vectors equal to
    sentence-transformers' own, and a memory holding the question's words ("class", "take up")
    is the one MaxSim ranks first and moves up."""
    from agentmm.memory.chroma_store import ChromaStore
    from agentmm.memory.embeddings import SentenceTransformerEmbeddings, _TorchEncoder

    embedder = SentenceTransformerEmbeddings(cache_dir=tmp_path / "cache")
    texts = ["hello world", "I've taken up the cello, a class every Thursday."]
    onnx = embedder.token_vectors(texts)
    torch_rows = _TorchEncoder(embedder.sentence_transformer()).token_vectors(texts)
    assert embedder.runtime == "onnx"
    assert max(float(np.abs(a - b).max()) for a, b in zip(onnx, torch_rows, strict=True)) < 1e-4
    with ChromaStore.from_path(tmp_path / "store", index=embedder.index_config()) as store:
        said = ["Work has been hectic this week.", "Jonas just started a new job as a baker.",
                "I've taken up the cello, a class every Thursday.", "The train was late again.",
                "Alba just started a new job as a carpenter."]  # fmt: skip
        for i, text in enumerate(said):
            store.put(("m",), f"k{i}", {"text": f"Malik: {text}", "content": text})
        question = "Which class did Malik take up?"
        plain = hybrid_search(store, ("m",), question, k=5)
        reranked = rerank(plain, question, token_embedder(store), recall_cache(store))  # type: ignore[arg-type]
        recalled = recall(store, [("m",)], question, k=5, min_similarity=0.0, rerank=True)
    cello = next(h for h in reranked if h.key == "k2")
    assert cello.ranks[RERANKED] == 1
    assert [h.key for h in reranked].index("k2") <= [h.key for h in plain].index("k2")
    assert [r.key for r in recalled] == [h.key for h in reranked]
    embedder.close()
