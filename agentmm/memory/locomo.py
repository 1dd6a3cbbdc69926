"""The public LoCoMo long-conversation benchmark format, and evidence recall scoring.

A LoCoMo file is a JSON list of samples. Each has ``conversation`` (``speaker_a``,
``speaker_b``, ``session_N_date_time`` and ``session_N``: a list of turns ``{speaker, dia_id,
text}``, optionally ``blip_caption`` for a shared photo) and ``qa`` (``question``,
``answer``/``adversarial_answer``, ``evidence``: dia_ids like ``"D1:3"``, ``category``).

The public file is not always that clean, and an evidence id read wrong is evidence no search
can find. So ids are read leniently and written one way (:func:`dia_ids`): several ids in one
entry (``"D8:6; D9:17"``), a stray colon (``"D:11:26"``), zero padding (``"D30:05"``) and case
all give the canonical ``D<session>:<turn>``, for evidence and turns alike. A dia_id two turns
share keeps both turns (the second stored as ``D3:4#2``), either one counting as found. Evidence
that still names no turn of its conversation is left out of the scores and counted
(:func:`evidence_report`), so a broken label lowers no one's recall, and shows.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agentmm.memory.errors import MemoryStoreError

_SESSION = re.compile(r"^session_(\d+)$")
_DIA_ID = re.compile(r"D\s*:?\s*(\d+)\s*:\s*(\d+)", re.IGNORECASE)
COPY_MARK = "#"


def dia_ids(raw: str) -> list[str]:
    """Every dialogue id written in ``raw``, canonical: ``"D8:6; d9:017"`` -> ``["D8:6", "D9:17"]``."""
    return [f"D{int(session)}:{int(turn)}" for session, turn in _DIA_ID.findall(raw)]


def canonical_dia_id(raw: Any) -> str:
    found = dia_ids(str(raw))
    return found[0] if len(found) == 1 else str(raw).strip()


def evidence_id(key: str) -> str:
    """The dia_id a stored turn's key stands for (``D3:4#2``, a second turn written ``D3:4``: ``D3:4``)."""
    return key.split(COPY_MARK, 1)[0]


class EvalFileError(MemoryStoreError):
    """The evaluation file is not in the LoCoMo format."""


class Turn(BaseModel):
    model_config = ConfigDict(extra="allow")

    speaker: str
    dia_id: str
    text: str = ""
    blip_caption: str | None = None

    @field_validator("dia_id", mode="before")
    @classmethod
    def _canonical_id(cls, value: Any) -> str:
        return canonical_dia_id(value)


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
    evidence_as_written: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _read_evidence(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        written = data.get("evidence") or []
        entries = [written] if isinstance(written, str) else list(written) if isinstance(written, list) else [written]
        ids: list[str] = []
        for entry in entries:
            ids.extend(dia_ids(str(entry)) or [str(entry).strip()])  # unreadable: kept, names no turn
        return {**data, "evidence": list(dict.fromkeys(i for i in ids if i)),
                "evidence_as_written": [str(e) for e in entries]}  # fmt: skip


class Sample(BaseModel):
    sample_id: str
    speakers: tuple[str, str]
    sessions: list[Session]
    qa: list[Question]

    def turns(self) -> Iterable[tuple[Session, int, Turn]]:
        for session in self.sessions:
            for i, turn in enumerate(session.turns):
                yield session, i, turn

    def keyed_turns(self) -> Iterator[tuple[Session, str, Turn]]:
        """Each turn with a key of its own: its dia_id, or ``dia_id#n`` for the n-th turn written
        with an id an earlier turn has."""
        seen: dict[str, int] = {}
        for session, _, turn in self.turns():
            seen[turn.dia_id] = seen.get(turn.dia_id, 0) + 1
            copies = seen[turn.dia_id]
            yield session, turn.dia_id if copies == 1 else f"{turn.dia_id}{COPY_MARK}{copies}", turn

    @cached_property
    def turn_ids(self) -> frozenset[str]:
        return frozenset(turn.dia_id for _, _, turn in self.turns())

    def findable(self, question: Question) -> list[str]:
        """The question's evidence ids that name a turn of this conversation."""
        return [e for e in question.evidence if e in self.turn_ids]


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


def found_ids(keys: Iterable[str]) -> list[str]:
    """Retrieved store keys as evidence ids, best first, each once."""
    return list(dict.fromkeys(evidence_id(key) for key in keys))


def evidence_report(samples: Sequence[Sample]) -> dict[str, Any]:
    """How the file's evidence was read: ids rewritten to be found, ids that name no turn
    (left out of the scores), dia_ids two turns share, questions with nothing left to find."""
    report: dict[str, Any] = {"ids": 0, "rewritten": 0, "naming_no_turn": 0, "shared_turn_ids": 0,
                              "questions_without_findable_evidence": 0, "examples_naming_no_turn": []}  # fmt: skip
    for sample in samples:
        ids = [turn.dia_id for _, _, turn in sample.turns()]
        report["shared_turn_ids"] += len(ids) - len(set(ids))
        for question in sample.qa:
            if not question.evidence:
                continue
            findable = sample.findable(question)
            report["ids"] += len(question.evidence)
            report["rewritten"] += sum(1 for e in question.evidence_as_written if dia_ids(e) not in ([], [e.strip()]))
            missing = [e for e in question.evidence if e not in findable]
            report["naming_no_turn"] += len(missing)
            report["questions_without_findable_evidence"] += not findable
            examples = report["examples_naming_no_turn"]
            examples.extend(f"{sample.sample_id}: {e}" for e in missing[: max(0, 5 - len(examples))])
    return report


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
