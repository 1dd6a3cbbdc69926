"""Folds benchmark: how often a small context folds old turns into the rolling summary.

A scripted chat (a newcomer to a harbour town talks to Nora Quill, memory on) on the shipped
model at a small ``n_ctx``, each turn's window facts from its trace: whether it folded
(``budget.folded_this_turn``), whose recalled blocks left the prompt instead
(``budget.recalled_dropped_this_turn``), the history's size, the prompt tokens taken from the
KV cache, the summary's generation time, and the turn's wall time. A fold costs a summary
generation (19-46 s on 2 loaded cores at n_ctx 1024) and a prefill from the summary on; a
block leaving costs the prefill only. The last line asks back a fact of the first.

Run: ``python benchmarks/folds.py [--turns 20] [--n-ctx 1024] [--max-tokens 96] [--then LINE ...]
[--json out.json]`` (a fresh data dir each run; set ``AGENTMM_CACHE_DIR`` to re-use the embedder's
export). ``--then`` asks more lines after the scripted ones ("What do I work as?" asks back the
third line's fact late, when earlier turns' blocks hold the window's memory budget): they are
reported apart (``then``), so the summary of the scripted turns stays comparable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentmm.graphs.agent import Agent
from agentmm.memory.selection import OVER_WINDOW
from agentmm.models import SHIPPED_MODELS

LINES = [
    "Hi Nora, I'm Sam. I just moved to the harbour town last week.", "What do you do for a living?",
    "I work as a carpenter, mostly boats.", "My sister Lena is visiting on Saturday.", "Do you like the sea?",
    "Tell me about the lighthouse on the north cliff.", "Who keeps it lit these days?",
    "I found an old map in my attic yesterday.", "It shows a cove east of the pier.",
    "Should we go look for it together?", "What should I bring?", "I have a lantern and some rope.",
    "My dog Biscuit will come too.", "Do you remember my sister's name?", "What day is she coming?",
    "Let's meet at the bakery at nine.", "Do you know the baker, old Tomas?", "He said the cove floods at high tide.",
    "When is high tide tomorrow?", "I'm a bit nervous about the cliffs.", "Have you climbed them before?",
    "Tell me a story about the town.", "That's spooky. Is it true?", "What's your favourite food?",
    "I make a good fish stew.", "Maybe I'll cook for you and Lena.", "What do you think Lena would like?",
    "She loves books, like you.", "What book would you give her?", "I'll buy it at the market.",
    "Where is the market?", "Is it open on Sundays?", "Let's plan the cove trip again.",
    "What did we say we'd bring?", "And who is coming with us?", "Great. What time do we meet?",
    "I'm looking forward to it.", "Tell me something about yourself I don't know.", "That's lovely.",
]  # fmt: skip
LAST = "By the way, do you remember my name?"


def chat(turns: int, n_ctx: int, max_tokens: int, data_dir: Path, then: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One scripted chat of ``turns`` turns (the last asks back the first line's fact), then
    ``then``'s lines."""
    lines = [*LINES[: turns - 1], LAST, *then]
    rows = []
    with Agent(model=str(SHIPPED_MODELS["smollm2"].path()), persona="Nora Quill", n_ctx=n_ctx,
               max_tokens=max_tokens, seed=3, data_dir=data_dir) as agent:  # fmt: skip
        thread = None
        for i, line in enumerate(lines):
            started = time.perf_counter()
            result = agent.chat(line, thread)
            thread, trace = result.thread_id, result.trace
            budget, cache = trace["budget"], trace.get("cache") or {}
            rows.append({"turn": i + 1, "wall_s": round(time.perf_counter() - started, 2),
                         "folded": budget["folded_this_turn"],
                         "recalled_dropped": budget.get("recalled_dropped_this_turn", 0),
                         "recalled_dropped_for_memories": budget.get("recalled_dropped_for_memories", 0),
                         "recall_freed": (trace.get("recall_window") or {}).get("freed", 0),
                         "let_in": len((trace.get("recall_window") or {}).get("let_in", [])),
                         "dropped_over_window": sum(1 for d in trace.get("recall_dropped", [])
                                                    if d.get("reason") == OVER_WINDOW),
                         "history_messages": budget["history_messages"],
                         "parts": {p["part"]: p["tokens"] for p in trace["prompt_parts"]},
                         "prompt_tokens": cache.get("prompt_tokens", 0), "reused_tokens": cache.get("reused_tokens", 0),
                         "summarize_s": trace["timings"].get("summarize_s"),
                         "recalled": [m["text"] for m in trace.get("recalled", [])],
                         "reply": result.reply})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    folds = [row for row in rows if row["folded"]]
    return {
        "turns": len(rows),
        "folds": len(folds),
        "fold_turns": [row["turn"] for row in folds],
        "folded_messages": [row["folded"] for row in folds],
        "turns_with_recalled_blocks_dropped": sum(1 for row in rows if row["recalled_dropped"]),
        "of_them_for_memories": sum(1 for row in rows if row.get("recalled_dropped_for_memories")),
        "turns_recall_took_their_room": [row["turn"] for row in rows if row.get("recall_freed")],
        "dropped_over_window": sum(row.get("dropped_over_window", 0) for row in rows),
        "memories_placed": sum(len(row["recalled"]) for row in rows),
        "summarize_s_total": round(sum(row["summarize_s"] or 0 for row in rows), 1),
        "wall_s_mean": round(statistics.mean(row["wall_s"] for row in rows), 2),
        "wall_s_median": round(statistics.median(row["wall_s"] for row in rows), 2),
        "prefilled_tokens": sum(row["prompt_tokens"] - row["reused_tokens"] for row in rows),
        "last_recalled": rows[-1]["recalled"],
        "last_reply": rows[-1].get("reply", ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--n-ctx", type=int, default=1024)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--then", action="append", default=[], metavar="LINE", help="a line asked after the script")
    parser.add_argument("--json", type=Path, help="write the per-turn rows and the summary here")
    args = parser.parse_args()
    turns = min(args.turns, len(LINES) + 1)
    with tempfile.TemporaryDirectory(prefix="agentmm-folds-") as data:
        rows = chat(turns, args.n_ctx, args.max_tokens, Path(data), args.then)
    report = {"summary": summarise(rows[:turns]), "per_turn": rows[:turns]}
    if args.then:
        report["then"] = rows[turns:]
    print(json.dumps(report["summary"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
