"""Recall per turn over an incremental store vs a store without the protocol (the full read).

    python benchmarks/recall_fallback.py [--sizes 1000,10000] [--turns 30]

Hybrid recall keeps each scope's corpus (texts + BM25 index) in a cache. Over an
``IncrementalStore`` (the embedded ``ChromaStore``) a turn re-reads only the items written since
the last one; over any other LangGraph store it reads the whole scope again (``recall_path``
"full read"). For each size N, one scope holding N memories is put in three stores, side by
side in one run, turns interleaved so they share the machine's noise:

- ``incremental``: the embedded ``ChromaStore``;
- ``full read (Chroma)``: the same Chroma store behind a plain ``BaseStore`` that forwards
  ``batch``/``abatch`` and hides the protocol: the same data and vectors, only the path differs;
- ``full read (InMemoryStore)``: LangGraph's own in-memory store with the same embedder (its
  full read is a walk over a dict, not a Chroma read), with the recall node's ``RecallCache``.

With ``--postgres`` two more, in a real Postgres with pgvector started for the run
(``tests/pg_server.py``'s ``PostgresServer``, on loopback):

- ``incremental (PostgresMemoryStore)``: agentmm's Postgres store (``store_url``): the change
  log says what each turn must re-read, pgvector's HNSW index answers dense search by id;
- ``full read (Postgres behind BaseStore)``: the same store behind the forwarding ``BaseStore``,
  which is what LangGraph's plain ``PostgresStore`` gets (its own search for dense, the scope
  re-read for BM25).

Each turn writes the turn's two messages (one batch, as ``remember_turn`` does) and then recalls
with ``conversation.recall`` (k=5, as the graph's recall node calls it); the recall is timed.
Vectors for the N memories are computed once and shared by the three stores; queries and the
turns' messages are embedded for real. Printed: median and p90 ms per store, the ratio of
medians to the incremental path, and each store's first (cold) recall.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langgraph.store.base import BaseStore, Op, PutOp, Result
from langgraph.store.memory import InMemoryStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests.pg_server for --postgres
from memory_store import NAMES, THINGS, PooledEmbeddings, make_texts, percentile

from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.conversation import recall
from agentmm.memory.embeddings import SentenceTransformerEmbeddings
from agentmm.memory.incremental import recall_path
from agentmm.memory.retrieval import RecallCache

SCOPE = ("memories", "bench-user", "bench-persona")


class Forwarding(BaseStore):
    """Another store's items behind LangGraph's plain ``BaseStore`` API: no incremental protocol."""

    def __init__(self, inner: BaseStore) -> None:
        self.inner = inner
        self.index_config = getattr(inner, "index_config", None)

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return self.inner.batch(ops)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await self.inner.abatch(ops)


def fill(store: BaseStore, texts: list[str], chunk: int = 256) -> None:
    for i in range(0, len(texts), chunk):
        store.batch([PutOp(SCOPE, f"m{i + j}", {"text": t}) for j, t in enumerate(texts[i : i + chunk])])


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()  # fmt: skip
        return out.stdout.strip() + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def run(sizes: list[int], turns: int, threads: int | None, postgres: bool = False) -> None:
    import contextlib

    with tempfile.TemporaryDirectory(prefix="agentmm-bench-") as tmp, contextlib.ExitStack() as stack:
        server = None
        if postgres:
            from tests.pg_server import PostgresServer

            server = stack.enter_context(PostgresServer())
        embedder = SentenceTransformerEmbeddings(threads=threads, cache_dir=Path(tmp) / "embedders")
        embedder.load()
        print(f"commit {commit()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.machine()}, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; embedder {embedder.runtime}",
              flush=True)  # fmt: skip
        print("\n| memories | store | path | recall median ms | p90 ms | ÷ incremental (ratio of medians) "
              "| first recall ms |")  # fmt: skip
        print("|---:|---|---|---:|---:|---:|---:|", flush=True)
        for n in sizes:
            texts = list(dict.fromkeys(make_texts(3 * n, seed=n)))[:n]  # distinct: InMemoryStore dedups what it embeds
            rng = random.Random(n)
            messages = [(f"{rng.choice(NAMES)} told me about {rng.choice(THINGS)} today.", f"How nice, more {i}.")
                        for i in range(turns + 1)]  # fmt: skip
            queries = [f"what does {rng.choice(NAMES)} do with {rng.choice(THINGS)}?" for _ in range(turns + 1)]
            started = time.perf_counter()
            extra = [t for pair in messages for t in pair]
            pool = dict(zip(texts + extra, embedder.embed_documents(texts + extra), strict=True))
            embed_s = time.perf_counter() - started
            index: Any = {"dims": 384, "embed": PooledEmbeddings(pool, embedder), "fields": ["text"]}
            chroma = ChromaStore.from_path(Path(tmp) / f"store-{n}", index=index)
            fill(chroma, texts)
            in_memory = InMemoryStore(index=index)
            fill(in_memory, texts)
            stores: dict[str, tuple[BaseStore, RecallCache | None]] = {
                "incremental (ChromaStore)": (chroma, None),
                "full read (Chroma behind BaseStore)": (Forwarding(chroma), None),
                "full read (InMemoryStore)": (in_memory, RecallCache()),
            }
            pg = None
            if server is not None:
                from agentmm.memory.postgres_store import PostgresMemoryStore

                pg = PostgresMemoryStore.from_url(server.new_database(), index=index)
                fill(pg, texts)
                stores["incremental (PostgresMemoryStore)"] = (pg, None)
                stores["full read (Postgres behind BaseStore)"] = (Forwarding(pg), None)
            times: dict[str, list[float]] = {name: [] for name in stores}
            first: dict[str, float] = {}
            for turn, ((said, reply), query) in enumerate(zip(messages, queries, strict=True)):
                for name, (store, cache) in stores.items():
                    prefix = name.split()[0] + name.split()[-1]
                    store.batch([PutOp(SCOPE, f"{prefix}:{turn}:user", {"text": said}),
                                 PutOp(SCOPE, f"{prefix}:{turn}:assistant", {"text": reply})])  # fmt: skip
                    t0 = time.perf_counter()
                    recall(store, [SCOPE], query, k=5, cache=cache)
                    elapsed = (time.perf_counter() - t0) * 1000
                    if turn == 0:
                        first[name] = elapsed  # the cold call reads and indexes the scope on every path
                    else:
                        times[name].append(elapsed)
            base = statistics.median(times["incremental (ChromaStore)"])
            for name, (store, _) in stores.items():
                median = statistics.median(times[name])
                print(f"| {n:,} | {name} | {recall_path(store)} | {median:.1f} | {percentile(times[name], 0.9):.1f} "
                      f"| {median / base:.2f} | {first[name]:.0f} |", flush=True)  # fmt: skip
            chroma.close()
            if pg is not None:
                pg.close()
            print(f"<!-- {n:,}: embedded {len(pool):,} texts in {embed_s:.1f} s -->", flush=True)
        print(f"\n{turns} turns per store and size after a cold first one; each turn puts 2 memories, then "
              "recall(k=5) is timed (query embedding included)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated numbers of memories")
    parser.add_argument("--turns", type=int, default=30, help="timed turns per store and size")
    parser.add_argument("--threads", type=int, default=None, help="embedder threads")
    parser.add_argument("--postgres", action="store_true", help="add the Postgres store (starts a local Postgres)")
    args = parser.parse_args()
    run([int(s) for s in args.sizes.split(",")], args.turns, args.threads, postgres=args.postgres)


if __name__ == "__main__":
    main()
