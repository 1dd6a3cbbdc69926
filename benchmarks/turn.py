"""Turn benchmark: agentmm's Agent vs raw llama-cpp-python, side by side in one run.

Measures, on the same model, prompts and sampling settings:
- turn wall time through ``Agent.stream`` ÷ a raw ``Llama.create_chat_completion(stream=True)``
  call with the exact same messages (goal ≤ 1.05);
- decode tokens/s through agentmm ÷ raw (goal ≥ 0.97);
- time to first token at turn 30 ÷ turn 2 of one conversation (goal ≤ 1.5: prefix reuse);
- ``agentmm --help`` wall time (goal ≤ 0.3 s) and peak RSS of a one-turn chat (goal ≤ 1.5 GB).

Run: ``python benchmarks/turn.py [--pairs 8] [--turns 30] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agentmm.cpu_buffers import buffered_llama_class
from agentmm.graphs.agent import Agent
from agentmm.llm import ChatLlamaCpp
from agentmm.models import resolve_model
from agentmm.settings import DEFAULT_SYSTEM_PROMPT, load_settings

SAMPLING = {"temperature": 0.0, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1, "seed": 1}
QUESTIONS = [
    "Describe a quiet harbour town at dawn.",
    "What would a lighthouse keeper write in a diary?",
    "Explain how sailors navigated by the stars.",
    "Tell me about a market that sells only maps.",
    "What does the sea smell like after a storm?",
    "Invent a folk song about a lost ship.",
    "How would you cook fish on a beach fire?",
    "Describe the captain of an old merchant ship.",
]


def raw_turn(llama: Any, messages: list[dict[str, str]], max_tokens: int) -> dict[str, float]:
    started = time.perf_counter()
    first = None
    text = []
    for chunk in llama.create_chat_completion(messages=messages, stream=True, max_tokens=max_tokens, **SAMPLING):
        if piece := chunk["choices"][0]["delta"].get("content"):
            text.append(piece)
            first = first or time.perf_counter()
    total = time.perf_counter() - started
    return {"total_s": total, "ttft_s": (first or started) - started, "text": "".join(text)}


def agent_turn(agent: Agent, text: str) -> dict[str, float]:
    turn = agent.stream(text)
    for _ in turn:
        pass
    result = turn.result
    return {"total_s": result.timings.total_s, "ttft_s": result.timings.ttft_s, "text": result.reply}


def decode_rate(run: dict[str, float]) -> float:
    return (run["tokens"] - 1) / max(run["total_s"] - run["ttft_s"], 1e-9)


def side_by_side(model_path: Path, pairs: int, max_tokens: int, n_ctx: int) -> dict[str, Any]:
    """Alternate raw and agentmm turns on two separate Llama instances with the same settings."""
    data_dir = Path(tempfile.mkdtemp(prefix="agentmm-bench-"))
    model = ChatLlamaCpp(model_path=str(model_path), n_ctx=n_ctx, n_gpu_layers=0, max_tokens=max_tokens,
                         **SAMPLING)  # fmt: skip
    # Raw llama.cpp gets the same CPU buffers as agentmm (off on AMX CPUs, where they crash).
    extra_buffers = model.native_check().choice.enabled
    raw = buffered_llama_class()(model_path=str(model_path), n_ctx=n_ctx, n_gpu_layers=0, verbose=False,
                                 extra_buffers=extra_buffers)  # fmt: skip
    agent = Agent(load_settings(data_dir=data_dir, n_ctx=n_ctx, max_tokens=max_tokens), model=model)
    agent_turn(agent, "warm up")  # load + graph build outside the timed runs, as for raw
    raw_turn(raw, [{"role": "user", "content": "warm up"}], 8)
    rows = []
    for i in range(pairs):
        question = QUESTIONS[i % len(QUESTIONS)] + f" (take {i})"
        messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": question}]
        if i % 2:  # alternate who goes first, so drift in machine load hits both sides alike
            a = agent_turn(agent, question)
            r = raw_turn(raw, messages, max_tokens)
        else:
            r = raw_turn(raw, messages, max_tokens)
            a = agent_turn(agent, question)
        for run in (r, a):  # count both sides' tokens the same way
            run["tokens"] = len(raw.tokenize(run.pop("text").encode(), add_bos=False))
        rows.append({"raw": r, "agentmm": a})
    ratios = [row["agentmm"]["total_s"] / row["raw"]["total_s"] for row in rows]
    same_length = [row for row in rows if row["agentmm"]["tokens"] == row["raw"]["tokens"]]
    decode = [decode_rate(row["agentmm"]) / decode_rate(row["raw"]) for row in rows]
    return {
        "pairs": pairs,
        "pairs_with_equal_reply_length": len(same_length),
        "raw_total_s_median": statistics.median(r["raw"]["total_s"] for r in rows),
        "agentmm_total_s_median": statistics.median(r["agentmm"]["total_s"] for r in rows),
        "turn_time_ratio_median": statistics.median(ratios),
        "turn_time_ratio_of_medians": statistics.median(r["agentmm"]["total_s"] for r in rows)
        / statistics.median(r["raw"]["total_s"] for r in rows),
        "raw_ttft_s_median": statistics.median(r["raw"]["ttft_s"] for r in rows),
        "agentmm_ttft_s_median": statistics.median(r["agentmm"]["ttft_s"] for r in rows),
        "raw_decode_tok_s_median": statistics.median(decode_rate(r["raw"]) for r in rows),
        "agentmm_decode_tok_s_median": statistics.median(decode_rate(r["agentmm"]) for r in rows),
        "decode_ratio_median": statistics.median(decode),
        "tokens_per_reply_median": statistics.median(r["agentmm"]["tokens"] for r in rows),
    }


def conversation(model_path: Path, turns: int, n_ctx: int) -> dict[str, Any]:
    """One long conversation: time to first token per turn, and how much of each prompt was re-used."""
    data_dir = Path(tempfile.mkdtemp(prefix="agentmm-bench-"))
    model = ChatLlamaCpp(model_path=str(model_path), n_ctx=n_ctx, n_gpu_layers=0, max_tokens=48, **SAMPLING)
    agent = Agent(load_settings(data_dir=data_dir, n_ctx=n_ctx, max_tokens=48), model=model)
    thread = "bench"
    rows = []
    for i in range(turns):
        result = agent.chat(QUESTIONS[i % len(QUESTIONS)] + f" Turn {i + 1}.", thread_id=thread)
        cache = result.trace.get("cache", {})
        ttft = result.trace["timings"]["generate_ttft_s"]
        reused = cache.get("reused_tokens", 0)
        rows.append(
            {"turn": i + 1, "ttft_s": ttft, "prompt_tokens": cache.get("prompt_tokens", 0), "reused_tokens": reused}
        )
    # The same turn-30 prompt without the cache: what every turn would cost if the head moved.
    last_prompt = agent.graph.get_state(agent.config(thread)).values
    from agentmm.graphs.chat import prompt_messages

    messages = prompt_messages(last_prompt)[:-1]  # the prompt of the last turn (drop its reply)
    model.load().llama.reset()
    cold_started = time.perf_counter()
    next(iter(model.stream(messages)))
    cold = time.perf_counter() - cold_started
    t2, tn = rows[1], rows[-1]
    return {
        "turns": turns,
        "ttft_turn2_s": t2["ttft_s"],
        f"ttft_turn{turns}_s": tn["ttft_s"],
        "ttft_ratio": tn["ttft_s"] / t2["ttft_s"],
        f"turn{turns}_prompt_tokens": tn["prompt_tokens"],
        f"turn{turns}_reused_tokens": tn["reused_tokens"],
        f"turn{turns}_ttft_without_cache_s": cold,
        "per_turn": rows,
    }


def help_time(runs: int = 10) -> float:
    exe = Path(sys.executable).with_name("agentmm")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(exe), "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def chat_peak_rss_mb() -> float:
    exe = Path(sys.executable).with_name("agentmm")
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "AGENTMM_DATA_DIR": data_dir}
        subprocess.run([str(exe), "chat", "-m", "Hello, who are you?", "--max-tokens", "64"], env=env,
                       capture_output=True, check=True)  # fmt: skip
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    path = resolve_model(args.model).path
    results = {
        "model": str(path),
        "cpu_count": os.cpu_count(),
        "help_s_median": help_time(),
        "chat_peak_rss_mb": chat_peak_rss_mb(),
        "side_by_side": side_by_side(path, args.pairs, args.max_tokens, args.n_ctx),
        "conversation": conversation(path, args.turns, args.n_ctx),
    }
    summary = {k: v for k, v in results.items() if k != "conversation"}
    summary["conversation"] = {k: v for k, v in results["conversation"].items() if k != "per_turn"}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
