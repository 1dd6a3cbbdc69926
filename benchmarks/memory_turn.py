"""Turn time with long-term memory ÷ without, on the shipped model, side by side in one run.

Two Agents share one loaded model: one with memory (embedded Chroma seeded with N earlier
memories, shipped MiniLM), one without. Turns alternate between them with the same messages,
each in a fresh thread, and the median of the per-pair ratios is reported (goal ≤ 1.10), with
the time spent in recall and remember themselves.

Run: ``python benchmarks/memory_turn.py [--pairs 10] [--seed-memories 1000] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentmm.graphs.agent import Agent
from agentmm.llm import ChatLlamaCpp
from agentmm.memory.conversation import remember_turn, scope
from agentmm.models import resolve_model
from agentmm.settings import load_settings

MEASURES = ("memory_s", "recall_s", "remember_s", "recalled")
TOPICS = ["sister", "garden", "boat", "cello", "Lisbon", "cat", "job", "marathon", "book", "coffee"]


def seed(agent: Agent, count: int) -> None:
    store = agent.store
    assert store is not None
    when = datetime.now(UTC)
    for i in range(0, count, 2):
        topic = TOPICS[i % len(TOPICS)]
        remember_turn(store, scope("local", None), thread_id=f"old{i}", turn=1, when=when,
                      exchange=[("user", "User", f"Note {i}: my {topic} story number {i}."),
                                ("assistant", "assistant", f"I'll remember your {topic} story {i}.")])  # fmt: skip


def timed_turn(agent: Agent, text: str) -> dict[str, Any]:
    started = time.perf_counter()
    result = agent.chat(text)
    total = time.perf_counter() - started
    timings = result.trace["timings"]
    recall_s, remember_s = timings.get("recall_s", 0.0), timings.get("remember_s", 0.0)
    return {"total_s": total, "memory_s": recall_s + remember_s, "recall_s": recall_s, "remember_s": remember_s,
            "recalled": len(result.trace.get("recalled", []))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--seed-memories", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = ChatLlamaCpp(model_path=str(resolve_model("smollm2").path), n_ctx=4096, max_tokens=args.max_tokens,
                         temperature=0.0, seed=1)  # fmt: skip
    base = {"n_ctx": 4096, "max_tokens": args.max_tokens}
    with_memory = Agent(load_settings(data_dir=Path(tempfile.mkdtemp()), memory=True, **base), model=model)
    without = Agent(load_settings(data_dir=Path(tempfile.mkdtemp()), memory=False, **base), model=model)
    started = time.perf_counter()
    seed(with_memory, args.seed_memories)
    seed_s = time.perf_counter() - started
    timed_turn(with_memory, "warm up")  # loads the embedder and the model outside the timed runs
    timed_turn(without, "warm up")
    rows = []
    for i in range(args.pairs):
        text = f"Tell me something about my {TOPICS[i % len(TOPICS)]}."
        off = timed_turn(without, text)
        on = timed_turn(with_memory, text)
        rows.append({"without_s": off["total_s"], "with_s": on["total_s"], **{k: on[k] for k in MEASURES}})
    runtime = getattr(getattr(with_memory.store, "embeddings", None), "runtime", None)
    with_memory.close()
    without.close()
    results = {
        "seed_memories": args.seed_memories,
        "seed_s": round(seed_s, 2),
        "pairs": args.pairs,
        "without_memory_s_median": round(statistics.median(r["without_s"] for r in rows), 4),
        "with_memory_s_median": round(statistics.median(r["with_s"] for r in rows), 4),
        "ratio_of_totals_median": round(statistics.median(r["with_s"] / r["without_s"] for r in rows), 4),
        "recall_plus_remember_s_median": round(statistics.median(r["memory_s"] for r in rows), 4),
        "recall_s_median": round(statistics.median(r["recall_s"] for r in rows), 4),
        "remember_s_median": round(statistics.median(r["remember_s"] for r in rows), 4),
        "embedder_runtime": runtime,
        # Replies differ in length with and without recalled context, so the overhead is also
        # taken from the nodes' own timings: (turn without memory + recall + remember) / turn.
        "overhead_ratio_median": round(
            statistics.median((r["without_s"] + r["memory_s"]) / r["without_s"] for r in rows), 4
        ),
        "recalled_per_turn_median": statistics.median(r["recalled"] for r in rows),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
