"""Scope isolation: a search under one (user, persona) never returns another scope's memories."""

from __future__ import annotations

import random
from collections import Counter

from langgraph.store.base import PutOp, SearchOp

from agentmm.memory.chroma_store import ChromaStore

# Labels that are prefixes, case variants or near-twins of each other, where a string-prefix
# or case-insensitive scope would leak.
NAMESPACES = [
    ("memories", "u1", "alice"),
    ("memories", "u1", "alice2"),
    ("memories", "u10", "alice"),
    ("memories", "u11", "alice"),
    ("memories", "U1", "alice"),
    ("memories", "u1-", "alice"),
    ("memories", "u2", "bob"),
    ("memories", "u2", "bo"),
    ("memories", "u", "alice"),
    ("memoriesx", "u1", "alice"),
]
WORDS = ["tea", "garden", "sister", "lisbon", "piano", "rain", "cat", "train", "birthday", "coffee", "mountain", "book"]
PER_SCOPE = 30


# Every scope with every filter at these (limit, offset) pairs: one hit, a page past the first
# few, more than the scope holds, and that from an offset (160 searches). It was a thousand random
# draws from the same scopes and filters with limits 1-40 and offsets 0-5 (~10 s): the limits and
# offsets between these are no case of their own, and a draw could miss a scope-filter pair.
PAGES = [(1, 0), (5, 3), (40, 0), (40, 5)]
FILTERS = [None, *({"topic": topic} for topic in WORDS[:3])]


def test_queries_in_every_scope_stay_in_scope(vector_store: ChromaStore) -> None:
    rng = random.Random(1234)
    puts = []
    for ns in NAMESPACES:
        for i in range(PER_SCOPE):
            text = " ".join(rng.choice(WORDS) for _ in range(6))
            puts.append(PutOp(ns, f"m{i}", {"text": text, "owner": "/".join(ns), "topic": rng.choice(WORDS[:3])}))
    vector_store.batch(puts)

    ops = [SearchOp(ns, filter=flt, limit=limit, offset=offset,
                    query=" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))))
           for ns in NAMESPACES for flt in FILTERS for limit, offset in PAGES]  # fmt: skip

    foreign = 0
    returned = 0
    per_scope: Counter[tuple[str, ...]] = Counter()
    for op, results in zip(ops, vector_store.batch(ops), strict=True):
        expected_count = min(op.limit, max(0, PER_SCOPE - op.offset)) if op.filter is None else None
        if expected_count is not None:
            assert len(results) == expected_count
        for hit in results:
            returned += 1
            per_scope[hit.namespace] += 1
            if hit.namespace != op.namespace_prefix or hit.value["owner"] != "/".join(op.namespace_prefix):
                foreign += 1
            if op.filter:
                assert hit.value["topic"] == op.filter["topic"]
    assert foreign == 0
    assert returned > 1000
    assert set(per_scope) == set(NAMESPACES)


def test_prefix_search_includes_nested_scopes_only(vector_store: ChromaStore) -> None:
    vector_store.put(("memories", "u1"), "root", {"text": "tea"})
    vector_store.put(("memories", "u1", "alice"), "a", {"text": "tea"})
    vector_store.put(("memories", "u10", "alice"), "b", {"text": "tea"})
    hits = vector_store.search(("memories", "u1"), query="tea", limit=10)
    assert sorted((h.namespace, h.key) for h in hits) == [
        (("memories", "u1"), "root"),
        (("memories", "u1", "alice"), "a"),
    ]
