"""Benchmark the memory store: recall latency and ingest throughput, with the shipped MiniLM.

    python benchmarks/memory_store.py [--sizes 1000,10000,100000] [--queries 200]

For each size N, N synthetic memories go into one (user, persona) scope of a fresh embedded
store, and the run prints:

- ingest: items/s of raw ``SentenceTransformer.encode`` (torch) on the texts, of the
  embedder's own runtime (onnxruntime unless ``--backend torch``) on the same texts, and of
  ``store.batch`` puts of them (embedding + Chroma writes), side by side: all N puts in one
  batch, as ``agentmm memory import`` and ``eval memory`` write (the store embeds the next
  chunk while it writes the last), and 256 puts a batch, a batch too small to overlap;
- recall: p50/p95 of ``store.search(scope, query=...)`` *including* embedding the query, and
  of ``hybrid_search`` (dense + BM25 fused) right after a put, as a turn recalls after the
  previous one remembered; plus the first hybrid call, which reads and indexes the scope.

Sizes above ``--encode-limit`` (default 10,000) do not embed every text: encoding 100k texts
takes over 5 minutes on a 2-core CPU. Their vectors are reused from the encoded pool with a
little noise (distinct vectors, same geometry), the ingest column then times Chroma writes
only, and the row says so. Queries are always embedded for real.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from langchain_core.embeddings import Embeddings
from langgraph.store.base import PutOp

from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.embeddings import SentenceTransformerEmbeddings
from agentmm.memory.retrieval import hybrid_search

SCOPE = ("memories", "bench-user", "bench-persona")
NAMES = [
    "Alice",
    "Bruno",
    "Chen",
    "Dana",
    "Emeka",
    "Farah",
    "Goran",
    "Hana",
    "Ivo",
    "Jun",
    "Kira",
    "Luis",
    "Mona",
    "Nils",
    "Omar",
    "Pia",
    "Quinn",
    "Rosa",
    "Sami",
    "Tove",
]
VERBS = [
    "likes",
    "hates",
    "visited",
    "painted",
    "cooked",
    "bought",
    "lost",
    "found",
    "studied",
    "remembers",
    "fixed",
    "sold",
    "borrowed",
    "wrote",
]
THINGS = [
    "green tea",
    "an old bicycle",
    "a red umbrella",
    "the piano",
    "a mystery novel",
    "sourdough bread",
    "a chess set",
    "the garden",
    "a silver ring",
    "the sailing boat",
    "a violin",
    "spicy ramen",
    "a vintage camera",
    "the cabin",
    "a wool scarf",
    "mango ice cream",
]
PLACES = [
    "Lisbon",
    "Kyoto",
    "Nairobi",
    "Oslo",
    "Lima",
    "Hanoi",
    "Quebec",
    "Tbilisi",
    "Perth",
    "Cusco",
    "Bergen",
    "Porto",
    "Dakar",
    "Seoul",
]
WHEN = [
    "last spring",
    "every Sunday",
    "as a child",
    "on her birthday",
    "during the storm",
    "after work",
    "in 2019",
    "at midnight",
]


def make_texts(n: int, seed: int) -> list[str]:
    """Synthetic memories: varied, mostly unique, with words BM25 and MiniLM can both use."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(THINGS)} in {rng.choice(PLACES)} {rng.choice(WHEN)}."
        for _ in range(n)
    ]


