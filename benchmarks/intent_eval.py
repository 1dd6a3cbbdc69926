"""Intent-aware turns, measured: how often the turn's intent (``agentmm.intent``) is right on the
labelled set (``benchmarks/intent_set.py``) per model tier, what the decision costs, what skipping
recall saves, and whether memory questions still recall.

Accuracy: for each built-in persona, a real thread (``Agent``, intent on, the three built-in
tools enabled) is opened with the persona's two opening messages; then each labelled message is
decided by the graph's own ``intent`` node (``DecideIntent.decide``) on that thread's state, as
the next turn would decide it: after the thread's real prompt, with its tools and (for the
messages marked so) an attachment. Reported per intent and overall, with the messages an
out-of-character marker decides by rule counted apart (``not_by_rule``). Both classifiers
(``--classifiers examples,model``) are measured; the examples one reads neither the thread nor the
chat model, so it answers alike on both tiers (run on each anyway, as a check).

Latency: the same eight messages (two per intent but attachment, to Bram Tolliver, whose thread
has tools) as real turns with memory on, once with intent off (recall every turn, the tool
decision every turn) and once with intent on and ``intent_recall = ["recall"]`` (the lean
route), each after the same opening said in another thread; per-turn medians of the whole turn,
the time to the first token, recall's and the intent decision's time, and for the recall
questions whether the memory they ask for (the sister's name, said in the other thread) was
recalled.

Run: ``python benchmarks/intent_eval.py [--models smollm2,qwen0.5b] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from langchain_core.messages import HumanMessage

sys.path.insert(0, str(Path(__file__).resolve().parent))

from intent_set import INTENT_ORDER, OPENINGS, SET

from agentmm.graphs.agent import Agent
from agentmm.graphs.chat import intent_examples
from agentmm.graphs.intent import DecideIntent
from agentmm.graphs.tool_calls import ToolBox
from agentmm.intent import allowed_intents
from agentmm.settings import Settings, load_settings

TOOLS = ["roll_dice", "calculate", "current_datetime"]
LATENCY_PERSONA = "bram-tolliver"
LATENCY_MESSAGES = [
    ("chat", "Pour me your darkest ale, would you?"),
    ("recall", "What did I tell you about my sister?"),
    ("tool", "Roll 2d6 for me, I'm betting on the dice game."),
    ("ooc", "Stop role-playing for a second and explain how the memory feature works."),
    ("chat", "Who's the grim fellow in the corner booth?"),
    ("recall", "Who did I say arrives on the morning barge?"),
    ("tool", "What time is it right now?"),
    ("ooc", "OOC: can you keep your replies shorter from now on?"),
]


def _settings(tmp: Path, model: str, **extra: Any) -> Settings:
    return load_settings(tmp / "no-config.toml", model=model, data_dir=tmp / "data", personas_dir=tmp / "personas",
                         tools=TOOLS, **extra)  # fmt: skip


def accuracy(model: str, classifier: str) -> dict[str, Any]:
    """Each labelled message decided after its persona's real opening, by ``classifier``
    (``examples`` or ``model``)."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="agentmm-bench-intent-") as tmp:
        settings = _settings(Path(tmp), model, memory=False, intent=True, max_tokens=48)
        with Agent(settings) as agent:
            examples = intent_examples(settings, agent.runtime) if classifier == "examples" else None
            decider = DecideIntent(agent.model, lambda: agent.personas, ToolBox(agent.tools, lambda: agent.personas),
                                   memory=False, recall_for=settings.intent_recall, examples=examples)  # fmt: skip
            runtime = SimpleNamespace(context=None)
            for persona, opening in OPENINGS.items():
                thread = f"intent-{persona}"
                for i, text in enumerate(opening):
                    agent.chat(text, thread, persona=persona if i == 0 else None)
                values = agent.graph.get_state(agent.config(thread)).values
                for item in (i for i in SET if i.persona == persona):
                    state = {**values, "messages": [*values["messages"], HumanMessage(item.message)],
                             "attachments": ["sent.file"] if item.attachment else []}  # fmt: skip
                    offered = decider.toolbox.offered(state)  # type: ignore[union-attr,arg-type]
                    choices = allowed_intents(has_tools=bool(offered), has_attachments=item.attachment)
                    started = time.perf_counter()
                    decision = decider.decide(state, runtime, choices, offered)  # type: ignore[arg-type]
                    rows.append({"persona": persona, "message": item.message, "label": item.intent,
                                 "intent": decision.intent, "decided_by": decision.decided_by,
                                 "seconds": round(time.perf_counter() - started, 4)})  # fmt: skip
    return {"per_intent": _per_intent(rows), "overall": _share(rows),
            "not_by_rule": _share([r for r in rows if r["decided_by"] != "rule"]),
            "confusion": _confusion(rows), "decision_p50_s": _median([r["seconds"] for r in rows
                                                                      if r["decided_by"] == classifier]),
            "rows": rows}  # fmt: skip


