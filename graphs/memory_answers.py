"""``agentmm eval memory --answer``: the chat model answers each question of a LoCoMo-format file
from what recall puts in its prompt, through the real turn, and each answer is scored with
LoCoMo's token F1 and exact match (``agentmm.memory.answer_scores``), optionally judged.

Each sample's conversation is written into a throwaway store as memories of one user (the same
records ``eval memory`` indexes), and each question is asked by that user in a thread of its own
through an ``Agent`` over that store: recall, the relevance bar and token budget, compose and the
model are the chat's own (``memory_k``, ``memory_max_tokens``, ``memory_rounds``), only the system
prompt asks for a short answer. What the question's turn remembered is forgotten again
(``forget_turn``) so that no question is answered from an earlier one.

Every answer is appended to an answers file (JSON Lines, its first line the run's configuration)
as soon as it is scored, so an interrupted run loses nothing: the same command goes on from where
it stopped, and ``fresh`` starts over.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, Field

from agentmm.graphs.agent import Agent
from agentmm.memory.answer_scores import answer_f1, exact_match, gold_answer
from agentmm.memory.conversation import forget_turn, scope
from agentmm.memory.evaluate import SCORED_CATEGORIES, ingest
from agentmm.memory.locomo import EvalFileError, Question, Sample, load_locomo
from agentmm.settings import Settings

Progress = Callable[[int, int, str], None]
ANSWER_TOKENS = 32
ANSWER_PROMPT = (
    "You answer questions about earlier conversations between {a} and {b}, from the memories shown "
    "with the question. Answer with a short phrase, in the memories' own words where you can. If the "
    "memories do not tell, answer: not mentioned."
)


class AnswerVerdict(BaseModel):
    """What the judge model answers about one predicted answer."""

    correct: bool = Field(description="True if the predicted answer says what the gold answer says.")


class AnswerRow(BaseModel):
    sample_id: str
    index: int
    category: int
    question: str
    gold: str
    prediction: str
    f1: float
    exact: bool
    memories: int
    seconds: float
    judged_correct: bool | None = None


def answer_file(
    path: Path,
    settings: Settings,
    *,
    limit: int | None = None,
    answers: Path | None = None,
    fresh: bool = False,
    model: BaseChatModel | None = None,
    judge: BaseChatModel | None = None,
    judge_name: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Answer and score the questions of categories 1-4 of ``path`` (the first ``limit``), going
    on from what ``answers`` (default: one file per input file and model in the cache dir)
    already holds; the report has F1 and exact match per category and overall."""
    samples = load_locomo(path)
    questions = [(s, i, q) for s in samples for i, q in enumerate(s.qa) if q.category in SCORED_CATEGORIES]
    questions = questions[:limit] if limit is not None else questions
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    config = _config(digest, settings, judge_name)
    answers = answers or default_answers_path(path, digest, settings)
    done = {} if fresh else read_answers(answers, config)
    pending = [(s, i, q) for s, i, q in questions if (s.sample_id, i) not in done]
    with _journal(answers, config, fresh or not done) as write:
        if pending:
            _answer(pending, settings, model, judge, write, progress, len(questions) - len(pending), len(questions))
    answered = read_answers(answers, config)
    rows = [row for s, i, _ in questions if (row := answered.get((s.sample_id, i)))]
    return report(rows, config, answers)


def _answer(
    pending: Sequence[tuple[Sample, int, Question]], settings: Settings, model: BaseChatModel | None,
    judge: BaseChatModel | None, write: Callable[[AnswerRow], None], progress: Progress | None, done: int,
    total: int,
) -> None:  # fmt: skip
    from agentmm.llm import ChatLlamaCpp
    from agentmm.memory.chroma_store import ChromaStore
    from agentmm.memory.embeddings import SentenceTransformerEmbeddings

    answering = settings.model_copy(update={"max_tokens": ANSWER_TOKENS, "temperature": 0.0, "persona": None,
                                            "intent": False, "tools": [], "memory": True})  # fmt: skip
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agentmm-eval-answers-")))
        embedder = SentenceTransformerEmbeddings.from_settings(answering)
        stack.callback(embedder.close)
        store = stack.enter_context(ChromaStore.from_path(tmp / "store", index=embedder.index_config()))
        if model is None:
            model = stack.enter_context(ChatLlamaCpp.from_settings(answering))
        for sample, group in _by_sample(pending):
            user = f"eval-{sample.sample_id}"
            ingest(store, sample, scope(user))
            a, b = sample.speakers
            update = {"data_dir": tmp / "data", "user_id": user, "system_prompt": ANSWER_PROMPT.format(a=a, b=b)}
            with Agent(answering.model_copy(update=update), model=model, store=store) as agent:
                for index, question in group:
                    write(_answer_one(agent, store, sample, index, question, judge))
                    done += 1
                    if progress is not None:
                        progress(done, total, f"answering {sample.sample_id}")


def _answer_one(agent: Agent, store: Any, sample: Sample, index: int, question: Question,
                judge: BaseChatModel | None) -> AnswerRow:  # fmt: skip
    thread = f"q-{sample.sample_id}-{index}"
    started = time.perf_counter()
    result = agent.chat(question.question, thread)
    seconds = time.perf_counter() - started
    forget_turn(store, thread, 1)
    prediction = " ".join(result.reply.split())
    gold = gold_answer(question.answer, question.category)
    row = AnswerRow(sample_id=sample.sample_id, index=index, category=question.category, question=question.question,
                    gold=gold, prediction=prediction, f1=round(answer_f1(prediction, gold, question.category), 4),
                    exact=exact_match(prediction, gold), memories=len(result.trace.get("recalled") or []),
                    seconds=round(seconds, 3))  # fmt: skip
    if judge is not None:
        row.judged_correct = judge_answer(judge, row)
    return row


