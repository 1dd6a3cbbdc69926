"""Persona compose benchmark: the compose node with a 500-entry lorebook over a 50-turn window.

Times agentmm's real compose step (persona head, lore activation on the window, prompt
fitting with the shipped model's own tokenizer) per turn, and sets it beside the generate time
of the same turn on the shipped model, measured in the same run. Goal: compose ≤ 5 ms a turn.

Run: ``python benchmarks/personas.py [--entries 500] [--turns 50] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

from agentmm.graphs.chat import Composer, _persona_source, prompt_messages
from agentmm.llm import ChatLlamaCpp
from agentmm.models import resolve_model
from agentmm.personas import PersonaRegistry
from agentmm.state import TurnContext
from agentmm.tokens import TokenCounter

WORDS = [
    "harbour",
    "lantern",
    "compass",
    "storm",
    "cargo",
    "beacon",
    "tavern",
    "market",
    "oath",
    "river",
    "crown",
    "winter",
    "ember",
]


def persona_file(folder: Path, entries: int) -> None:
    rng = random.Random(1)
    lines = [
        'name = "Bench Keeper"',
        'description = "{{char}} keeps a harbour tavern and knows every story in town."',
        'personality = "warm, shrewd"',
        'scenario = "{{user}} walks in out of the rain."',
        'greetings = ["Welcome in, {{user}}."]',
        'post_history_instructions = "Reply as {{char}} only."',
        "[lorebook]",
        "scan_depth = 4",
        "token_budget = 300",
    ]
    for i in range(entries):
        keys = [f"{rng.choice(WORDS)}{i}", f"topic{i}"]
        if i % 25 == 0:
            keys.append(rng.choice(WORDS))  # some entries fire on common words
        lines += [
            "[[lorebook.entries]]",
            f'name = "entry {i}"',
            f"keys = {json.dumps(keys)}",
            f'content = "Lore {i}: the {rng.choice(WORDS)} of the {rng.choice(WORDS)} is {rng.randint(1, 99)} old."',
            f"priority = {rng.randint(0, 10)}",
        ]
    (folder / "bench.toml").write_text("\n".join(lines) + "\n")


def window(turns: int) -> list[Any]:
    rng = random.Random(2)
    messages: list[Any] = [AIMessage("Welcome in, User.")]
    for i in range(turns):
        messages.append(HumanMessage(f"Tell me about the {rng.choice(WORDS)} and topic{i * 7} please."))
        messages.append(AIMessage(" ".join(rng.choice(WORDS) for _ in range(40))))
    return messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=500)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="agentmm-personas-"))
    persona_file(folder, args.entries)
    registry = PersonaRegistry(folder, entry_points=False)
    model = ChatLlamaCpp(model_path=str(resolve_model("smollm2").path), n_ctx=8192, max_tokens=64, temperature=0,
                         seed=1)  # fmt: skip
    counter = TokenCounter.for_model(model)
    composer = Composer(counter, _persona_source(registry), "", n_ctx=8192, reply_tokens=256)
    messages = window(args.turns)
    config = {"configurable": {"thread_id": "bench"}}

    class Runtime:
        context = TurnContext()

    base: dict[str, Any] = {"messages": messages, "persona": "Bench Keeper", "started_at": "2026-01-01T00:00:00+00:00"}
    composer(base, config, Runtime())  # first call: compiles the lorebook and fills the token cache
    times, fired = [], 0
    for i in range(args.repeats):
        state = {**base, "messages": [*messages, HumanMessage(f"And the {WORDS[i % len(WORDS)]}{i} topic{i}?")]}
        started = time.perf_counter()
        update = composer(state, config, Runtime())
        times.append(time.perf_counter() - started)
        fired = len(update["trace"]["lore"])
    compose_ms = statistics.median(times) * 1000
    # The generate time of the same prompt on the shipped model, for the ratio.
    state = {**base, **update, "messages": state["messages"]}
    prompt = prompt_messages(state)
    model.invoke(prompt)
    started = time.perf_counter()
    reply = model.invoke(prompt)
    generate_s = time.perf_counter() - started
    results = {
        "lore_entries": args.entries,
        "window_turns": args.turns,
        "prompt_tokens": update["trace"]["budget"]["prompt_tokens"],
        "lore_fired_per_turn": fired,
        "compose_ms_median": round(compose_ms, 3),
        "compose_ms_p95": round(sorted(times)[int(0.95 * len(times)) - 1] * 1000, 3),
        "generate_s": round(generate_s, 3),
        "generate_tokens": (reply.usage_metadata or {}).get("output_tokens"),
        "compose_over_generate": round(compose_ms / 1000 / generate_s, 5),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
