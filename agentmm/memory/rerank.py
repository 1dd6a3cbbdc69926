"""Late-interaction reranking of recall's candidates, with the embedder the store already has.

Hybrid recall compares one vector per memory with one per question, and a memory's vector is
dominated by what most of it says (the small talk around a fact, the message it answered).
Compared token by token instead (each question token's best match among the memory's tokens,
averaged: ColBERT's MaxSim, here over MiniLM's own token vectors, which were not trained for
it), a memory that holds the question's particular words and names scores on them. So the best
``depth`` candidates of hybrid recall are scored that way and the two orders are fused by
reciprocal rank: MaxSim alone was no better than hybrid recall on the development set (Recall@10
82.9 vs 82.7), fused it gave 88.4, most of it on multi-hop questions (52.5 -> 69.2), whose second
fact shares a name with the question but little else.

It costs one embedder pass over the candidates' texts per recall (30-85 ms for 50; token vectors
are kept per text, a few thousand, in the store's ``RecallCache``), so it is opt-in
(``memory_rerank``; BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from agentmm.memory.retrieval import DEFAULT_RRF_K, RERANKED, HybridHit, RecallCache

if TYPE_CHECKING:
    import numpy as np

DEPTH = 50
CACHE_SIZE = 2048  # texts' token vectors kept (float16, ~15 KB each)


@runtime_checkable
class TokenEmbedder(Protocol):
    """An embedder that also gives each text's unit token vectors (agentmm's own does)."""

    def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]: ...


def token_embedder(store: Any) -> TokenEmbedder | None:
    """The store's embedder, if it can give token vectors."""
    embedder = getattr(store, "embeddings", None)
    return embedder if isinstance(embedder, TokenEmbedder) else None


def rerank(
    hits: Sequence[HybridHit],
    query: str,
    embedder: TokenEmbedder,
    cache: RecallCache,
    *,
    depth: int = DEPTH,
    rrf_k: int = DEFAULT_RRF_K,
) -> list[HybridHit]:
    """``hits`` (best first) with the first ``depth`` reordered by fusing their order with
    their late-interaction score; each hit's ``ranks`` gains ``rerank``."""
    head, tail = list(hits[:depth]), list(hits[depth:])
    if len(head) < 2:
        return list(hits)
    vectors = _token_vectors([_text(hit) for hit in head], embedder, cache)
    question = embedder.token_vectors([query])[0]
    scores = [float((question @ doc.T.astype(question.dtype)).max(axis=1).mean()) if len(doc) else 0.0
              for doc in vectors]  # fmt: skip
    by_score = sorted(range(len(head)), key=lambda i: -scores[i])
    reranked = {i: rank for rank, i in enumerate(by_score, start=1)}
    fused = {i: 1.0 / (rrf_k + i + 1) + 1.0 / (rrf_k + reranked[i]) for i in range(len(head))}
    order = sorted(range(len(head)), key=lambda i: (-fused[i], i))
    return [HybridHit(head[i], fused[i], {**head[i].ranks, RERANKED: reranked[i]}, head[i].dense_score)
            for i in order] + tail  # fmt: skip


def _text(hit: HybridHit) -> str:
    value = hit.value
    return str(value.get("content") or value.get("text") or "")


def _token_vectors(texts: Sequence[str], embedder: TokenEmbedder, cache: RecallCache) -> list[np.ndarray]:
    with cache.lock:
        kept = cache.token_vectors
        found = {text: kept[text] for text in texts if text in kept}
        for text in found:
            kept.move_to_end(text)
    missing = list(dict.fromkeys(text for text in texts if text not in found))
    if missing:
        made = embedder.token_vectors(missing)
        with cache.lock:
            for text, rows in zip(missing, made, strict=True):
                found[text] = kept[text] = rows.astype("float16")
            while len(kept) > CACHE_SIZE:
                kept.popitem(last=False)
    return [found[text] for text in texts]
