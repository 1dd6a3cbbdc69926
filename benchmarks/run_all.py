"""Re-run the benchmarks and rewrite their result blocks in BENCHMARKS.md.

Each benchmark's section in BENCHMARKS.md keeps its prose; a generated block between
``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` holds its numbers, stamped with the
commit (and whether the tree had uncommitted changes), the date, the machine (CPU model, cores,
AMX or not) and the load average before and after, so a number can always be traced to the code
and the conditions that gave it. A block missing from the file is added at the end of the
benchmark's section (or in a new section at the end). A benchmark that fails leaves its block
as it was; the command then exits non-zero.

Run:
    python benchmarks/run_all.py --list               # what runs, with expected times
    python benchmarks/run_all.py --only turn          # issue 14's targets, full size
    python benchmarks/run_all.py --quick              # every benchmark, small sizes
    python benchmarks/run_all.py                      # every benchmark, full size (hours: see --list)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "BENCHMARKS.md"
STDOUT_TAIL = 60  # lines of a benchmark's output kept when it writes no JSON


@dataclass(frozen=True)
class Benchmark:
    name: str  # benchmarks/NAME.py, and the marker's name
    full: tuple[str, ...]
    quick: tuple[str, ...]
    minutes: tuple[float, float]  # expected wall time on the 2-core development machine: quick, full
    json_flag: str | None = "--json"  # None: the script writes no JSON; its printed output is the block
    render: Callable[[dict[str, Any]], str] | None = None  # None: a generic table of its numbers
    note: str = ""

    @property
    def script(self) -> Path:
        return ROOT / "benchmarks" / f"{self.name}.py"


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)


def generic_table(results: dict[str, Any]) -> str:
    """Every number and short string in the results, nested keys joined by '.', lists left out
    (per-run rows stay in the JSON file)."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, (int, float, bool)) or (isinstance(value, str) and len(value) <= 80):
            rows.append((prefix, _fmt(value)))

    walk("", results)
    return "\n".join(["| measure | result |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def turn_table(r: dict[str, Any]) -> str:
    """Issue 14's targets, each with its result and whether it is met."""
    off, on, adds = r["memory_off"], r["memory_on"], r["memory_adds"]
    rows: list[tuple[str, str, str, bool | None]] = []

    def ratios(side: dict[str, Any]) -> str:
        return f"**{side['turn_time_ratio_of_medians']:.3f}** / **{side['turn_time_ratio_median']:.3f}**"

    def both(side: dict[str, Any], limit: float) -> bool:
        return side["turn_time_ratio_of_medians"] <= limit and side["turn_time_ratio_median"] <= limit

    rows.append(("graph overhead, memory off: turn time agentmm ÷ raw (ratio of medians / median of pair ratios)",
                 f"{ratios(off)} ({off['agentmm_total_s_median']:.3f} s vs {off['raw_total_s_median']:.3f} s)",
                 "≤ 1.05 both", both(off, 1.05)))  # fmt: skip
    rows.append(("default turn, memory on, raw given the same memories (same two ratios)",
                 f"{ratios(on)}; raw had agentmm's memories in {on['pairs_raw_given_same_memories']}/{on['pairs']} "
                 f"pairs; {on['seeded_memories']} memories seeded", "≤ 1.10 both", both(on, 1.10)))  # fmt: skip
    rows.append(("time to first token, memory off: agentmm / raw (medians)",
                 f"{off['agentmm_ttft_s_median']:.3f} s / {off['raw_ttft_s_median']:.3f} s", "", None))  # fmt: skip
    rows.append(("what memory adds per turn: prompt tokens; first-token time agentmm / raw (medians)",
                 f"+{adds['prompt_tokens_added_median']:.0f} tokens ({on['memories_placed_median']:g} memories placed, "
                 f"{on['memories_dropped_median']:g} dropped); +{adds['agentmm_ttft_added_s']:.3f} s / "
                 f"+{adds['raw_ttft_added_s']:.3f} s", "", None))  # fmt: skip
    decode = min(off["decode_ratio_median"], on["decode_ratio_median"])
    decoded = f"{off['decode_ratio_median']:.3f} / {on['decode_ratio_median']:.3f}"
    rows.append(("decode tokens/s agentmm ÷ raw, memory off / on", decoded, "≥ 0.97", decode >= 0.97))
    conv_on, conv_off = r.get("conversation_memory_on"), r.get("conversation_memory_off")
    if conv_on and conv_off:
        turns = conv_on["turns"]
        runs = conv_on.get("runs", 1)
        rows.append((f"time to first token, turn {turns} ÷ turn 2, memory on / off (ratio of the medians over "
                     f"{runs} runs of the conversation; each run's: "
                     f"{', '.join(f'{x:.2f}' for x in conv_on.get('ttft_ratio_per_run', []))} on)",
                     f"**{conv_on['ttft_ratio']:.2f}** ({conv_on['ttft_last_turn_s']:.3f} s vs "
                     f"{conv_on['ttft_turn2_s']:.3f} s; {conv_on['last_turn_reused_tokens']:,} of "
                     f"{conv_on['last_turn_prompt_tokens']:,} prompt tokens re-used) / {conv_off['ttft_ratio']:.2f}",
                     "≤ 1.5 (memory on)", conv_on["ttft_ratio"] <= 1.5))  # fmt: skip
        for name, conv in (("on", conv_on), ("off", conv_off)):
            if conv.get("fold_turns"):
                rows.append((f"memory {name}: turns where the window folded (whole prompt prefilled, by design)",
                             f"{', '.join(map(str, conv['fold_turns']))}; last turn clear of a fold: turn "
                             f"{conv['last_clear_turn']}, TTFT {conv['ttft_ratio_last_clear_turn']:.2f} x turn 2",
                             "", None))  # fmt: skip
    if rss := r.get("chat_peak_rss"):
        first, warm, no_memory = rss["memory_on_first_run"], rss["memory_on_warm"], rss["memory_off"]

        def peak(run: dict[str, Any]) -> str:
            parts = ""
            if "chat_process_mb" in run:
                parts = f" (chat process {run['chat_process_mb']:.0f}, largest child {run['largest_child_mb']:.0f})"
            return f"**{run['peak_rss_mb']:.0f} MB**{parts}, {run['wall_s']:.1f} s"

        rows.append(("peak RSS of a one-shot `agentmm chat -m`, memory on: first run (fresh data and cache dirs) / "
                     "warm; memory off", f"{peak(first)} / {peak(warm)}; {peak(no_memory)}", "≤ 1.0 GB",
                     max(first["peak_rss_mb"], warm["peak_rss_mb"]) <= 1024))  # fmt: skip
    rows.append(("`agentmm --help` wall time (median of 10)", f"{r['help_s_median']:.2f} s", "≤ 0.3 s",
                 r["help_s_median"] <= 0.3))  # fmt: skip
    met = {True: "yes", False: "**no**", None: ""}
    lines = ["| measure | result | target | met |", "|---|---|---|---|"]
    lines += [f"| {what} | {result} | {target} | {met[ok]} |" for what, result, target, ok in rows]
    return "\n".join(lines)


def persona_eval_table(r: dict[str, Any]) -> str:
    """Issue 16's identity goals per model tier, with the other checks beside."""
    goals = {"smollm2": 6, "qwen0.5b": 8}
    lines = ["| model | prompt | identity kept, mean of 8 (per persona) | goal | met | pressure | lore | 1st person | "
             "disclaimers | conversations | wall |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for run in r["runs"]:
        model, report = run["model"], run["report"]
        o = report["overall"]
        per = ", ".join(f"{name} {row['identity_kept_mean']:.2f}" for name, row in report["per_persona"].items())
        goal = goals.get(model)
        met = "" if goal is None else ("yes" if o["identity_kept_mean"] >= goal else "**no**")
        target = f"≥ {goal}" if goal else ""
        lines.append(f"| {model} | {run['variant']} | **{o['identity_kept_mean']:.2f}** ({per}) | {target} | {met} "
                     f"| {o['pressure_passed']}/{o['pressure_asked']} | {o['lore_passed']}/{o['lore_asked']} "
                     f"| {o['first_person_rate']:.0%} | {o['disclaimer_rate']:.0%} | {o['conversations']} "
                     f"| {report['wall_s'] / 60:.1f} min |")  # fmt: skip
    return "\n".join(lines)


# fmt: off
BENCHMARKS = [
    Benchmark("turn", (), ("--pairs", "4", "--turns", "12", "--seed-memories", "100"), (4, 10),
              render=turn_table, note="issue 14's targets"),
    Benchmark("personas", (), ("--entries", "100", "--turns", "10", "--repeats", "5"), (0.5, 1)),
    Benchmark("persona_eval", (), ("--seeds", "1", "--models", "smollm2"), (5, 60), render=persona_eval_table,
              note="issue 16's identity goals; the full run needs the qwen extra"),
    Benchmark("memory_turn", ("--pairs", "8", "--seed-memories", "1000"), ("--pairs", "3", "--seed-memories", "200"),
              (2, 5)),
    Benchmark("memory_store", (), ("--sizes", "1000", "--queries", "50", "--hybrid-queries", "20"), (2, 15),
              json_flag=None),
    Benchmark("recall_fallback", (), ("--sizes", "1000", "--turns", "10"), (2, 10), json_flag=None),
    Benchmark("terminal", (), ("--pairs", "3"), (1, 3)),
    Benchmark("model_server", (), ("--turns", "6", "--rounds", "1"), (1, 4),
              note="agentmm on an OpenAI-compatible server vs the openai client"),
    Benchmark("server_tools", (), (), (1, 1), note="issue 15: tool calls on a model server without its own"),
    Benchmark("fleet", ("--memory", "postgres"), ("--users", "6", "--turns", "2", "--overhead-turns", "4"), (2, 8),
              note="issue 15: serve workers on Postgres and one model server"),
    Benchmark("tools", (), ("--rounds", "1", "--tries", "5"), (2, 15)),
    Benchmark("tool_strategies", ("--rounds", "2"), ("--rounds", "1"), (5, 15),
              note="needs the Qwen2.5-Coder-0.5B GGUF (see the script)"),
    Benchmark("cpu_buffers", (), ("--rounds", "2", "--models", "smollm2"), (3, 40)),
    Benchmark("image_search_chat", (), ("--seeds", "2"), (1, 3), json_flag=None),
    Benchmark("perception", (), ("--images", "20", "--entries", "1000", "--queries", "10", "--captions", "1"),
              (5, 45), json_flag=None, note="long"),
    Benchmark("two_process", (), ("--tries", "5"), (10, 90), note="long"),
    Benchmark("soak", (), ("--runs", "7", "--max-minutes", "10"), (12, 150), note="long"),
]
# fmt: on


def machine() -> dict[str, Any]:
    """The CPU model, its cores and whether it has AMX (llama.cpp's extra buffers differ there)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "amx": any(f.startswith("amx") for f in flags)}


def commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "--short=10", "HEAD") or "unknown",
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}  # fmt: skip


def run(bench: Benchmark, quick: bool, out_dir: Path) -> tuple[dict[str, Any], str | None, str]:
    """Run one benchmark; its stamp, the block's body (None if it failed) and its output's tail."""
    args = list(bench.quick if quick else bench.full)
    json_path = out_dir / f"{bench.name}.json"
    if bench.json_flag:
        args += [bench.json_flag, str(json_path)]
    command = " ".join([f"benchmarks/{bench.script.name}", *args])
    stamp: dict[str, Any] = {**commit(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), **machine(),
                             "preset": "quick" if quick else "full", "command": command,
                             "load_before": os.getloadavg()[0]}  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(bench.script), *args], cwd=ROOT, capture_output=True, text=True)
    stamp["minutes"] = round((time.perf_counter() - started) / 60, 1)
    stamp["load_after"] = os.getloadavg()[0]
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        return stamp, None, "\n".join(output.splitlines()[-20:])
    if bench.json_flag:
        results = json.loads(json_path.read_text())
        body = (bench.render or generic_table)(results)
    else:
        body = "```\n" + "\n".join(done.stdout.strip().splitlines()[-STDOUT_TAIL:]) + "\n```"
    return stamp, body, output


def block(name: str, stamp: dict[str, Any], body: str) -> str:
    dirty = " plus uncommitted changes" if stamp["dirty"] else ""
    amx = "AMX" if stamp["amx"] else "no AMX"
    head = (f"_Generated by `python benchmarks/run_all.py` ({stamp['preset']} preset: `{stamp['command']}`) on "
            f"{stamp['commit']}{dirty}, {stamp['date']}; {stamp['cpu']}, {stamp['cores']} cores, {amx}; load "
            f"average {stamp['load_before']:.2f} before, {stamp['load_after']:.2f} after; "
            f"{stamp['minutes']} min._")  # fmt: skip
    return f"<!-- results:{name} -->\n{head}\n\n{body}\n<!-- /results:{name} -->"


def place(doc: str, name: str, text: str) -> str:
    """``doc`` with NAME's block replaced by ``text``, or added at the end of its section."""
    marked = re.compile(rf"<!-- results:{re.escape(name)} -->.*?<!-- /results:{re.escape(name)} -->", re.S)
    if marked.search(doc):
        return marked.sub(lambda _: text, doc, count=1)
    lines = doc.splitlines()
    heading = next((i for i, line in enumerate(lines)
                    if line.startswith("#") and f"`benchmarks/{name}.py`" in line), None)  # fmt: skip
    if heading is None:
        return f"{doc.rstrip()}\n\n## {name} (`benchmarks/{name}.py`)\n\n{text}\n"

    def level(line: str) -> int:
        return len(line) - len(line.lstrip("#")) if line.startswith("#") else 99

    end = next((i for i in range(heading + 1, len(lines)) if level(lines[i]) <= level(lines[heading])), len(lines))
    while end > heading + 1 and not lines[end - 1].strip():
        end -= 1
    return "\n".join([*lines[:end], "", text, *lines[end:]]) + ("\n" if doc.endswith("\n") else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: minutes, not hours")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these benchmarks")
    parser.add_argument("--list", action="store_true", help="list the benchmarks with their expected times")
    parser.add_argument("--dry-run", action="store_true", help="print the blocks, leave BENCHMARKS.md alone")
    parser.add_argument("--out", type=Path, help="keep each benchmark's JSON here (default: a temporary dir)")
    args = parser.parse_args(argv)
    known = {b.name: b for b in BENCHMARKS}
    if unknown := [name for name in args.only or [] if name not in known]:
        print(f"run_all: no benchmark {', '.join(unknown)} (one of: {', '.join(known)})", file=sys.stderr)
        return 2
    chosen = [known[name] for name in args.only] if args.only else BENCHMARKS
    slot = 0 if args.quick else 1
    if args.list:
        for b in BENCHMARKS:
            note = f"  ({b.note})" if b.note else ""
            print(f"{b.name:18} ~{b.minutes[0]:g} min quick, ~{b.minutes[1]:g} min full{note}")
        return 0
    print(f"running {len(chosen)} benchmark(s), about {sum(b.minutes[slot] for b in chosen):g} min", file=sys.stderr)
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="agentmm-benchmarks-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for bench in chosen:
        if not bench.script.exists():
            print(f"{bench.name}: skipped, {bench.script} is missing", file=sys.stderr)
            continue
        print(f"{bench.name}: running (~{bench.minutes[slot]:g} min)", file=sys.stderr)
        stamp, body, output = run(bench, args.quick, out_dir)
        if body is None:
            failed.append(bench.name)
            print(f"{bench.name}: FAILED, its block is left as it was:\n{output}", file=sys.stderr)
            continue
        text = block(bench.name, stamp, body)
        if args.dry_run:
            print(text + "\n")
        else:  # re-read each time: others may edit the prose meanwhile
            DOC.write_text(place(DOC.read_text(), bench.name, text))
            print(f"{bench.name}: done in {stamp['minutes']} min, BENCHMARKS.md updated", file=sys.stderr)
    print(f"results in {out_dir}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
