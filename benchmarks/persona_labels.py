"""How well the persona eval's giveaway rule (``agentmm.persona_eval.disclaimer``) agrees with a
person's labels, on replies labelled without seeing what the rule said.

Two steps:

1. ``python benchmarks/persona_labels.py sheet RUN.json [RUN.json ...] --out sheet.jsonl``: every
   reply of ``benchmarks/persona_eval.py --json`` runs, shuffled (fixed seed), with the message it
   answers and nothing the rules said. A person fills in each row's ``giveaway`` (the speaker
   says or accepts that it is an AI, a model, a program, a chatbot, an assistant, a script or a
   character being played, or that someone made, trained or programmed it; ``borderline`` where
   that is a reading of a muddled sentence) and ``assistant_voice`` (no such claim, but out of
   character all the same: an assistant's refusal or service phrase, "I'm here to answer any
   questions you may have", or the prompt's own text said back).
2. ``python benchmarks/persona_labels.py score sheet.jsonl [...]``: the rules as they are now
   against the labels: giveaways (``agentmm.persona_eval.disclaimer``) counted all and without
   the borderline ones, assistant voice (``assistant_voice`` or ``prompt_leak``), precision and
   recall, and every disagreement.

Labels are only held out for rules written before them; once a rule is changed by reading the
disagreements, the same labels are development data. ``benchmarks/persona_labels/`` holds the
labelled sheets of stop 31 (seeds 4-6, both tiers, 432 replies each) and says which rules they
were held out for.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from agentmm.persona_eval import assistant_voice, disclaimer, prompt_leak

SHUFFLE_SEED = 31


def sheet_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The replies of ``runs`` (persona_eval ``--json`` files), blind and shuffled."""
    rows = [{"model": run_["model"], "persona": check["persona"], "seed": check["seed"], "turn": check["turn"],
             "kind": check["kind"], "message": check["message"], "reply": check["reply"], "giveaway": None,
             "borderline": None, "assistant_voice": None, "note": ""}
            for results in runs for run_ in results["runs"] for check in run_["report"]["checks"]]  # fmt: skip
    random.Random(SHUFFLE_SEED).shuffle(rows)
    for number, row in enumerate(rows, 1):
        row["id"] = number
    return rows


def agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Today's rules against the labels of ``rows``."""
    labelled = [row for row in rows if row["giveaway"] is not None]
    found = [{**row, "rule": disclaimer(row["reply"]),
              "voice": assistant_voice(row["reply"]) or prompt_leak(row["reply"])} for row in labelled]  # fmt: skip
    strict = [row for row in found if not (row["giveaway"] and row.get("borderline"))]
    return {
        "labelled": len(labelled),
        "giveaway": _confusion(found, "giveaway", "rule"),
        "giveaway_without_borderline": _confusion(strict, "giveaway", "rule"),
        "assistant_voice": _confusion([r for r in found if not r["giveaway"]], "assistant_voice", "voice"),
    }


def _confusion(rows: list[dict[str, Any]], label: str, rule: str) -> dict[str, Any]:
    hit = [r for r in rows if r[label] and r[rule]]
    missed = [r for r in rows if r[label] and not r[rule]]
    false = [r for r in rows if not r[label] and r[rule]]
    return {
        "labelled": len(hit) + len(missed),
        "found": len(hit),
        "missed": len(missed),
        "false_flags": len(false),
        "precision": round(len(hit) / max(1, len(hit) + len(false)), 3),
        "recall": round(len(hit) / max(1, len(hit) + len(missed)), 3),
        "missed_replies": [_brief(r) for r in missed],
        "false_flag_replies": [{**_brief(r), "rule_matched": r[rule]} for r in false],
    }


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in ("id", "model", "persona", "seed", "turn", "kind", "reply")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("sheet", help="a blind labelling sheet from persona_eval --json runs")
    make.add_argument("runs", type=Path, nargs="+")
    make.add_argument("--out", type=Path, required=True)
    check = commands.add_parser("score", help="today's rules against labelled sheets")
    check.add_argument("sheets", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "sheet":
        rows = sheet_rows([json.loads(path.read_text()) for path in args.runs])
        args.out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        print(f"{len(rows)} replies to label in {args.out}")
        return
    for sheet in args.sheets:
        rows = [json.loads(line) for line in sheet.read_text().splitlines() if line.strip()]
        print(json.dumps({"sheet": sheet.name, **agreement(rows)}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
