"""Model-server benchmark: agentmm on an OpenAI-compatible server (``model_url``) vs the same
messages sent straight with the ``openai`` client, side by side in one run, on one server.

Two llama-cpp-python servers (``python -m llama_cpp.server``) run the shipped model on free
loopback ports, one for each side, each with its own prompt cache. Each round is one N-turn
conversation through ``Agent(model_url=...)`` (memory off) on the first, and turn by turn right
after each of its turns, the same request raw on the second: exactly the messages agentmm's turn
sent (read back from the thread with ``prompt_messages``), with the same sampling (greedy, fixed
seed, same max_tokens). Pairs adjacent in time share whatever load this shared 2-core machine
has; both servers see the same cache pattern (turn i+1's prompt extends turn i's), and a
request with another head empties both caches before each round.

Reported: per turn, the client's time to the first text and to the end of the turn, each side;
the ratio of medians agentmm ÷ raw for both (and the median of per-turn ratios); and prompt
reuse, read from the server's own log (llama-cpp-python's ``Llama.generate: N prefix-match hit,
remaining M prompt tokens to eval``; its streamed replies carry no usage, so no cached-token
count comes back to the client). As a control, the last turn's messages are sent once more with
the head changed (the system prompt gets a word in front), which forces a full prefill: its
first-token time against the last turn's is what the append-only prompt saves.

Run: ``python benchmarks/model_server.py [--turns 12] [--rounds 2] [--max-tokens 48] [--json out.json]``.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # turn.QUESTIONS: the turn benchmark's questions
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests.llama_server

from langchain_core.messages import BaseMessage
from turn import QUESTIONS

from agentmm.graphs.agent import Agent
from agentmm.graphs.chat import prompt_messages
from agentmm.models import resolve_model
from tests.llama_server import LlamaServer

ROLES = {"system": "system", "human": "user", "ai": "assistant"}
PREFIX_HIT = re.compile(r"(\d+) prefix-match hit, remaining (\d+) prompt tokens to eval")
PROMPT_EVAL = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")


def as_openai(messages: list[BaseMessage]) -> list[dict[str, str]]:
    return [{"role": ROLES[m.type], "content": m.text} for m in messages]


class ServerLog:
    """What the server logged since the last ``take``: the prompt tokens it re-used and evaluated."""

    def __init__(self, server: LlamaServer) -> None:
        self.server = server
        self.offset = len(server.log())

    def take(self) -> dict[str, int]:
        time.sleep(0.05)  # the server's last lines land just after the stream ends
        text = self.server.log()
        new, self.offset = text[self.offset :], len(text)
        hits = [(int(a), int(b)) for a, b in PREFIX_HIT.findall(new)]
        evals = [int(tokens) for _, tokens in PROMPT_EVAL.findall(new)]
        reused = sum(hit for hit, _ in hits)
        evaluated = sum(evals) if evals else sum(rest for _, rest in hits)
        return {"reused_tokens": reused, "evaluated_tokens": evaluated, "prompt_tokens": reused + evaluated}


def flush(client: Any, model: str) -> None:
    """A request with another head: the server's prompt cache no longer holds the conversation."""
    client.chat.completions.create(model=model, max_tokens=1, temperature=0.0,
                                   messages=[{"role": "system", "content": f"Flush {time.time_ns()}."},
                                             {"role": "user", "content": "Hi"}])  # fmt: skip


def raw_turn(client: Any, model: str, messages: list[dict[str, str]], sampling: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    first = None
    text = []
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True, **sampling):
        if chunk.choices and (piece := chunk.choices[0].delta.content):
            text.append(piece)
            first = first or time.perf_counter()
    ended = time.perf_counter()
    return {"ttft_s": (first or ended) - started, "total_s": ended - started, "text": "".join(text)}