class PooledEmbeddings(Embeddings):
    """Vectors looked up by text (for sizes too large to encode), queries embedded for real."""

    def __init__(self, vectors: dict[str, list[float]], real: Embeddings) -> None:
        self.vectors = vectors
        self.real = real

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vectors[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.real.embed_query(text)


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ingest(store: ChromaStore, texts: list[str], chunk: int | None = None) -> float:
    """Seconds to put ``texts``: in one batch, or ``chunk`` puts a batch."""
    start = time.perf_counter()
    chunk = chunk or len(texts)
    for i in range(0, len(texts), chunk):
        store.batch([PutOp(SCOPE, f"m{i + j}", {"text": t}) for j, t in enumerate(texts[i : i + chunk])])
    return time.perf_counter() - start


def ingest_cell(rate: float, st_rate: float | None, runtime_rate: float | None, runtime: str) -> str:
    if st_rate is None or runtime_rate is None:
        return f"{rate:.0f} (Chroma writes only)"
    return f"{rate:.0f} ({rate / st_rate:.2f} of ST, {rate / runtime_rate:.2f} of {runtime})"


def timed(calls: Sequence[str], fn: Callable[[str], object]) -> list[float]:
    """Milliseconds of each call."""
    samples = []
    for call in calls:
        start = time.perf_counter()
        fn(call)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def run(sizes: list[int], n_queries: int, n_hybrid: int, encode_limit: int, threads: int | None, backend: str) -> None:
    cache = tempfile.TemporaryDirectory(prefix="agentmm-bench-embedders-")
    embedder = SentenceTransformerEmbeddings(threads=threads, backend=backend, cache_dir=cache.name)
    t0 = time.perf_counter()
    embedder.load()
    load_s = time.perf_counter() - t0
    model = embedder.sentence_transformer()
    import torch

    print(
        f"embedder runtime {embedder.runtime}; first load (incl. imports and any ONNX export) {load_s:.1f} s; "
        f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}",
        file=sys.stderr,
    )
    model.encode(make_texts(64, 0), batch_size=64)  # warm up
    embedder.embed_documents(make_texts(64, 0))

    import numpy as np

    pool: dict[str, list[float]] = {}
    print(
        f"| memories | raw ST encode (torch) items/s | raw {embedder.runtime} encode items/s "
        "| store ingest, one batch, items/s | store ingest, 256 a batch, items/s "
        "| dense recall p50 / p95 ms | hybrid p50 / p95 ms (a put before each) | hybrid first call ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
    for n in sizes:
        texts = make_texts(n, seed=n)
        st_rate = runtime_rate = None
        index_embed: Embeddings = embedder
        if n <= encode_limit:
            start = time.perf_counter()
            model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True)
            st_rate = n / (time.perf_counter() - start)
            start = time.perf_counter()
            vectors = embedder.embed_documents(texts)
            runtime_rate = n / (time.perf_counter() - start)
            pool.update(zip(texts, vectors, strict=True))
        else:
            if not pool:
                extra = make_texts(encode_limit, seed=-1)
                pool.update(zip(extra, embedder.embed_documents(extra), strict=True))
            rng = np.random.default_rng(n)
            base = np.array(list(pool.values()), dtype=np.float32)
            picks = base[rng.integers(0, len(base), size=n)] + rng.normal(0, 0.02, size=(n, base.shape[1]))
            picks /= np.linalg.norm(picks, axis=1, keepdims=True)
            index_embed = PooledEmbeddings(dict(zip(texts, picks.tolist(), strict=False)), embedder)

        with tempfile.TemporaryDirectory() as tmp:
            index = {"dims": 384, "embed": index_embed, "fields": ["text"]}
            with ChromaStore.from_path(Path(tmp) / "chunked", index=index) as store:  # type: ignore[arg-type]
                chunked_s = ingest(store, texts, chunk=256)
            with ChromaStore.from_path(Path(tmp) / "store", index=index) as store:  # type: ignore[arg-type]
                ingest_s = ingest(store, texts)
                rng_q = random.Random(7)
                queries = [f"what does {rng_q.choice(NAMES)} do with {rng_q.choice(THINGS)}?" for _ in range(n_queries)]
                dense = timed(queries, lambda q, s=store: s.search(SCOPE, query=q, limit=8))
                cold = timed(queries[:1], lambda q, s=store: hybrid_search(s, SCOPE, q, k=8))[0]
                hybrid = []
                for i, (query, text) in enumerate(zip(queries[:n_hybrid], make_texts(n_hybrid, -n), strict=False)):
                    store.put(SCOPE, f"new{i}", {"text": text})  # a turn remembers, then the next recalls
                    hybrid += timed([query], lambda q, s=store: hybrid_search(s, SCOPE, q, k=8))
        rates = (n / ingest_s, n / chunked_s)
        store_cells = " | ".join(ingest_cell(rate, st_rate, runtime_rate, embedder.runtime) for rate in rates)
        raw_cells = "— | —" if st_rate is None or runtime_rate is None else f"{st_rate:.0f} | {runtime_rate:.0f}"
        print(
            f"| {n:,} | {raw_cells} | {store_cells} | {percentile(dense, 0.5):.1f} / {percentile(dense, 0.95):.1f} "
            f"| {percentile(hybrid, 0.5):.1f} / {percentile(hybrid, 0.95):.1f} | {cold:.0f} |",
            flush=True,
        )
    print(
        f"\nrecall = embed one query with MiniLM + search one scope holding all N memories, top 8; "
        f"{n_queries} dense and {n_hybrid} hybrid queries per size"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated numbers of memories")
    parser.add_argument("--queries", type=int, default=200, help="dense recall queries per size")
    parser.add_argument("--hybrid-queries", type=int, default=50, help="hybrid recall queries per size")
    parser.add_argument("--encode-limit", type=int, default=10_000, help="largest size whose texts are all encoded")
    parser.add_argument("--threads", type=int, default=None, help="embedder threads (default: torch's / the cores)")
    parser.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"], help="embedder runtime")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    run(sizes, args.queries, args.hybrid_queries, args.encode_limit, args.threads, args.backend)


if __name__ == "__main__":
    main()
