"""The incremental BM25 index scores exactly as bm25s does over the same documents, however
they got there (built at once, added one by one, replaced, removed, compacted)."""

from __future__ import annotations

import random

import bm25s
import pytest

from agentmm.memory.bm25 import IncrementalBM25

VOCAB = [f"w{i}" for i in range(200)]


def _doc(rng: random.Random) -> list[str]:
    # Zipf-like: low term ids are common, so documents share terms and lengths vary (some empty).
    return [rng.choice(VOCAB[: rng.randint(3, len(VOCAB))]) for _ in range(rng.randint(0, 18))]


def _bm25s_scores(index: IncrementalBM25[int], docs: dict[int, list[str]], query: list[str]) -> dict[int, float]:
    refs = sorted(docs, key=lambda ref: index._slot[ref])
    reference = bm25s.BM25()
    reference.index([docs[ref] for ref in refs], show_progress=False)
    scores = reference.get_scores(query)
    return {ref: float(scores[i]) for i, ref in enumerate(refs) if scores[i] > 0}


def test_scores_match_bm25s_after_adds_replacements_and_removals() -> None:
    rng = random.Random(7)
    docs = {i: _doc(rng) for i in range(400)}
    index = IncrementalBM25(list(docs.items())[:150])
    for ref in range(150, 400):
        index.add(ref, docs[ref])
    for ref in rng.sample(range(400), 260):  # enough to trigger a compaction
        index.remove(ref)
        del docs[ref]
    for ref in range(400, 450):
        docs[ref] = _doc(rng)
        index.add(ref, docs[ref])
    for ref in rng.sample(sorted(docs), 30):
        docs[ref] = _doc(rng)
        index.add(ref, docs[ref])
    index.remove(12345)  # unknown: ignored
    assert len(index) == len(docs)
    for _ in range(100):
        query = [rng.choice(VOCAB) for _ in range(rng.randint(1, 5))]  # repeated terms count twice
        mine = dict(index.search(query, limit=len(docs)))
        expected = _bm25s_scores(index, docs, query)
        assert mine.keys() == expected.keys()
        for ref, score in expected.items():
            assert mine[ref] == pytest.approx(score, rel=1e-4)


def test_search_ranks_best_first_ties_oldest_first_and_limits() -> None:
    index = IncrementalBM25([("a", ["tea"]), ("b", ["tea"]), ("c", ["tea", "tea"])])
    assert [ref for ref, _ in index.search(["tea"], 10)] == ["c", "a", "b"]
    assert [ref for ref, _ in index.search(["tea"], 2)] == ["c", "a"]
    assert index.search(["unknown"], 5) == [] and index.search(["tea"], 0) == []
    index.add("a", ["tea"])  # replaced: now the newest of the two equal documents
    assert [ref for ref, _ in index.search(["tea"], 10)] == ["c", "b", "a"]
    assert "a" in index and len(index) == 3
    assert IncrementalBM25().search(["tea"], 3) == []
