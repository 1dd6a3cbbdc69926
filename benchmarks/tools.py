"""Tool-calling benchmark on the shipped model (SmolLM2-135M), side by side in one run.

Measures:
- **turn overhead**: the same conversations through two Agents on one loaded model, one with
  a zero-cost tool bound (a fake ``weather_forecast``) and one without tools; same seed, same
  messages, ABBA order. Reported as the median of per-turn ratios and the ratio of medians
  (goal ≤ 1.10). A turn where the model chose to call the tool is counted apart.
- **well-formed calls**: the dice tool forced (``tool_choice="roll_dice"``), with the
  grammar (agentmm's default) and without it (``constrain_tool_calls=False``, the model writes
  the JSON freely): a call is well-formed when its arguments parse and validate against the
  tool's schema; "usable" when the tool also accepts them.
- **right arguments**: the dice forced at temperature 0.8, the arguments written greedy (as
  shipped) and sampled at the reply's temperature (before), alternately, the same seeds: how
  often they are the dice the message asked for.
- **dice end to end**: ``Agent.chat`` with ``roll_dice`` enabled (tool choice left to the
  model) on 20 dice requests: how often the model called the tool, how often the call ran and
  asked for the right dice, and how many replies were empty, with and without the words-first
  retry (``agentmm.words_first``).

Run: ``python benchmarks/tools.py [--rounds 4] [--tries 20] [--only arguments] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool

from agentmm.graphs.agent import Agent
from agentmm.llama_generation import Generation
from agentmm.llm import ChatLlamaCpp
from agentmm.settings import load_settings
from agentmm.tool_strategies import ConstrainedToolCalling
from agentmm.tools.builtin import DiceArgs, roll_dice

CHAT = [
    "Tell me about the tavern tonight.",
    "Who is the stranger in the corner?",
    "What is good to eat here?",
    "I sit by the fire and warm my hands.",
    "Any news from the river?",
    "What do the bargemen talk about?",
]
DICE = [
    "Roll 2d6 for my attack please.",
    "Roll a d20 for initiative.",
    "Roll 1d8 damage for my sword.",
    "Can you roll 3d6 for my strength?",
    "Roll a d20, I try to climb the wall.",
    "Roll 4d6 and keep the highest 3.",
    "Roll 1d4 for the dagger.",
    "Please roll 2d10 for the fireball.",
    "Roll d100 to see if it rains.",
    "Roll 1d12 for the axe damage.",
]
SYSTEM = "You are a game master running a fantasy adventure."
# The dice each DICE message asks for, in one spelling (see ``same_dice``).
ASKED = ["2d6", "1d20", "1d8", "3d6", "1d20", "4d6kh3", "1d4", "2d10", "1d100", "1d12"]


@tool
def weather_forecast(town: str) -> str:
    """Tomorrow's weather forecast for a town (a zero-cost fake: measures overhead only)."""
    return "sunny"


def conversation(agent: Agent, thread: str) -> list[tuple[float, dict[str, Any]]]:
    """One thread of the CHAT turns: (seconds, trace) per turn."""
    turns = []
    for text in CHAT:
        started = time.perf_counter()
        result = agent.chat(text, thread)
        turns.append((time.perf_counter() - started, result.trace))
    return turns


def overhead(rounds: int, settings: dict[str, Any]) -> dict[str, Any]:
    """Whole conversations, with and without the tool, in ABBA order. Not turn by turn: the
    tools sit in the system message, so alternating the two agents on one model would throw
    away llama.cpp's prefix cache at every turn, which no real conversation does."""
    plain = Agent(tools=[], system_prompt=SYSTEM, **settings)
    bound = Agent(tools=[weather_forecast], system_prompt=SYSTEM, **settings)
    plain.chat("Warm up.")  # load the model once; both agents share it
    ratios, with_tools, without, called = [], [], [], 0
    for r in range(rounds):
        order = [bound, plain] if r % 2 else [plain, bound]
        runs = {id(agent): conversation(agent, f"round-{r}-{id(agent)}") for agent in order}
        # Turn 1 prefills the system message, which differs; later turns reuse it.
        for (t_bound, trace), (t_plain, _) in list(zip(runs[id(bound)], runs[id(plain)], strict=True))[1:]:
            if trace.get("tool_calls"):
                called += 1
                continue
            with_tools.append(t_bound)
            without.append(t_plain)
            ratios.append(t_bound / t_plain)
    if not ratios:
        return {"turns_compared": 0, "turns_where_model_called_the_tool": called}
    return {
        "turns_compared": len(ratios),
        "turns_where_model_called_the_tool": called,
        "median_turn_s_with_tools": round(statistics.median(with_tools), 4),
        "median_turn_s_without": round(statistics.median(without), 4),
        "median_of_turn_ratios": round(statistics.median(ratios), 3),
        "ratio_of_medians": round(statistics.median(with_tools) / statistics.median(without), 3),
    }


