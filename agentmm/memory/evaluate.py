"""``agentmm eval memory``: how well agentmm's memory finds the evidence of LoCoMo questions.

Each conversation is ingested the way chat turns are remembered (one memory per message,
date and speaker in the indexed text, the previous message as context) into a fresh store in
a temporary directory, never the user's; each question is then searched the way a turn
recalls, and the evidence turns found in the top k are scored.

With a token budget, recall is also scored over only the results that fit the budget as compose
would place them (each memory one line: date, speaker, what was said; counted with the chat
model's tokenizer), so a memory unit that is coarser (longer) cannot buy recall with tokens the
prompt does not have.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from langgraph.store.base import BaseStore, PutOp

from agentmm.memory.conversation import format_recalled, memory_text, search_scope
from agentmm.memory.locomo import Sample, Scores, evidence_report, found_ids, hit_at, load_locomo, recall_at

Progress = Callable[[int, int, str], None]
SCORED_CATEGORIES = (1, 2, 3, 4)
LOCOMO_DATE = "%I:%M %p on %d %B, %Y"


def session_date(raw: str) -> datetime | str:
    """LoCoMo writes dates like '1:56 pm on 8 May, 2023'; keep the raw text if it differs."""
    try:
        return datetime.strptime(raw.strip(), LOCOMO_DATE)
    except ValueError:
        return raw.strip()


def ingest(store: BaseStore, sample: Sample, namespace: tuple[str, ...]) -> int:
    ops = []
    previous: str | None = None
    for session, key, turn in sample.keyed_turns():
        text = turn.text + (f" [shares {photo(turn.blip_caption)}]" if turn.blip_caption else "")
        when = session_date(session.date_time)
        value = {"text": memory_text(turn.speaker, text, when, previous), "content": text, "speaker": turn.speaker,
                 "session": session.number, "when": when.isoformat() if isinstance(when, datetime) else when,
                 }  # fmt: skip
        ops.append(PutOp(namespace, key, value))
        previous = f"{turn.speaker}: {text}"[:300]
    store.batch(ops)
    return len(ops)


def photo(caption: str) -> str:
    """BLIP writes 'a photo of a dog'; a shared picture then reads 'a photo of a dog', not 'a photo of a photo of'."""
    caption = caption.strip()
    return caption if caption.lower().startswith(("a photo", "a picture", "an image")) else f"a photo of {caption}"


def retrieve(
    store: BaseStore, namespace: tuple[str, ...], question: str, k: int, retrieval: str, rounds: int = 1,
    now: datetime | None = None, by_date: bool = True, rerank: bool = False,
) -> list[Any]:  # fmt: skip
    """The top ``k`` memories for ``question``, best first (LangGraph ``Item``s); ``rounds=2``
    adds the multi-hop second round (``agentmm.memory.multihop``); ``now`` is when the question
    is asked (its "last week"); ``by_date=False`` leaves recall by date out; ``rerank`` reorders
    the best candidates by late interaction (``agentmm.memory.rerank``)."""
    if retrieval == "dense":
        return list(store.search(namespace, query=question, limit=k))
    return list(search_scope(store, namespace, question, k=k, rounds=rounds, now=now, by_date=by_date,
                             rerank=rerank, candidates=max(50, k)))  # fmt: skip


def asked_on(sample: Sample) -> datetime | None:
    """When a sample's questions are asked: after its last dated session."""
    dates = [when for s in sample.sessions if isinstance(when := session_date(s.date_time), datetime)]
    return max(dates) if dates else None


def fitting(hits: Sequence[Any], budget: int, count: Callable[[str], int]) -> list[str]:
    """The keys of the best hits whose block, as compose places recalled memories, fits
    ``budget`` tokens (the first hit that does not fit ends the list, as in a prompt)."""
    kept: list[dict[str, Any]] = []
    keys: list[str] = []
    for hit in hits:
        line = {"when": hit.value.get("when") or "", "speaker": hit.value.get("speaker"), "text": hit.value["content"]}
        if count(format_recalled([*kept, line], "User")) > budget:
            break
        kept.append(line)
        keys.append(hit.key)
    return keys


