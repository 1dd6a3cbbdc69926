"""Staying in character on both model tiers: ``agentmm eval persona`` (agentmm/persona_eval.py's
script and rules, run through the real turn) for each model, every built-in persona, several seeds.

Issue 16's goals: identity kept in at least 6 of 8 checks on the shipped model and 8 of 8 on the
Qwen tier, averaged over at least 3 seeds and 3 personas. Settings are agentmm's defaults (memory
on, each persona's own sampling), replies of at most ``--max-tokens`` (96, as the issue's probe).

Prompt techniques are compared by ablation (``--variants``): ``baseline`` (none of them),
``reminder`` (``persona_reminder`` set to ``agentmm.personas.prompt.PERSONA_REMINDER``: a short
in-character reminder after the user's message), ``guard`` (``persona_guard``: the sampling
guard of ``agentmm.character_guard`` against assistant disclaimers; on by default), and on top
of the guard: ``introduction`` (``persona_introduction`` set to ``PERSONA_INTRODUCTION``: an
exchange in which the character says its name, first among its examples), ``nocopy``
(``persona_copy_limit`` 10: ``agentmm.copy_guard``), ``introduction+nocopy`` (both), and
``start`` (the guard and ``persona_identity_start`` "I'm {{char}}": an answer to a message asking
who the character is begins with the character saying its name; ``agentmm.identity_questions``;
agentmm's defaults), and ``start+nocopy`` (the start with the copy guard, against its repeats).
Every other variant but these two has the start off.

Run: ``python benchmarks/persona_eval.py [--models smollm2,qwen0.5b] [--variants baseline,guard]
[--seeds 1,2,3] [--personas-dir DIR --personas A,B] [--json out.json]``; ``--personas-dir`` plays
your own persona files and cards as well (default: only the built-ins);
``benchmarks/persona_cards`` holds three V2 cards written for a check on characters the
development never used (Maren Holt, Odo Finch, Agathe Moss).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from agentmm.graphs.persona_eval import CheckResult, evaluate_personas
from agentmm.graphs.persona_eval import report as evaluation_report
from agentmm.persona_eval import card_text, score, script
from agentmm.personas.prompt import PERSONA_INTRODUCTION, PERSONA_REMINDER
from agentmm.personas.registry import PersonaRegistry
from agentmm.settings import load_settings

# Each technique alone against a baseline with none (the guard is on by default since it won,
# the identity start since it won too: ``start`` is agentmm's defaults).
_NO_START = {"persona_identity_start": ""}
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {"persona_guard": False, **_NO_START},
    "reminder": {"persona_reminder": PERSONA_REMINDER, "persona_guard": False, **_NO_START},
    "guard": {"persona_guard": True, **_NO_START},
    "introduction": {"persona_guard": True, "persona_introduction": PERSONA_INTRODUCTION, **_NO_START},
    "nocopy": {"persona_guard": True, "persona_copy_limit": 10, **_NO_START},
    "introduction+nocopy": {
        "persona_guard": True,
        "persona_introduction": PERSONA_INTRODUCTION,
        "persona_copy_limit": 10,
        **_NO_START,
    },
    "start": {"persona_guard": True, "persona_identity_start": "I'm {{char}}"},
    "start+nocopy": {"persona_guard": True, "persona_identity_start": "I'm {{char}}", "persona_copy_limit": 10},
}


def run(
    model: str, variant: str, seeds: list[int], max_tokens: int, personas: list[str], personas_dir: Path | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="agentmm-bench-persona-") as tmp:
        settings = load_settings(Path(tmp) / "no-config.toml", model=model, max_tokens=max_tokens,
                                 data_dir=Path(tmp) / "data", personas_dir=personas_dir or Path(tmp) / "personas",
                                 **VARIANTS[variant])  # fmt: skip
        started = time.perf_counter()
        report = evaluate_personas(settings, personas, seeds=seeds)
        report["wall_s"] = round(time.perf_counter() - started, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="smollm2,qwen0.5b")
    parser.add_argument("--variants", default="baseline,guard", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--personas", default="", help="comma-separated (default: the built-ins)")
    parser.add_argument("--personas-dir", type=Path, help="your persona files and cards (default: none)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--rescore", type=Path, help="score the replies a --json file holds again, by today's rules")
    args = parser.parse_args()
    if args.rescore:
        results = rescore(json.loads(args.rescore.read_text()), args.personas_dir)
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
        personas = [p for p in args.personas.split(",") if p]
        results = {"seeds": seeds, "max_tokens": args.max_tokens, "runs": []}
        for model in args.models.split(","):
            for variant in args.variants.split(","):
                report = run(model, variant, seeds, args.max_tokens, personas, args.personas_dir)
                results["runs"].append({"model": model, "variant": variant, "report": report})
    summary = {f"{r['model']} {r['variant']}": {"wall_s": r["report"]["wall_s"], **r["report"]["overall"]}
               for r in results["runs"]}  # fmt: skip
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def rescore(results: dict[str, Any], personas_dir: Path | None = None) -> dict[str, Any]:
    """``results`` (this script's ``--json``) with every reply scored again by the rules of
    ``agentmm.persona_eval`` as they are now: the same replies, so a change of rules is measured
    apart from any change of the model's behaviour. The built-in personas and those of
    ``personas_dir`` (their scripts are made again to find each step's lore facts)."""
    registry = PersonaRegistry(personas_dir)
    for run_ in results["runs"]:
        report = run_["report"]
        steps = {name: {s.turn: s for s in script(registry.get(name))} for name in report["personas"]}
        cards = {name: card_text(registry.get(name)) for name in report["personas"]}
        rows = [CheckResult(persona=c["persona"], seed=c["seed"], step=steps[c["persona"]][c["turn"]], reply=c["reply"],
                            score=score(steps[c["persona"]][c["turn"]], c["reply"], c["persona"], cards[c["persona"]]),
                            judged_in_character=c["judged_in_character"])
                for c in report["checks"]]  # fmt: skip
        run_["report"] = {**evaluation_report(rows, report["seeds"]), "wall_s": report["wall_s"]}
    return results


if __name__ == "__main__":
    main()