def well_formed(model: ChatLlamaCpp, tries: int) -> dict[str, Any]:
    results = {}
    for constrained in (True, False):
        variant = model.model_copy(update={"constrain_tool_calls": constrained, "temperature": 0.8})
        formed = usable = 0
        for i in range(tries):
            seeded = variant.model_copy(update={"seed": 100 + i})
            reply = seeded.bind_tools([roll_dice], tool_choice="roll_dice").invoke(
                [SystemMessage(SYSTEM), HumanMessage(DICE[i % len(DICE)])]
            )
            if reply.tool_calls:
                try:
                    DiceArgs(**reply.tool_calls[0]["args"])
                except Exception:
                    continue
                formed += 1
                usable += roll_dice.invoke(reply.tool_calls[0]).status != "error"
        results["constrained" if constrained else "unconstrained"] = {
            "tries": tries, "well_formed": formed, "usable_by_the_tool": usable,
        }  # fmt: skip
    return results


def same_dice(notation: str, asked: str) -> bool:
    """Whether ``notation`` is the dice ``asked`` for (``d20`` is ``1d20``, ``d%`` is ``1d100``,
    ``k3`` is ``kh3``)."""
    plain = notation.lower().replace(" ", "").replace("d%", "d100")
    plain = re.sub(r"k(\d)", r"kh\1", "1" + plain if plain.startswith("d") else plain)
    return plain == asked


def right_arguments(model: ChatLlamaCpp, tries: int) -> dict[str, Any]:
    """Forced dice calls at temperature 0.8: the arguments greedy (as shipped) and sampled at the
    reply's temperature (before), one message after the other, the same seed for both."""
    counts = {"greedy": [0, 0], "sampled": [0, 0]}  # [asked dice, the tool could roll them]
    examples: dict[str, list[str]] = {"greedy": [], "sampled": []}
    variant = model.model_copy(update={"temperature": 0.8})
    try:
        for i in range(tries):
            for way in ("greedy", "sampled") if i % 2 == 0 else ("sampled", "greedy"):
                ConstrainedToolCalling.greedy_arguments = way == "greedy"
                seeded = variant.model_copy(update={"seed": 100 + i})
                reply = seeded.bind_tools([roll_dice], tool_choice="roll_dice").invoke(
                    [SystemMessage(SYSTEM), HumanMessage(DICE[i % len(DICE)])]
                )
                notation = str(reply.tool_calls[0]["args"].get("notation", "")) if reply.tool_calls else ""
                counts[way][0] += same_dice(notation, ASKED[i % len(DICE)])
                counts[way][1] += roll_dice.invoke(reply.tool_calls[0]).status != "error" if reply.tool_calls else 0
                if len(examples[way]) < 10:
                    examples[way].append(notation)
    finally:
        ConstrainedToolCalling.greedy_arguments = True
    return {
        way: {"tries": tries, "the_dice_asked_for": asked, "usable_by_the_tool": usable, "first_ten": examples[way]}
        for way, (asked, usable) in counts.items()
    }


def end_to_end(tries: int, settings: dict[str, Any]) -> dict[str, Any]:
    """``Agent.chat`` on dice requests, the tool choice left to the model: with the words-first
    retry of a reply that ended before a word (as shipped) and without it, alternately."""
    shipped_words_first = Generation._words_first
    results = {}
    for way in ("words_first", "without"):
        called = ran = asked = empty = 0
        examples = []
        if way == "without":
            Generation._words_first = lambda self, guards: guards  # type: ignore[method-assign]
        try:
            for i in range(tries):
                message = DICE[i % len(DICE)]
                with Agent(tools=[roll_dice], system_prompt=SYSTEM, **{**settings, "seed": 200 + i}) as agent:
                    result = agent.chat(message)
                calls = result.trace.get("tool_calls") or []
                called += any(c["name"] == "roll_dice" for c in calls)
                ran += any(c["name"] == "roll_dice" and c["status"] == "ok" for c in calls)
                asked += any(same_dice(str(c["args"].get("notation", "")), ASKED[i % len(DICE)]) for c in calls)
                empty += not result.reply.strip()
                if calls and len(examples) < 5:
                    examples.append({"message": message, "args": calls[0]["args"], "status": calls[0]["status"],
                                     "reply": result.reply[:80]})  # fmt: skip
        finally:
            Generation._words_first = shipped_words_first  # type: ignore[method-assign]
        results[way] = {"tries": tries, "model_called_the_tool": called, "call_ran_ok": ran,
                        "the_dice_asked_for": asked, "empty_replies": empty, "examples": examples}  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", dest="json_out")
    parser.add_argument("--only", choices=["overhead", "forced", "arguments", "end_to_end"], action="append",
                        help="run only these measures (repeatable; default: all)")  # fmt: skip
    args = parser.parse_args()
    data_dir = tempfile.mkdtemp(prefix="agentmm-bench-tools-")
    settings = {"data_dir": data_dir, "memory": False, "max_tokens": args.max_tokens, "seed": 1, "temperature": 0.7}
    model = ChatLlamaCpp.from_settings(load_settings(**settings))
    wanted = set(args.only or ["overhead", "forced", "arguments", "end_to_end"])
    report: dict[str, Any] = {"model": model.display_name}
    if "overhead" in wanted:
        report["overhead"] = overhead(args.rounds, settings)
    if "forced" in wanted:
        report["well_formed_forced_calls"] = well_formed(model, args.tries)
    if "arguments" in wanted:
        report["right_arguments_forced_calls"] = right_arguments(model, args.tries)
    if "end_to_end" in wanted:
        report["dice_end_to_end"] = end_to_end(args.tries, settings)
    print(json.dumps(report, indent=2))
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(report, out, indent=2)


if __name__ == "__main__":
    main()
