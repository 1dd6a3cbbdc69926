"""A second recall round for questions whose answer joins two memories (multi-hop).

"What does Yara's brother who lives in Kyoto do for work?" finds "My brother Emil lives in Kyoto
now" but not "Emil just started a new job as a librarian", which shares no word with the
question but the name the first memory brings. So the names in the best first-round hits that
the question does not already hold (capitalised words, less the speakers' names and common
sentence openers) are added to the question for a second hybrid search, in which BM25 counts as
much as dense search (the names are exact words), and the two rankings are fused by reciprocal
rank. It costs a second search (about the same time again), which is why it is opt-in
(``memory_rounds = 2``).

Chosen on the development set (``benchmarks/memory_devset.py``, 280 questions; BENCHMARKS.md):
names from the best hit only, both rounds weighted alike and BM25 at full weight in the second
gave multi-hop Recall@10 52.5 -> 66.7 and overall 83.2 -> 85.9 (open-domain 86.3 -> 83.8);
names from the best three hits, or the second round at 0.6, or BM25 at a quarter in it, gained
less (overall 83.9-85.7), the three-hit variants costing open-domain questions 5 points. Within
the 200 tokens compose places, the gain is small (recall@200tok 81.1 -> 81.4; multi-hop 49.2 ->
53.3): the second round's finds mostly rank below the six memories that fit. Query p50 17.7 ->
22.2 ms, p95 27.5 -> 46.7 ms (2,880 memories, under load).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from langgraph.store.base import BaseStore

from agentmm.memory.retrieval import DENSE, LEXICAL, HybridHit, fuse, hybrid_search

FIRST_ROUND = "round1"
SECOND_ROUND = "round2"
ROUND_WEIGHTS = {FIRST_ROUND: 1.0, SECOND_ROUND: 1.0}
SECOND_ROUND_RETRIEVERS = {DENSE: 1.0, LEXICAL: 1.0}
_WORD = re.compile(r"\b[A-Z][a-zA-Z'-]{2,}\b")
_OPENER_WORDS = """The This That These Those There Then When What Where Which Who Why How And But Also Just
    Honestly Well Funny Anyway Yes Yeah Sure Haha Okay Thanks Sorry Look Today Yesterday Tomorrow
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June
    July August September October November December I'm I've I'll I'd It's We've We're You're My Our
    Your His Her Their"""
_OPENERS = frozenset(_OPENER_WORDS.split())


def linked_names(hits: Sequence[Any], query: str, limit: int = 3) -> list[str]:
    """Names in ``hits`` (best first) that ``query`` does not mention, at most ``limit``."""
    asked = {w.lower().removesuffix("'s") for w in re.findall(r"[A-Za-z'-]+", query)}
    names: dict[str, None] = {}
    for hit in hits:
        value = hit.value
        speakers = {str(value.get("speaker") or "").lower()}
        text = str(value.get("content") or value.get("text") or "")
        for word in _WORD.findall(text):
            bare = word.removesuffix("'s")
            if bare in _OPENERS or bare.lower() in asked or bare.lower() in speakers:
                continue
            names.setdefault(bare)
            if len(names) >= limit:
                return list(names)
    return list(names)


def two_round_search(
    store: BaseStore, namespace: tuple[str, ...], query: str, k: int = 8, *, seeds: int = 1, **options: Any
) -> list[HybridHit]:
    """``hybrid_search``, then a second search with the names the ``seeds`` best hits bring,
    the two fused (``options`` go to both searches). Each hit keeps the retrievers that found it
    in either round, at their best rank, and its dense similarity, so callers read it as a
    one-round hit."""
    first = hybrid_search(store, namespace, query, k=k, **options)
    names = linked_names(first[:seeds], query)
    if not names:
        return first
    second_options = {**options, "weights": SECOND_ROUND_RETRIEVERS}
    second = hybrid_search(store, namespace, f"{query} {' '.join(names)}", k=k, **second_options)
    ranks: dict[tuple[tuple[str, ...], str], dict[str, int]] = {}
    dense: dict[tuple[tuple[str, ...], str], float] = {}
    for hit in [*first, *second]:
        ref = (hit.namespace, hit.key)
        merged = ranks.setdefault(ref, {})
        for name, rank in hit.ranks.items():
            merged[name] = min(rank, merged.get(name, rank))
        if hit.dense_score is not None:
            dense.setdefault(ref, hit.dense_score)
    fused = fuse({FIRST_ROUND: first, SECOND_ROUND: second}, k, weights=ROUND_WEIGHTS)
    return [HybridHit(hit, float(hit.score or 0.0), ranks[(hit.namespace, hit.key)],
                      dense.get((hit.namespace, hit.key))) for hit in fused]  # fmt: skip
