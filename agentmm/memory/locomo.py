"""The public LoCoMo long-conversation benchmark format, and evidence recall scoring.

A LoCoMo file is a JSON list of samples. Each has ``conversation`` (``speaker_a``,
``speaker_b``, ``session_N_date_time`` and ``session_N``: a list of turns ``{speaker, dia_id,
text}``, optionally ``blip_caption`` for a shared photo) and ``qa`` (``question``,
``answer``/``adversarial_answer``, ``evidence``: dia_ids like ``"D1:3"``, ``category``).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentmm.memory.errors import MemoryStoreError

_SESSION = re.compile(r"^session_(\d+)$")


class EvalFileError(MemoryStoreError):
    """The evaluation file is not in the LoCoMo format."""


class Turn(BaseModel):
    model_config = ConfigDict(extra="allow")

    speaker: str
    dia_id: str
    text: str = ""
    blip_caption: str | None = None


class Session(BaseModel):
    number: int
    date_time: str
    turns: list[Turn]


class Question(BaseModel):
    model_config = ConfigDict(extra="allow")

    question: str
    answer: Any = None
    evidence: list[str] = Field(default_factory=list)
    category: int = 0


class Sample(BaseModel):
    sample_id: str
    speakers: tuple[str, str]
    sessions: list[Session]
    qa: list[Question]

    def turns(self) -> Iterable[tuple[Session, int, Turn]]:
        for session in self.sessions:
            for i, turn in enumerate(session.turns):
                yield session, i, turn


def load_locomo(path: Path) -> list[Sample]:
    """Parse a LoCoMo file; any deviation is one ``EvalFileError`` line naming where."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EvalFileError(f"evaluation file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalFileError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise EvalFileError(f"{path} is not JSON: {exc.msg} at line {exc.lineno}") from exc
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise EvalFileError(f"{path}: expected a list of LoCoMo samples")
    return [_sample(item, i, path) for i, item in enumerate(raw)]


def _sample(item: Any, index: int, path: Path) -> Sample:
    where = f"{path}: sample {index}"
    if not isinstance(item, dict) or not isinstance(item.get("conversation"), dict):
        raise EvalFileError(f"{where} has no 'conversation' object")
    conversation = item["conversation"]
    try:
        sessions = [
            Session(
                number=int(match.group(1)),
                date_time=str(conversation.get(f"{key}_date_time", "")),
                turns=[Turn.model_validate(t) for t in value],
            )
            for key, value in conversation.items()
            if (match := _SESSION.match(key)) and isinstance(value, list)
        ]
        qa = [Question.model_validate(q) for q in item.get("qa", [])]
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(p) for p in error["loc"])
        raise EvalFileError(f"{where}: {location}: {error['msg']}") from exc
    if not sessions:
        raise EvalFileError(f"{where} has no session_N lists in its conversation")
    speakers = (str(conversation.get("speaker_a", "A")), str(conversation.get("speaker_b", "B")))
    sessions.sort(key=lambda s: s.number)
    return Sample(sample_id=str(item.get("sample_id", index)), speakers=speakers, sessions=sessions, qa=qa)


def recall_at(retrieved: Sequence[str], evidence: Sequence[str], k: int) -> float:
    """The share of the evidence found in the first ``k`` retrieved ids."""
    wanted = set(evidence)
    return len(wanted & set(retrieved[:k])) / len(wanted) if wanted else 0.0


def hit_at(retrieved: Sequence[str], evidence: Sequence[str], k: int) -> float:
    return 1.0 if set(evidence) & set(retrieved[:k]) else 0.0


class Scores:
    """Recall@k and Hit@k, per question category and overall, as percentages."""

    def __init__(self, ks: Sequence[int]) -> None:
        self.ks = sorted(ks)
        self._rows: dict[int, list[dict[str, float]]] = defaultdict(list)

    def add(self, category: int, retrieved: Sequence[str], evidence: Sequence[str]) -> None:
        row = {}
        for k in self.ks:
            row[f"recall@{k}"] = recall_at(retrieved, evidence, k)
            row[f"hit@{k}"] = hit_at(retrieved, evidence, k)
        self._rows[category].append(row)

    @staticmethod
    def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
        keys = rows[0].keys() if rows else []
        summary = {key: round(100 * sum(r[key] for r in rows) / len(rows), 2) for key in keys}
        return {**summary, "questions": len(rows)}

    def per_category(self) -> dict[str, dict[str, float]]:
        return {str(c): self._mean(rows) for c, rows in sorted(self._rows.items())}

    def overall(self, categories: Iterable[int] | None = None) -> dict[str, float]:
        chosen = set(categories) if categories is not None else set(self._rows)
        return self._mean([row for c, rows in self._rows.items() if c in chosen for row in rows])
