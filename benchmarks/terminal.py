"""Terminal benchmark: Enter to first streamed character through the real REPL, against the
same turn through ``Agent.stream``, side by side in one run (goal: ratio ≤ 1.05).

Two comparisons come out of one run. Side by side: the REPL's Enter-to-first-character ÷
``Agent.stream``'s first chunk for the same question in this process (medians over pairs).
Same turn: each REPL turn's Enter-to-first-character ÷ that very turn's own ``ttft_s`` as the
agent measured it inside the REPL process (read back with ``/why``), which cancels out the
machine's load, since both numbers come from the same generation.

The REPL runs as ``agentmm chat`` in a pseudo-terminal (pexpect), exactly as a person uses
it: the question is typed, the clock starts as Enter is written to the terminal, and stops
when the first printable character after prompt_toolkit accepts the line (it turns bracketed
paste off then) reaches the reading end. The library side times ``Agent.stream(question)``
from the call to its first chunk, in this process. Both sides load the same model with the
same settings (temperature 0, fixed seed), both are warmed up first, every question starts a
new thread on both sides (``/new`` in the REPL), and the sides alternate which goes first.

Run: ``python benchmarks/terminal.py [--pairs 8] [--max-tokens 24] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pexpect
from turn import QUESTIONS  # the same questions as the turn benchmark (benchmarks/ is on sys.path)

from agentmm.graphs.agent import Agent
from agentmm.settings import load_settings

PROMPT_READY, LINE_ACCEPTED = "\x1b[?2004h", "\x1b[?2004l"
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


class ReplUnderTest:
    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.child = pexpect.spawn(sys.executable, ["-m", "agentmm.cli", "chat", *args], env=env,
                                   dimensions=(40, 120), encoding="utf-8", timeout=300)  # fmt: skip
        self.child.delaybeforesend = None  # pexpect sleeps 50 ms before each write by default
        self.child.expect_exact(PROMPT_READY)

    def command(self, line: str) -> None:
        self.child.send(line + "\r")
        self.child.expect_exact(LINE_ACCEPTED)
        self.child.expect_exact(PROMPT_READY)

    def first_char_s(self, question: str) -> tuple[float, str]:
        """Seconds from Enter to the first printable character of the reply, and that character."""
        self.child.send(question)
        time.sleep(0.3)  # let the editor echo and render the typed line, as when a person types
        self._drain()
        started = time.perf_counter()
        self.child.send("\r")
        seen = ""
        while True:
            seen += self.child.read_nonblocking(1 << 16, timeout=60)
            after = seen.split(LINE_ACCEPTED, 1)
            if len(after) == 2:
                text = ESCAPES.sub("", after[1]).strip()
                if text:
                    elapsed = time.perf_counter() - started
                    break
        self.child.expect_exact(PROMPT_READY)
        return elapsed, text[0]

    def _drain(self) -> None:
        """Read what the editor has written so far, so the clock starts on a quiet terminal."""
        while True:
            try:
                self.child.read_nonblocking(1 << 16, timeout=0.05)
            except pexpect.TIMEOUT:
                return

    def turn_ttft_s(self) -> float:
        """The last turn's ``ttft_s`` as ``Agent.stream`` measured it, from ``/why``."""
        self.child.send("/why\r")
        self.child.expect_exact(LINE_ACCEPTED)
        self.child.expect_exact(PROMPT_READY)
        found = re.search(r"(?<!generate_)ttft ([0-9.]+) s", ESCAPES.sub("", self.child.before))
        assert found, self.child.before
        return float(found.group(1))

    def close(self) -> None:
        self.child.send("\x04")
        self.child.expect(pexpect.EOF)


def agent_first_chunk_s(agent: Agent, question: str) -> tuple[float, str]:
    started = time.perf_counter()
    turn = agent.stream(question)
    elapsed, first = 0.0, ""
    for chunk in turn:
        if not first and chunk.strip():
            elapsed, first = time.perf_counter() - started, chunk.strip()[0]
    return elapsed, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=None, help="n_threads for both sides (default: llama.cpp's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="agentmm-bench-"))
    env = {**os.environ, "AGENTMM_DATA_DIR": str(data / "repl"), "AGENTMM_MEMORY": "false",
           "AGENTMM_CONFIG": str(data / "none.toml"), "TERM": "xterm-256color",
           "PROMPT_TOOLKIT_NO_CPR": "1"}  # fmt: skip
    env.pop("NO_COLOR", None)
    if args.threads:
        env["AGENTMM_N_THREADS"] = str(args.threads)
    flags = ["--temperature", "0", "--seed", "1", "--max-tokens", str(args.max_tokens)]
    settings = load_settings(data / "none.toml", data_dir=data / "agent", memory=False, temperature=0.0, seed=1,
                             max_tokens=args.max_tokens, n_threads=args.threads)  # fmt: skip
    agent = Agent(settings)
    agent_first_chunk_s(agent, "Hello!")  # load the model
    repl = ReplUnderTest(flags, env)
    repl.first_char_s("Hello!")  # waits for the background load, then one turn

    rows: list[dict[str, Any]] = []
    for i in range(args.pairs):
        question = QUESTIONS[i % len(QUESTIONS)]
        repl.command("/new")
        if i % 2 == 0:
            r, rc = repl.first_char_s(question)
            inner = repl.turn_ttft_s()
            a, ac = agent_first_chunk_s(agent, question)
        else:
            a, ac = agent_first_chunk_s(agent, question)
            r, rc = repl.first_char_s(question)
            inner = repl.turn_ttft_s()
        rows.append({"question": question, "repl_s": round(r, 4), "agent_s": round(a, 4),
                     "repl_turn_ttft_s": inner, "same_first_char": rc == ac})  # fmt: skip
        print(f"{i + 1:2d}  repl {r * 1000:7.1f} ms (its turn's ttft {inner * 1000:7.1f} ms)  "
              f"agent {a * 1000:7.1f} ms  {rc!r} {ac!r}", flush=True)  # fmt: skip
    repl.close()

    repl_med = statistics.median(r["repl_s"] for r in rows)
    agent_med = statistics.median(r["agent_s"] for r in rows)
    ratios = [r["repl_s"] / r["agent_s"] for r in rows]
    overheads = [r["repl_s"] - r["repl_turn_ttft_s"] for r in rows]
    report = {
        "pairs": len(rows),
        "repl_first_char_median_s": round(repl_med, 4),
        "agent_first_chunk_median_s": round(agent_med, 4),
        "ratio_of_medians": round(repl_med / agent_med, 3),
        "median_of_pair_ratios": round(statistics.median(ratios), 3),
        "same_turn_ratio_median": round(statistics.median(r["repl_s"] / r["repl_turn_ttft_s"] for r in rows), 3),
        "same_turn_overhead_median_ms": round(1000 * statistics.median(overheads), 1),
        "same_first_char": sum(r["same_first_char"] for r in rows),
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