def persona_script(model: str) -> dict[str, Any]:
    """A set this classifier's examples were not written against: the persona eval's own
    messages (``agentmm.persona_eval``), all in-character talk (identity questions, "are you
    an AI?" baits, small talk; "Where were we?" left out as it is fairly a question about the
    past), decided by the examples classifier with every intent allowed but tool and
    attachment. What matters most here is that none is taken for out of character."""
    from agentmm.persona_eval import IDENTITY, PRESSURE, SMALL_TALK

    messages = [*IDENTITY, PRESSURE[0], *(t for t in SMALL_TALK if "Where were we" not in t)]
    with tempfile.TemporaryDirectory(prefix="agentmm-bench-intent-") as tmp:
        settings = _settings(Path(tmp), model, memory=False, intent=True)
        with Agent(settings) as agent:
            classifier = intent_examples(settings, agent.runtime)
            choices = allowed_intents(has_tools=False, has_attachments=False)
            got = [classifier.classify(m, choices)[0] for m in messages]
    wrong = [m for m, g in zip(messages, got, strict=True) if g != "chat"]
    return {"messages": len(messages), "chat": got.count("chat"), "recall": got.count("recall"),
            "ooc": got.count("ooc"), "not_chat": wrong}  # fmt: skip


def latency(model: str) -> dict[str, Any]:
    """The same turns with intent off and on (lean recall), memory on."""
    runs: dict[str, Any] = {}
    variants = {"intent off": {"intent": False}, "intent on": {"intent": True, "intent_recall": ["recall"]}}
    for name, extra in variants.items():
        with tempfile.TemporaryDirectory(prefix="agentmm-bench-intent-") as tmp:
            settings = _settings(Path(tmp), model, memory=True, max_tokens=32, **extra)
            turns: list[dict[str, Any]] = []
            with Agent(settings) as agent:
                # The opening (the sister's name) is said in another thread, so only recall can
                # bring it into this one (a memory already in the prompt is never recalled).
                for i, text in enumerate(OPENINGS[LATENCY_PERSONA]):
                    agent.chat(text, "earlier", persona=LATENCY_PERSONA if i == 0 else None)
                for i, (label, text) in enumerate(LATENCY_MESSAGES):
                    result = agent.chat(text, "latency", persona=LATENCY_PERSONA if i == 0 else None)
                    trace, timings = result.trace, result.trace.get("timings", {})
                    recalled = " ".join(str(r.get("text", "")) for r in trace.get("recalled") or [])
                    turns.append({"label": label, "intent": result.intent, "total_s": result.timings.total_s,
                                  "ttft_s": result.timings.ttft_s,
                                  "recall_s": timings.get("recall_s"), "intent_s": timings.get("intent_s"),
                                  "recalled": "recall" in trace.get("path", []), "found_sister": "Marta" in recalled,
                                  "tool_calls": len(trace.get("tool_calls") or [])})  # fmt: skip
            runs[name] = {"turns": turns, "total_p50_s": _median([t["total_s"] for t in turns]),
                          "ttft_p50_s": _median([t["ttft_s"] for t in turns]),
                          "recall_p50_s": _median([t["recall_s"] for t in turns if t["recall_s"] is not None]),
                          "intent_p50_s": _median([t["intent_s"] for t in turns if t["intent_s"] is not None]),
                          "recall_turns": sum(t["recalled"] for t in turns),
                          "recall_questions_found": sum(t["found_sister"] for t in turns
                                                        if t["label"] == "recall")}  # fmt: skip
    return runs


def _share(rows: list[dict[str, Any]]) -> dict[str, Any]:
    right = sum(r["intent"] == r["label"] for r in rows)
    return {"right": right, "of": len(rows), "accuracy": round(100 * right / len(rows), 1) if rows else None}


def _per_intent(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {intent: _share([r for r in rows if r["label"] == intent]) for intent in INTENT_ORDER}


def _confusion(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    return {label: dict(Counter(r["intent"] for r in rows if r["label"] == label)) for label in INTENT_ORDER}


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="smollm2,qwen0.5b")
    parser.add_argument("--classifiers", default="examples,model")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results: dict[str, Any] = {"messages": len(SET), "models": {}}
    for model in args.models.split(","):
        classifiers = [c for c in args.classifiers.split(",") if c]
        entry: dict[str, Any] = {"accuracy": {c: accuracy(model, c) for c in classifiers}}
        entry["persona_script"] = persona_script(model)
        print(json.dumps({f"{model} persona script": entry["persona_script"]}), flush=True)
        if not args.skip_latency:
            entry["latency"] = latency(model)
        results["models"][model] = entry
        for name, acc in entry["accuracy"].items():
            print(json.dumps({f"{model} {name}": {"overall": acc["overall"], "not_by_rule": acc["not_by_rule"],
                                                  "per_intent": acc["per_intent"],
                                                  "decision_p50_s": acc["decision_p50_s"]}}), flush=True)  # fmt: skip
        if "latency" in entry:
            print(json.dumps({model: {k: {m: v for m, v in run.items() if m != "turns"}
                                      for k, run in entry["latency"].items()}}), flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
