"""Tool-calling strategies side by side on one model: constrained two steps vs the chat template's own.

Both strategies (``ChatLlamaCpp.tool_calling``, agentmm/tool_strategies.py) answer the same
labelled messages with the same tools bound (``roll_dice``, ``calculate``,
``current_datetime``), the same sampling settings and the same seed per message, on one
loaded model (default: Qwen2.5-Coder-0.5B-Instruct Q4_K_M, see MODELS.md "Larger models").
Per strategy:

- **calls well-formed**: of the replies that made a call, those whose every call has parsable
  arguments the tool accepts (the tool runs without an argument error);
- **right tool**: the call (or no call) is what the message asks for, over all messages;
- **correct arguments**: of the messages that ask for a tool, those whose call has the right
  arguments (the dice asked for; an expression that evaluates to the right number; any valid
  call for the date);
- **turn time**: seconds for the model's reply to the message (``invoke``: the decision and
  the call, or the words), median, and the ratio of medians.

Rounds alternate the order (ABBA) and run each strategy over all messages in a block, so the
system prompt and tools stay in llama.cpp's prefix cache as in a conversation.

Run: ``python benchmarks/tool_strategies.py [--model PATH] [--rounds 1] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

from agentmm.llm import ChatLlamaCpp
from agentmm.tools.builtin import calculate, current_datetime, evaluate, roll_dice

DEFAULT_MODEL = Path.home() / ".cache/agentmm-bench/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SYSTEM = "You are a game master running a fantasy adventure."
TOOLS = {t.name: t for t in (roll_dice, calculate, current_datetime)}
# (message, the tool it asks for or None, what its arguments must give)
LABELLED: list[tuple[str, str | None, Any]] = [
    ("Roll 2d6 for my attack please.", "roll_dice", "2d6"),
    ("Roll a d20 for initiative.", "roll_dice", "1d20"),
    ("Roll 1d8 damage for my sword.", "roll_dice", "1d8"),
    ("Can you roll 3d6 for my strength?", "roll_dice", "3d6"),
    ("Please roll 2d10 for the fireball.", "roll_dice", "2d10"),
    ("Roll 1d12 for the axe damage.", "roll_dice", "1d12"),
    ("What is 17 times 23?", "calculate", 391),
    ("How much is 144 divided by 12?", "calculate", 12),
    ("Add 256 and 512 for me.", "calculate", 768),
    ("What is (15 + 5) * 3?", "calculate", 60),
    ("What time is it right now?", "current_datetime", None),
    ("What is today's date?", "current_datetime", None),
    ("Tell me about the tavern tonight.", None, None),
    ("Who is the stranger in the corner?", None, None),
    ("I sit by the fire and warm my hands.", None, None),
    ("What do the bargemen talk about?", None, None),
]


def dice(notation: str) -> str:
    text = notation.lower().replace(" ", "")
    return "1" + text if text.startswith("d") else text


def args_right(name: str, args: dict[str, Any], expected: Any) -> bool:
    if name == "roll_dice":
        return dice(str(args.get("notation", ""))) == expected
    if name == "calculate":
        try:
            return float(evaluate(str(args.get("expression", "")))) == float(expected)
        except Exception:
            return False
    return True


def well_formed(reply: Any) -> bool:
    """Every call parses and its tool accepts the arguments."""
    if reply.invalid_tool_calls:
        return False
    for call in reply.tool_calls:
        tool = TOOLS.get(call["name"])
        if tool is None:
            return False
        try:
            tool.args_schema.model_validate(call["args"])  # type: ignore[union-attr]
        except Exception:
            return False
    return True


def answer_labelled(bound: Any) -> list[dict[str, Any]]:
    """Each labelled message answered by ``bound`` (a chat model with the tools bound), scored."""
    rows = []
    for i, (message, tool, expected) in enumerate(LABELLED):
        started = time.perf_counter()
        reply = bound.invoke([SystemMessage(SYSTEM), HumanMessage(message)], seed=100 + i)
        seconds = time.perf_counter() - started
        called = [c["name"] for c in reply.tool_calls] + [c.get("name") or "?" for c in reply.invalid_tool_calls]
        first = reply.tool_calls[0] if reply.tool_calls else None
        rows.append({
            "message": message, "expected": tool, "called": called, "seconds": round(seconds, 3),
            "made_call": bool(called), "well_formed": bool(called) and well_formed(reply),
            "right_tool": (called[:1] == [tool]) if tool else not called,
            "args_right": bool(tool and first and first["name"] == tool and args_right(tool, first["args"], expected)),
            "args": first["args"] if first else None, "text": reply.text[:120],
        })  # fmt: skip
    return rows


def run_block(model: ChatLlamaCpp, rows: dict[str, list[dict[str, Any]]]) -> None:
    rows[model.tool_calling].extend(answer_labelled(model.bind_tools(list(TOOLS.values()))))


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    made = [r for r in rows if r["made_call"]]
    asked = [r for r in rows if r["expected"]]
    return {
        "replies": len(rows),
        "calls_made": len(made),
        "calls_well_formed": sum(r["well_formed"] for r in made),
        "right_tool": sum(r["right_tool"] for r in rows),
        "asked_for_a_tool": len(asked),
        "correct_arguments": sum(r["args_right"] for r in asked),
        "median_turn_s": round(statistics.median(r["seconds"] for r in rows), 3),
        "median_turn_s_tool_messages": round(statistics.median(r["seconds"] for r in asked), 3),
        "median_turn_s_chat_messages": round(statistics.median(r["seconds"] for r in rows if not r["expected"]), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()
    base = ChatLlamaCpp(
        model_path=str(args.model), n_ctx=4096, temperature=args.temperature, max_tokens=args.max_tokens,
        n_threads=args.threads, n_gpu_layers=0,
    )  # fmt: skip
    base.invoke("Hello.")  # load once; both strategies share the loaded model
    strategies = ["constrained", "native"]
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in strategies}
    for r in range(args.rounds):
        for name in strategies if r % 2 == 0 else strategies[::-1]:
            run_block(base.model_copy(update={"tool_calling": name}), rows)
    report = {
        "model": args.model.name,
        "auto_picks": base.tool_strategy().name,
        "rounds": args.rounds,
        "summary": {name: summary(rows[name]) for name in strategies},
        "ratio_of_median_turn_s_native_to_constrained": round(
            statistics.median(r["seconds"] for r in rows["native"])
            / statistics.median(r["seconds"] for r in rows["constrained"]),
            3,
        ),
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