def judge_answer(judge: BaseChatModel, row: AnswerRow) -> bool:
    """The judge model's verdict on one predicted answer."""
    prompt = (f"Question: {row.question}\nGold answer: {row.gold}\nPredicted answer: {row.prediction}\n\n"
              "Does the predicted answer say what the gold answer says (other words are fine)?")  # fmt: skip
    verdict: Any = judge.with_structured_output(AnswerVerdict).invoke(prompt)
    return bool(verdict.correct if isinstance(verdict, AnswerVerdict) else verdict["correct"])


def _by_sample(pending: Sequence[tuple[Sample, int, Question]]) -> Iterator[tuple[Sample, list[tuple[int, Question]]]]:
    groups: dict[str, tuple[Sample, list[tuple[int, Question]]]] = {}
    for sample, index, question in pending:
        groups.setdefault(sample.sample_id, (sample, []))[1].append((index, question))
    yield from groups.values()


def _config(digest: str, settings: Settings, judge_name: str | None) -> dict[str, Any]:
    """What the answers depend on (``digest``: the input file's SHA-256): a file of answers from
    another configuration is not reused."""
    return {"file_sha256": digest[:16], "model": str(settings.model),
            "memory_k": settings.memory_k, "memory_max_tokens": settings.memory_max_tokens,
            "memory_min_similarity": settings.memory_min_similarity, "memory_rounds": settings.memory_rounds,
            "memory_by_date": settings.memory_by_date, "memory_rerank": settings.memory_rerank,
            "embedding_model": str(settings.embedding_model), "answer_tokens": ANSWER_TOKENS,
            "judge": judge_name}  # fmt: skip


def default_answers_path(path: Path, digest: str, settings: Settings) -> Path:
    """One answers file per input file (``digest``: its SHA-256) and model, in the cache dir."""
    model = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(settings.model)).name)[:60]
    return Path(settings.cache_dir) / "eval-answers" / f"{path.stem}-{digest[:8]}-{model}.jsonl"


def read_answers(answers: Path, config: dict[str, Any]) -> dict[tuple[str, int], AnswerRow]:
    """The answers ``answers`` holds for ``config`` (none if it does not exist); one from another
    configuration is an ``EvalFileError``, as is a file that is not an answers file."""
    try:
        lines = answers.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise EvalFileError(f"cannot read the answers file {answers}: {exc.strerror or exc}") from exc
    try:
        head = json.loads(lines[0]) if lines else {}
        rows = [AnswerRow.model_validate_json(line) for line in lines[1:] if line.strip()]
    except ValueError as exc:
        raise EvalFileError(f"{answers} is not an answers file of agentmm eval memory --answer") from exc
    if head.get("config") != config:
        theirs = head.get("config") or {}
        differ = ", ".join(f"{key} {theirs.get(key)!r} -> {value!r}" for key, value in config.items()
                           if theirs.get(key) != value)  # fmt: skip
        raise EvalFileError(f"{answers} holds answers of another run ({differ}): pass --fresh to start it over")
    return {(row.sample_id, row.index): row for row in rows}


class _journal:
    """Appends rows to the answers file, each flushed as it is written."""

    def __init__(self, answers: Path, config: dict[str, Any], new: bool) -> None:
        self.answers, self.config, self.new = answers, config, new

    def __enter__(self) -> Callable[[AnswerRow], None]:
        try:
            self.answers.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.answers.open("w" if self.new else "a", encoding="utf-8")
        except OSError as exc:
            raise EvalFileError(f"cannot write the answers file {self.answers}: {exc.strerror or exc}") from exc
        if self.new:
            self.file.write(json.dumps({"config": self.config}) + "\n")
            self.file.flush()
        return self.write

    def write(self, row: AnswerRow) -> None:
        self.file.write(row.model_dump_json() + "\n")
        self.file.flush()

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def report(rows: Sequence[AnswerRow], config: dict[str, Any], answers: Path) -> dict[str, Any]:
    """F1 and exact match (percent) per category and over categories 1-4, the judge's rate."""

    def summary(part: Sequence[AnswerRow]) -> dict[str, Any]:
        judged = [r.judged_correct for r in part if r.judged_correct is not None]
        return {"questions": len(part),
                "f1": round(100 * statistics.fmean(r.f1 for r in part), 2) if part else None,
                "exact_match": round(100 * statistics.fmean(r.exact for r in part), 2) if part else None,
                "judge_correct": round(100 * statistics.fmean(judged), 2) if judged else None,
                "memories_mean": round(statistics.fmean(r.memories for r in part), 2) if part else None}  # fmt: skip

    per_category = {str(c): summary([r for r in rows if r.category == c]) for c in SCORED_CATEGORIES
                    if any(r.category == c for r in rows)}  # fmt: skip
    seconds = [r.seconds for r in rows]
    return {"overall": summary(rows), "per_category": per_category,
            "timings": {"answer_p50_s": round(statistics.median(seconds), 3) if seconds else None},
            "config": {**config, "answers_file": str(answers)},
            "answers": [r.model_dump() for r in rows]}  # fmt: skip
