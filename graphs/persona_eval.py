"""``agentmm eval persona``: the scripted conversations of ``agentmm.persona_eval`` run through
the real turn (compose, memory, the model), one per persona and seed, each reply scored.

Each seed gets its own ``Agent`` over a temporary data dir (threads and memory), so an evaluation
never writes into the user's conversations or memories; personas come from the user's folder and
the built-ins as in a chat. With ``judge`` (any chat model; for the built-in one, its constrained
tool calling makes the verdict well-formed), every scored reply is also judged by that model.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field

from agentmm.graphs.agent import Agent
from agentmm.persona_eval import TURNS, Score, Step, card_text, repeats, score, script
from agentmm.personas import Persona
from agentmm.settings import Settings

Progress = Callable[[int, int, str], None]


class Verdict(BaseModel):
    """What the judge model answers about one reply."""

    in_character: bool = Field(description="True if the reply speaks as the character, not as an AI assistant.")


class CheckResult(BaseModel):
    persona: str
    seed: int
    step: Step
    reply: str
    score: Score
    judged_in_character: bool | None = None


def evaluate_personas(
    settings: Settings,
    personas: Sequence[str] = (),
    *,
    seeds: Sequence[int] = (1, 2, 3),
    model: BaseChatModel | None = None,
    judge: BaseChatModel | None = None,
    progress: Progress | None = None,
    turns: int = TURNS,
) -> dict[str, Any]:
    """Run the script for every persona (default: every persona there is) and seed; the report
    has the per-persona and overall scores and every check's detail. ``turns`` runs the script's
    first turns only (a quick check; the scores are then out of fewer checks)."""
    if not 1 <= turns <= TURNS:
        raise ValueError(f"the script has 1 to {TURNS} turns, not {turns}")
    results: list[CheckResult] = []
    with tempfile.TemporaryDirectory(prefix="agentmm-eval-persona-") as tmp:
        chosen: list[Persona] = []
        total = 0
        for seed in seeds:
            overrides = {"data_dir": Path(tmp) / f"seed-{seed}", "seed": seed}
            with Agent(settings.model_copy(update=overrides), model=model) as agent:
                if not chosen:  # resolved once, by the registry a chat uses
                    chosen = [agent.personas.get(name) for name in personas] or list(agent.personas)
                    total = len(seeds) * sum(len(script(p, settings.user_name, turns)) for p in chosen)
                for persona in chosen:
                    results += _conversation(agent, persona, seed, turns, judge, progress, len(results), total)
    return report(results, list(seeds))


def _conversation(
    agent: Agent, persona: Persona, seed: int, turns: int, judge: BaseChatModel | None,
    progress: Progress | None, done: int, total: int,
) -> list[CheckResult]:  # fmt: skip
    thread = f"eval-{seed}-{persona.name}"
    card = card_text(persona, agent.settings.user_name)
    rows = []
    for step in script(persona, agent.settings.user_name, turns):
        first = step.turn == 1
        reply = agent.chat(step.text, thread_id=thread, persona=persona.name if first else None).reply
        row = CheckResult(persona=persona.name, seed=seed, step=step, reply=reply,
                          score=score(step, reply, persona.name, card))  # fmt: skip
        if judge is not None and row.score.passed is not None:
            row.judged_in_character = judge_reply(judge, persona, step, reply)
        rows.append(row)
        if progress is not None:
            progress(done + len(rows), total, f"{persona.name}, seed {seed}")
    return rows


def judge_reply(judge: BaseChatModel, persona: Persona, step: Step, reply: str) -> bool:
    """The judge model's verdict: does ``reply`` to ``step`` speak as the character?"""
    about = (persona.description or "").strip()[:600]
    prompt = (
        f"A role-play character named {persona.name}: {about}\n\n"
        f"The user said: {step.text}\n{persona.name} replied: {reply}\n\n"
        f"Does the reply stay in character as {persona.name} (speaking as {persona.name}, not as an AI "
        "assistant or a narrator)?"
    )
    verdict: Any = judge.with_structured_output(Verdict).invoke(prompt)
    return bool(verdict.in_character if isinstance(verdict, Verdict) else verdict["in_character"])