def one_round(agent_url: str, raw_url: str, raw_log: ServerLog, agent_log: ServerLog, client: Any, model: str,
              turns: int, sampling: dict[str, Any], n_ctx: int) -> dict[str, Any]:  # fmt: skip
    """One conversation, turn by turn: agentmm's turn i on its server, then the same messages raw
    on the other, so a burst of load on this shared machine falls on both sides of a pair."""
    data_dir = Path(tempfile.mkdtemp(prefix="agentmm-bench-server-"))
    ours, raw = [], []
    messages: list[dict[str, str]] = []
    with Agent(model_url=agent_url, memory=False, data_dir=data_dir, cache_dir=data_dir / "cache", n_ctx=n_ctx,
               max_tokens=sampling["max_tokens"], temperature=sampling["temperature"], top_p=sampling["top_p"],
               seed=sampling["seed"]) as agent:  # fmt: skip
        agent.chat("Hello!")  # the Agent's first call builds its graph: kept out of turn 1's time
        flush(client, model)
        flush(agent.model.root_client, model)
        agent_log.take(), raw_log.take()
        thread = None
        for i in range(turns):
            started = time.perf_counter()
            first = None
            turn = agent.stream(QUESTIONS[i % len(QUESTIONS)] + f" Turn {i + 1}.", thread_id=thread)
            for piece in turn:
                if piece and first is None:
                    first = time.perf_counter()
            ended = time.perf_counter()
            result = turn.result
            thread = result.thread_id
            ours.append({"turn": i + 1, "ttft_s": (first or ended) - started, "total_s": ended - started,
                         "text": result.reply, "tokenizer": result.trace.get("tokenizer"),
                         **agent_log.take()})  # fmt: skip
            messages = as_openai(prompt_messages(agent.graph.get_state(agent.config(thread)).values)[:-1])
            raw.append({"turn": i + 1, **raw_turn(client, model, messages, sampling), **raw_log.take()})
    # The control: the last turn's messages with the head changed, a full prefill.
    moved = [dict(messages[0], content="Note. " + messages[0]["content"]), *messages[1:]]
    cold = {**raw_turn(client, model, moved, sampling), **raw_log.take()}
    return {"agentmm": {"rows": ours}, "raw": {"rows": raw, "head_changed_last_turn": cold}}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    pairs = [(a, r) for one in rounds for a, r in zip(one["agentmm"]["rows"], one["raw"]["rows"], strict=True)]
    later = [(a, r) for a, r in pairs if a["turn"] > 1]  # turn 1 prefills the whole (short) prompt on both sides
    out: dict[str, Any] = {"turns_measured": len(pairs)}
    for key in ("ttft_s", "total_s"):
        ours, raw = median([a[key] for a, _ in pairs]), median([r[key] for _, r in pairs])
        out[f"agentmm_{key}_median"] = ours
        out[f"raw_{key}_median"] = raw
        out[f"{key}_ratio_of_medians"] = ours / raw
        out[f"{key}_median_of_pair_ratios"] = median([a[key] / r[key] for a, r in pairs])
    out["same_replies"] = sum(a["text"] == r["text"] for a, r in pairs) / len(pairs)
    out["agentmm_reused_share_after_turn1"] = median(
        [a["reused_tokens"] / max(a["prompt_tokens"], 1) for a, _ in later]
    )
    out["raw_reused_share_after_turn1"] = median([r["reused_tokens"] / max(r["prompt_tokens"], 1) for _, r in later])
    out["agentmm_evaluated_tokens_median_after_turn1"] = median([a["evaluated_tokens"] for a, _ in later])
    last = [one["raw"]["rows"][-1] for one in rounds]
    cold = [one["raw"]["head_changed_last_turn"] for one in rounds]
    out["last_turn_prompt_tokens"] = last[0]["prompt_tokens"]
    out["last_turn_ttft_s"] = median([row["ttft_s"] for row in last])
    out["last_turn_head_changed_ttft_s"] = median([row["ttft_s"] for row in cold])
    out["head_changed_evaluated_tokens"] = cold[0]["evaluated_tokens"]
    out["head_change_ttft_factor"] = out["last_turn_head_changed_ttft_s"] / out["last_turn_ttft_s"]
    out["agentmm_tokenizer"] = rounds[0]["agentmm"]["rows"][0]["tokenizer"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--turns", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2, help="conversations, each side, alternating")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="the server's CPU threads")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    import openai

    path = resolve_model(args.model).path
    sampling = {"max_tokens": args.max_tokens, "temperature": 0.0, "top_p": 0.95, "seed": 1}
    rounds = []
    load_before = os.getloadavg()
    # Two servers on the same model: agentmm's conversation on one, raw's on the other, each
    # with its own prompt cache, so the pairs can alternate turn by turn.
    with LlamaServer(path, n_ctx=args.n_ctx, n_threads=args.threads) as ours, \
            LlamaServer(path, n_ctx=args.n_ctx, n_threads=args.threads) as theirs:  # fmt: skip
        client = openai.OpenAI(base_url=theirs.url, api_key="not-needed", max_retries=0)
        agent_log, raw_log = ServerLog(ours), ServerLog(theirs)
        for _ in range(args.rounds):
            rounds.append(one_round(ours.url, theirs.url, raw_log, agent_log, client, args.model, args.turns, sampling,
                                    args.n_ctx))  # fmt: skip
    load_after = os.getloadavg()
    results = {"model": str(path), "cpu_count": os.cpu_count(), "server": "llama-cpp-python",
               "turns": args.turns, "rounds": args.rounds, "max_tokens": args.max_tokens, "n_ctx": args.n_ctx,
               "load_average_before": load_before, "load_average_after": load_after,
               "summary": summarise(rounds), "per_round": rounds}  # fmt: skip
    print(json.dumps(results["summary"], indent=2))
    for row_a, row_r in zip(rounds[0]["agentmm"]["rows"], rounds[0]["raw"]["rows"], strict=True):
        print(f"turn {row_a['turn']:>2}: agentmm ttft {row_a['ttft_s']:.3f} s total {row_a['total_s']:.3f} s "
              f"(reused {row_a['reused_tokens']}/{row_a['prompt_tokens']}) | raw ttft {row_r['ttft_s']:.3f} s "
              f"total {row_r['total_s']:.3f} s (reused {row_r['reused_tokens']}/{row_r['prompt_tokens']})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
