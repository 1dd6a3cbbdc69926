"""Turn benchmark: agentmm's Agent vs raw llama-cpp-python, side by side in one run.

Measures, on the same model, prompts and sampling settings (issue 14's targets in brackets):
- memory off: turn wall time through ``Agent.stream`` ÷ a raw ``Llama.create_chat_completion(stream=True)``
  call with the exact same messages, as a ratio of medians and a median of per-pair ratios (≤ 1.05);
- memory on (the default), over a store seeded with a few hundred memories written through the agent's
  own store: the same ratios, raw's messages carrying exactly the memories the agentmm turn placed
  (≤ 1.10), and what memory adds per turn (prompt tokens, first-token time);
- decode tokens/s through agentmm ÷ raw (≥ 0.97);
- time to first token at turn 30 ÷ turn 2 of one conversation, memory on and off (≤ 1.5: prefix reuse);
- ``agentmm --help`` wall time (≤ 0.3 s) and peak RSS of a one-shot ``agentmm chat -m`` with memory on,
  first run (fresh data and cache dirs) and warm, and memory off (≤ 1.0 GB with memory on).

Why 48 pairs (six for each of the 8 questions): single pairs on this shared 2-core machine swing
by -5% to +19%, and two runs of 8 pairs back to back on the same code read memory on 1.030 / 1.041
and 1.106 / 1.119 (ratio of medians / median of pair ratios), so 8 pairs cannot settle a 5% goal.
At 24 pairs the ratio of medians still moved by 3-4% between runs on the same code (memory on
1.109 and 1.074 at b58617b; memory off 1.035 and 1.052 at b58617b and 6fb5d94), because the
median turn falls on a different question's reply length from run to run; the median of pair
ratios moved by ~1%. Twice the pairs narrows that spread (by about √2 for a median).

Why every reply is ``--max-tokens`` long (the end-of-turn tokens banned by a logit bias, the same on
both sides): with replies left to end where the model ends them (8-128 tokens on these questions),
the raw side's sorted turn times had a gap right at their median (1.13-1.17 s, then 1.41 s at
f29ac49), and agentmm's few percent per pair moved its median across it: memory on read 1.057 and
1.172 as a ratio of medians on nearly the same code while the median of pair ratios read 1.056.
One reply length makes both medians measure the same work; ``--natural-length`` measures the old way.

Run: ``python benchmarks/turn.py [--pairs 48] [--turns 30] [--natural-length] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.runtime import Runtime

from agentmm.context import turn_context
from agentmm.cpu_buffers import buffered_llama_class
from agentmm.graphs.agent import Agent
from agentmm.graphs.chat import prompt_messages
from agentmm.graphs.memory import Recall
from agentmm.llm import ChatLlamaCpp
from agentmm.memory.conversation import format_recalled, remember_turn, scope
from agentmm.models import resolve_model
from agentmm.settings import DEFAULT_SYSTEM_PROMPT, Settings, load_settings
from agentmm.state import TurnContext
from agentmm.tokens import TokenCounter

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
# Seeded memories: some near the questions' topics (so recall finds them), most about other things.
NEAR = ["the harbour town where I grew up", "my uncle, who kept a lighthouse", "learning the stars on a sailing trip",
        "an old shop full of sea maps", "the smell of the sea after storms", "a folk song my grandmother sang",
        "grilling fish on the beach last summer", "a merchant ship captain I once met"]  # fmt: skip
FAR = ["my sister Mira in Lisbon", "my grey cat Pickle", "the bakery job I started", "my knee surgery",
       "the chess club on Thursdays", "my cousin's wedding in June", "the jazz records I collect",
       "my plan to learn Japanese", "the vegetable garden on my balcony", "the marathon I am training for",
       "my old laptop that keeps crashing", "the book club reading Tolstoy"]  # fmt: skip
SAYINGS = ["I keep thinking about {}.", "Let me tell you about {}.", "Did I ever mention {}?",
           "Something about {} made me smile today.", "I dreamt about {} last night."]  # fmt: skip


def seed_memories(agent: Agent, count: int) -> int:
    """Write ``count`` memories (user message and reply, as turns write them) into the agent's store."""
    settings = agent.settings
    namespace = scope(settings.user_id)
    topics = NEAR + FAR * 2  # about a fifth near the questions
    written = 0
    when = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(count // 2):
        topic = topics[i % len(topics)]
        said = SAYINGS[(i // len(topics)) % len(SAYINGS)].format(topic)
        exchange = [("user", settings.user_name, said), ("assistant", "assistant", f"That sounds lovely. ({i})")]
        written += len(remember_turn(agent.store, namespace, thread_id=f"seed{i}", turn=1, exchange=exchange,
                                     when=when + timedelta(hours=i)))  # fmt: skip
    return written


END_BIAS = -1000.0  # far below any logit: the token is never sampled


def end_bias(llama: Any) -> dict[int, float]:
    """A logit bias that bans the tokens ending a reply: the model's end-of-text token and the
    chat template's turn markers (``<|im_end|>``, ``<|im_start|>``, ``<|endoftext|>``) where they are
    one special token. Given to both sides, every reply is ``max_tokens`` long."""
    banned = {int(llama.token_eos())}
    for marker in ("<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>"):
        ids = llama.tokenize(marker.encode(), add_bos=False, special=True)
        if len(ids) == 1:
            banned.add(int(ids[0]))
    return dict.fromkeys(sorted(banned), END_BIAS)


class FullLengthChatLlamaCpp(ChatLlamaCpp):
    """agentmm's chat model with ``reply_logit_bias`` added to every reply's parameters (the
    benchmark's ``end_bias``), as raw's calls get it."""

    reply_logit_bias: dict[int, float] | None = None

    def _call_params(self, stop: list[str] | None, **kwargs: Any) -> dict[str, Any]:
        params = super()._call_params(stop, **kwargs)
        if self.reply_logit_bias and "logit_bias" not in kwargs:
            params["logit_bias"] = self.reply_logit_bias
        return params


def _raw_stream(llama: Any, messages: list[dict[str, str]], max_tokens: int,
                logit_bias: dict[int, float] | None = None) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    first = None
    text = []
    extra = {"logit_bias": logit_bias} if logit_bias else {}
    for chunk in llama.create_chat_completion(messages=messages, stream=True, max_tokens=max_tokens, **SAMPLING,
                                              **extra):  # fmt: skip
        if piece := chunk["choices"][0]["delta"].get("content"):
            text.append(piece)
            first = first or time.perf_counter()
    total = time.perf_counter() - started
    return {"total_s": total, "ttft_s": (first or started) - started, "text": "".join(text)}


def raw_turn(llama: Any, messages: list[dict[str, str]], max_tokens: int,
             logit_bias: dict[int, float] | None = None) -> dict[str, Any]:  # fmt: skip
    """One raw turn on a new thread, as agentmm's model makes each reply on a producer thread of
    its own. On this loaded 2-core machine llama.cpp's batch evaluation run again and again from
    one thread (the main one, or one pool thread) measured 3-20x slower now and then than from a
    new thread (25 tokens: 0.9-4.6 s vs 0.2-0.4 s at load average 5), which made raw look slow."""
    with ThreadPoolExecutor(1, thread_name_prefix="raw-llama") as pool:
        return pool.submit(_raw_stream, llama, messages, max_tokens, logit_bias).result()


def agent_turn(agent: Agent, text: str, thread_id: str) -> dict[str, Any]:
    turn = agent.stream(text, thread_id=thread_id)
    for _ in turn:
        pass
    result = turn.result
    timings = result.trace["timings"]  # decoding is what generate spends after its first token
    return {"total_s": result.timings.total_s, "ttft_s": result.timings.ttft_s, "text": result.reply,
            "decode_s": timings["generate_s"] - timings["generate_ttft_s"],
            "prompt_tokens": result.usage.prompt_tokens, "recalled": len(result.trace.get("recalled", [])),
            "recall_dropped": len(result.trace.get("recall_dropped", []))}  # fmt: skip


def decode_rate(run: dict[str, float]) -> float:
    """Tokens/s after the first; agentmm's turn goes on after its last token (remember, the
    last checkpoint), so its decode time is the generate node's own."""
    return (run["tokens"] - 1) / max(run.get("decode_s", run["total_s"] - run["ttft_s"]), 1e-9)


def make_agent(model_path: Path, n_ctx: int, max_tokens: int, memory: bool) -> tuple[Agent, FullLengthChatLlamaCpp]:
    data_dir = Path(tempfile.mkdtemp(prefix="agentmm-bench-"))
    model = FullLengthChatLlamaCpp(model_path=str(model_path), n_ctx=n_ctx, n_gpu_layers=0, max_tokens=max_tokens,
                                   **SAMPLING)  # fmt: skip
    settings = load_settings(data_dir=data_dir, n_ctx=n_ctx, max_tokens=max_tokens, memory=memory)
    return Agent(settings, model=model), model


def recalled_block(agent: Agent, counter: TokenCounter, question: str, thread_id: str) -> str:
    """The memories a new thread's turn on ``question`` would place, as compose places them: the
    graph's own recall node, run on the store as it is now."""
    settings: Settings = agent.settings
    node = Recall(settings.memory_k, counter=counter, relevance=settings.memory_min_similarity,
                  max_tokens=settings.memory_max_tokens)  # fmt: skip
    context = TurnContext(user_name=settings.user_name, user_id=settings.user_id)
    update = node({"messages": [HumanMessage(question)]}, {"configurable": {"thread_id": thread_id}},
                  Runtime(context=context, store=agent.store))  # fmt: skip
    return format_recalled(update["recalled"], settings.user_name)


def placed_context(agent: Agent, thread_id: str) -> str:
    """The context the agentmm turn stored with its message (what its prompt carried)."""
    messages = agent.graph.get_state(agent.config(thread_id)).values["messages"]
    return turn_context(next(m for m in reversed(messages) if isinstance(m, HumanMessage)))


def side_by_side(model_path: Path, pairs: int, max_tokens: int, n_ctx: int, memory: bool, seed: int,
                 full_length: bool = True) -> dict[str, Any]:  # fmt: skip
    """Alternate raw and agentmm turns on two separate Llama instances with the same settings.

    With memory on, raw's user message carries the memories the agentmm turn placed: found
    before the pair by the graph's recall node on the same store, and checked after it against
    what the agentmm turn stored with its message."""
    agent, model = make_agent(model_path, n_ctx, max_tokens, memory)
    # Raw llama.cpp gets the same CPU buffers as agentmm (off on AMX CPUs, where they crash).
    extra_buffers = model.native_check().choice.enabled
    raw = buffered_llama_class()(model_path=str(model_path), n_ctx=n_ctx, n_gpu_layers=0, verbose=False,
                                 extra_buffers=extra_buffers)  # fmt: skip
    bias = end_bias(raw) if full_length else None
    model.reply_logit_bias = bias
    seeded = seed_memories(agent, seed) if memory and seed else 0
    counter = TokenCounter.for_model(model)
    # Load and first allocations outside the timed runs, the same turn on both sides.
    agent_turn(agent, "warm up", "warm-up")
    raw_turn(raw, [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": "warm up"}],
             max_tokens, bias)  # fmt: skip
    rows = []
    for i in range(pairs):
        question = QUESTIONS[i % len(QUESTIONS)] + f" (take {i})"
        thread = f"pair{i}"
        block = recalled_block(agent, counter, question, thread) if memory else ""
        said = f"{block}\n\n{question}" if block else question
        messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": said}]
        if i % 2:  # alternate who goes first, so drift in machine load hits both sides alike
            a = agent_turn(agent, question, thread)
            r = raw_turn(raw, messages, max_tokens, bias)
        else:
            r = raw_turn(raw, messages, max_tokens, bias)
            a = agent_turn(agent, question, thread)
        for run in (r, a):  # count both sides' tokens the same way
            run["tokens"] = len(raw.tokenize(run.pop("text").encode(), add_bos=False))
        a["same_memories_as_raw"] = placed_context(agent, thread) == block
        a["memory_tokens"] = counter.text(block)
        rows.append({"raw": r, "agentmm": a})
    agent.close()
    return {**summarise(rows, pairs, seeded), "reply_length": "max_tokens" if full_length else "natural"}


def summarise(rows: list[dict[str, Any]], pairs: int, seeded: int) -> dict[str, Any]:
    def median(side: str, key: str) -> float:
        return statistics.median(row[side][key] for row in rows)

    ratios = [row["agentmm"]["total_s"] / row["raw"]["total_s"] for row in rows]
    decode = [decode_rate(row["agentmm"]) / decode_rate(row["raw"]) for row in rows]
    return {
        "pairs": pairs,
        "seeded_memories": seeded,
        "pairs_with_equal_reply_length": sum(row["agentmm"]["tokens"] == row["raw"]["tokens"] for row in rows),
        "pairs_raw_given_same_memories": sum(row["agentmm"]["same_memories_as_raw"] for row in rows),
        "raw_total_s_median": median("raw", "total_s"),
        "agentmm_total_s_median": median("agentmm", "total_s"),
        "turn_time_ratio_of_medians": median("agentmm", "total_s") / median("raw", "total_s"),
        "turn_time_ratio_median": statistics.median(ratios),
        "raw_ttft_s_median": median("raw", "ttft_s"),
        "agentmm_ttft_s_median": median("agentmm", "ttft_s"),
        "raw_decode_tok_s_median": statistics.median(decode_rate(r["raw"]) for r in rows),
        "agentmm_decode_tok_s_median": statistics.median(decode_rate(r["agentmm"]) for r in rows),
        "decode_ratio_median": statistics.median(decode),
        "tokens_per_reply_median": median("agentmm", "tokens"),
        "prompt_tokens_median": median("agentmm", "prompt_tokens"),
        "memory_tokens_median": median("agentmm", "memory_tokens"),
        "memories_placed_median": median("agentmm", "recalled"),
        "memories_dropped_median": median("agentmm", "recall_dropped"),
        "per_pair": rows,
    }


def memory_cost(off: dict[str, Any], on: dict[str, Any]) -> dict[str, Any]:
    """What memory adds to a turn: prompt tokens and first-token time, agentmm and raw alike."""
    return {
        "prompt_tokens_added_median": on["prompt_tokens_median"] - off["prompt_tokens_median"],
        "agentmm_ttft_added_s": on["agentmm_ttft_s_median"] - off["agentmm_ttft_s_median"],
        "raw_ttft_added_s": on["raw_ttft_s_median"] - off["raw_ttft_s_median"],
        "agentmm_turn_added_s": on["agentmm_total_s_median"] - off["agentmm_total_s_median"],
    }


def conversation(model_path: Path, turns: int, n_ctx: int, memory: bool, seed: int, cold: bool) -> dict[str, Any]:
    """One long conversation: time to first token per turn, and how much of each prompt was re-used."""
    agent, model = make_agent(model_path, n_ctx, 48, memory)
    seeded = seed_memories(agent, seed) if memory and seed else 0
    thread = "bench"
    rows = []
    for i in range(turns):
        result = agent.chat(QUESTIONS[i % len(QUESTIONS)] + f" Turn {i + 1}.", thread_id=thread)
        cache = result.trace.get("cache", {})
        rows.append({"turn": i + 1, "ttft_s": result.timings.ttft_s,
                     "generate_ttft_s": result.trace["timings"]["generate_ttft_s"],
                     "prompt_tokens": cache.get("prompt_tokens", 0), "reused_tokens": cache.get("reused_tokens", 0),
                     "recalled": len(result.trace.get("recalled", [])),
                     "folded": result.trace.get("budget", {}).get("folded_this_turn", 0) > 0})  # fmt: skip
    t2, tn = rows[1], rows[-1]
    # A turn where the window folds (and the one after, whose head has the new summary) prefills
    # the whole prompt by design; the last turn clear of both says what the cache keeps.
    folds = [row["turn"] for row in rows if row["folded"]]
    clear = [row for row in rows[2:] if row["turn"] not in folds and row["turn"] - 1 not in folds]
    report = {
        "turns": turns,
        "seeded_memories": seeded,
        "ttft_turn2_s": t2["ttft_s"],
        "ttft_last_turn_s": tn["ttft_s"],
        "ttft_ratio": tn["ttft_s"] / t2["ttft_s"],
        "fold_turns": folds,
        "last_clear_turn": clear[-1]["turn"] if clear else None,
        "ttft_ratio_last_clear_turn": clear[-1]["ttft_s"] / t2["ttft_s"] if clear else None,
        "last_turn_prompt_tokens": tn["prompt_tokens"],
        "last_turn_reused_tokens": tn["reused_tokens"],
        "per_turn": rows,
    }
    if cold:  # the same last prompt without the cache: what every turn would cost if the head moved
        messages = prompt_messages(agent.graph.get_state(agent.config(thread)).values)[:-1]
        model.load().llama.reset()
        started = time.perf_counter()
        next(iter(model.stream(messages)))
        report["last_turn_ttft_without_cache_s"] = time.perf_counter() - started
    agent.close()
    return report


def conversations(runs: int, model_path: Path, turns: int, n_ctx: int, memory: bool, seed: int,
                  cold: bool) -> dict[str, Any]:  # fmt: skip
    """``conversation`` ``runs`` times over (the same turns: greedy sampling, a fixed seed), so one
    load spike on one turn does not decide the turn-N ÷ turn-2 ratio: the ratio of the medians
    of the two turns' first-token times over the runs, with each run's own ratio beside it."""
    reports = [conversation(model_path, turns, n_ctx, memory, seed, cold=cold and i == 0) for i in range(runs)]
    first = dict(reports[0])
    turn2 = statistics.median(r["ttft_turn2_s"] for r in reports)
    last = statistics.median(r["ttft_last_turn_s"] for r in reports)
    first.update(runs=runs, ttft_turn2_s=turn2, ttft_last_turn_s=last, ttft_ratio=last / turn2,
                 ttft_ratio_per_run=[r["ttft_ratio"] for r in reports],
                 fold_turns_per_run=[r["fold_turns"] for r in reports])  # fmt: skip
    return first


def help_time(runs: int = 10) -> float:
    exe = Path(sys.executable).with_name("agentmm")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(exe), "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# Runs ``agentmm`` in this process and, at exit, writes its own peak RSS and its largest child's
# (the embedder's one-time ONNX export runs in a child process), in kB.
_PEAK = ("import atexit, os, resource, sys\n"
         "def report():\n"
         "    with open(os.environ['PEAK_OUT'], 'w') as out:\n"
         "        out.write(f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} '\n"
         "                  f'{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}')\n"
         "atexit.register(report)\n"
         "sys.argv = ['agentmm', *sys.argv[1:]]\n"
         "from agentmm.cli import main\n"
         "main()\n")  # fmt: skip


def chat_peak_rss(data_dir: Path, cache_dir: Path, memory: bool) -> dict[str, float]:
    """Peak RSS (of the chat process, and of its largest child) and wall time of one
    ``agentmm chat -m``, in a process of its own."""
    peak_file = data_dir.parent / f"peak-{data_dir.name}.txt"
    env = {**os.environ, "AGENTMM_DATA_DIR": str(data_dir), "AGENTMM_CACHE_DIR": str(cache_dir),
           "AGENTMM_MEMORY": str(memory).lower(), "AGENTMM_CONFIG": str(data_dir.parent / "no-config.toml"),
           "PEAK_OUT": str(peak_file)}  # fmt: skip
    command = ["chat", "-m", "Hello, who are you?", "--max-tokens", "64"]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK, *command], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"agentmm chat failed ({done.returncode}): {done.stderr[-2000:]}")
    own, child = (int(kb) / 1024 for kb in peak_file.read_text().split())
    return {"peak_rss_mb": round(max(own, child), 1), "chat_process_mb": round(own, 1),
            "largest_child_mb": round(child, 1), "wall_s": round(wall, 2)}  # fmt: skip


def chat_memory() -> dict[str, Any]:
    """Peak RSS of a one-shot chat: memory on with fresh data and cache dirs (the embedder is
    prepared), then again warm, and memory off."""
    with tempfile.TemporaryDirectory(prefix="agentmm-bench-") as tmp:
        data, cache = Path(tmp) / "data", Path(tmp) / "cache"
        first = chat_peak_rss(data, cache, memory=True)
        warm = chat_peak_rss(data, cache, memory=True)
        off = chat_peak_rss(Path(tmp) / "data-off", cache, memory=False)
    return {"memory_on_first_run": first, "memory_on_warm": warm, "memory_off": off}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--pairs", type=int, default=48, help="pairs of turns, each side; the 8 questions in turn")
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--seed-memories", type=int, default=300, help="memories in the store for memory-on runs")
    parser.add_argument("--conversations", type=int, default=3, help="runs of the long conversation, each side")
    parser.add_argument("--skip", nargs="*", default=[], choices=["rss", "conversation"], help="parts not to run")
    parser.add_argument(
        "--natural-length",
        action="store_true",
        help="let replies end where the model ends them (default: every reply max-tokens long)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    path = resolve_model(args.model).path
    results: dict[str, Any] = {"model": str(path), "cpu_count": os.cpu_count(), "help_s_median": help_time()}
    if "rss" not in args.skip:
        results["chat_peak_rss"] = chat_memory()
    full = not args.natural_length
    off = side_by_side(path, args.pairs, args.max_tokens, args.n_ctx, memory=False, seed=0, full_length=full)
    on = side_by_side(
        path, args.pairs, args.max_tokens, args.n_ctx, memory=True, seed=args.seed_memories, full_length=full
    )
    results.update(memory_off=off, memory_on=on, memory_adds=memory_cost(off, on))
    if "conversation" not in args.skip:
        runs = args.conversations
        results["conversation_memory_on"] = conversations(runs, path, args.turns, args.n_ctx, True,
                                                          args.seed_memories, cold=False)  # fmt: skip
        results["conversation_memory_off"] = conversations(runs, path, args.turns, args.n_ctx, False, 0, cold=True)
    summary = {k: ({kk: vv for kk, vv in v.items() if kk not in ("per_turn", "per_pair")} if isinstance(v, dict) else v)
               for k, v in results.items()}  # fmt: skip
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