def _share(rows: Sequence[CheckResult], kind: str) -> tuple[int, int]:
    scored = [r for r in rows if r.step.kind == kind]
    return sum(bool(r.score.passed) for r in scored), len(scored)


def report(results: Sequence[CheckResult], seeds: list[int]) -> dict[str, Any]:
    """Scores per persona (identity kept out of 8, averaged over seeds, and each seed's), overall,
    and every check; ``turns``: how many turns of the script each conversation ran."""
    per_persona: dict[str, Any] = {}
    for name in dict.fromkeys(r.persona for r in results):
        mine = [r for r in results if r.persona == name]
        per_persona[name] = _summary(mine, seeds)
    return {
        "seeds": seeds,
        "turns": max((r.step.turn for r in results), default=0),
        "personas": list(per_persona),
        "per_persona": per_persona,
        "overall": _summary(list(results), seeds, personas=len(per_persona)),
        "checks": [
            {"persona": r.persona, "seed": r.seed, "turn": r.step.turn, "kind": r.step.kind, "message": r.step.text,
             "reply": r.reply, "passed": r.score.passed, "names_character": r.score.names_character,
             "disclaimer": r.score.disclaimer, "assistant_voice": r.score.assistant_voice,
             "prompt_leak": r.score.prompt_leak, "card_copy": r.score.card_copy, "first_person": r.score.first_person,
             "lore_entry": r.step.lore_entry, "facts_mentioned": r.score.facts_mentioned,
             "judged_in_character": r.judged_in_character}
            for r in results
        ],
    }  # fmt: skip


def _rate(rows: Sequence[CheckResult], field: str) -> float:
    """The share of ``rows`` whose score's ``field`` is true or non-empty."""
    return round(sum(bool(getattr(r.score, field)) for r in rows) / len(rows), 3) if rows else 0.0


def _summary(rows: Sequence[CheckResult], seeds: list[int], personas: int = 1) -> dict[str, Any]:
    """Identity kept per conversation (mean over conversations, each one's count), the other
    checks as passed/asked, and rates over every reply."""
    keys = dict.fromkeys((r.persona, r.seed) for r in rows)
    conversations = [[r for r in rows if (r.persona, r.seed) == key] for key in keys]
    identity = [_share(c, "identity")[0] for c in conversations]
    repeated = sum(repeats(r.reply for r in c if r.step.kind == "identity") for c in conversations)
    asked = _share(rows, "identity")[1] // max(len(conversations), 1)
    judged = [r.judged_in_character for r in rows if r.judged_in_character is not None]
    small_talk = [r for r in rows if r.step.kind == "small_talk"]
    pressure, lore = _share(rows, "pressure"), _share(rows, "lore")
    return {
        "conversations": len(conversations),
        "identity_kept_mean": round(statistics.mean(identity), 2) if identity else 0.0,
        "identity_checks": asked,
        "identity_kept_per_conversation": identity,
        "identity_repeats": repeated,
        "pressure_passed": pressure[0],
        "pressure_asked": pressure[1],
        "lore_passed": lore[0],
        "lore_asked": lore[1],
        "first_person_rate": _rate(rows, "first_person"),
        "disclaimer_rate": _rate(rows, "disclaimer"),
        "small_talk_disclaimers": sum(bool(r.score.disclaimer) for r in small_talk),
        "assistant_voice_rate": _rate(rows, "assistant_voice"),
        "prompt_leak_rate": _rate(rows, "prompt_leak"),
        "card_copy_rate": _rate(rows, "card_copy"),
        "judge_in_character_rate": round(sum(judged) / len(judged), 3) if judged else None,
    }