class BudgetScores:
    """Recall and hit over the results that fit a token budget, per category and overall."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._rows: dict[int, list[tuple[float, float, int]]] = {}

    def add(self, category: int, kept: Sequence[str], evidence: Sequence[str]) -> None:
        n = max(len(kept), 1)
        row = (recall_at(kept, evidence, n), hit_at(kept, evidence, n), len(kept))
        self._rows.setdefault(category, []).append(row)

    def _mean(self, rows: Sequence[tuple[float, float, int]]) -> dict[str, float]:
        if not rows:
            return {"questions": 0}
        return {
            f"recall@{self.budget}tok": round(100 * statistics.mean(r[0] for r in rows), 2),
            f"hit@{self.budget}tok": round(100 * statistics.mean(r[1] for r in rows), 2),
            "memories_fitted_mean": round(statistics.mean(r[2] for r in rows), 2),
            "questions": len(rows),
        }

    def per_category(self) -> dict[str, dict[str, float]]:
        return {str(c): self._mean(rows) for c, rows in sorted(self._rows.items())}

    def overall(self, categories: Sequence[int]) -> dict[str, float]:
        return self._mean([r for c, rows in self._rows.items() if c in categories for r in rows])


def evaluate(
    store: BaseStore,
    samples: Sequence[Sample],
    ks: Sequence[int],
    *,
    retrieval: str = "hybrid",
    progress: Progress | None = None,
    budget_tokens: int | None = None,
    count: Callable[[str], int] | None = None,
    rounds: int = 1,
    by_date: bool = True,
    rerank: bool = False,
) -> dict[str, Any]:
    scores = Scores(ks)
    budgeted = BudgetScores(budget_tokens) if budget_tokens is not None and count is not None else None
    depth = max(ks)
    total_turns = sum(1 for s in samples for _ in s.turns())
    questions = [(s, q, found) for s in samples for q in s.qa if (found := s.findable(q))]
    started = time.perf_counter()
    ingested = 0
    sizes: dict[str, int] = {}
    for sample in samples:
        sizes[sample.sample_id] = ingest(store, sample, ("eval", sample.sample_id))
        ingested += sizes[sample.sample_id]
        if progress:
            progress(ingested, total_turns, "ingesting")
    ingest_s = time.perf_counter() - started
    latencies = []
    short = 0
    for i, (sample, question, evidence) in enumerate(questions, 1):
        t0 = time.perf_counter()
        hits = retrieve(store, ("eval", sample.sample_id), question.question, depth, retrieval, rounds,
                        asked_on(sample), by_date, rerank)  # fmt: skip
        latencies.append(time.perf_counter() - t0)
        short += len(hits) < min(depth, sizes[sample.sample_id])
        scores.add(question.category, found_ids(hit.key for hit in hits), evidence)
        if budgeted is not None and count is not None:
            budgeted.add(question.category, found_ids(fitting(hits, budgeted.budget, count)), evidence)
        if progress:
            progress(i, len(questions), "querying")
    latencies.sort()
    report: dict[str, Any] = {
        "overall": scores.overall(SCORED_CATEGORIES),
        "per_category": scores.per_category(),
        "timings": {
            "ingest_s": round(ingest_s, 3),
            "memories": ingested,
            "memories_per_s": round(ingested / ingest_s, 1) if ingest_s else None,
            "questions": len(questions),
            "query_p50_ms": round(1000 * statistics.median(latencies), 2) if latencies else None,
            "query_p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 2) if latencies else None,
        },
        "evidence": evidence_report(samples),
        "short_results": short,
        "config": {
            "retrieval": retrieval,
            "rounds": rounds,
            "by_date": by_date,
            "rerank": rerank,
            "ks": list(ks),
            "scored_categories": list(SCORED_CATEGORIES),
        },
    }
    if budgeted is not None:
        report["budget"] = {"tokens": budgeted.budget, "overall": budgeted.overall(SCORED_CATEGORIES),
                            "per_category": budgeted.per_category()}  # fmt: skip
    return report


def evaluate_file(
    path: Path,
    ks: Sequence[int],
    *,
    retrieval: str = "hybrid",
    settings: Any,
    progress: Progress | None = None,
    budget_tokens: int | None = None,
) -> dict[str, Any]:
    """Evaluate on a LoCoMo file with the configured embeddings, in a throwaway store; with
    ``budget_tokens``, tokens are counted with the configured chat model's tokenizer."""
    from agentmm.memory.chroma_store import ChromaStore
    from agentmm.memory.embeddings import SentenceTransformerEmbeddings

    samples = load_locomo(path)
    with contextlib.ExitStack() as stack:
        count = None
        if budget_tokens is not None:
            from agentmm.llm import ChatLlamaCpp
            from agentmm.tokens import TokenCounter

            model = stack.enter_context(ChatLlamaCpp.from_settings(settings))
            count = TokenCounter.for_model(model).text
        embedder = SentenceTransformerEmbeddings.from_settings(settings)
        index = embedder.index_config()
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="agentmm-eval-"))
        store = stack.enter_context(ChromaStore.from_path(tmp, index=index))
        report = evaluate(store, samples, ks, retrieval=retrieval, progress=progress, budget_tokens=budget_tokens,
                          count=count, rounds=settings.memory_rounds, by_date=settings.memory_by_date,
                          rerank=settings.memory_rerank)  # fmt: skip
    report["config"]["file"] = str(path)
    report["config"]["embedding_model"] = embedder.model_name
    report["config"]["embedding_runtime"] = embedder.runtime
    return report
