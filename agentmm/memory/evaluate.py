"""``agentmm eval memory``: how well agentmm's memory finds the evidence of LoCoMo questions.

Each conversation is ingested the way chat turns are remembered (one memory per message,
date and speaker in the indexed text, the previous message as context) into a fresh store in
a temporary directory, never the user's; each question is then searched the way a turn
recalls, and the evidence turns found in the top k are scored.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from langgraph.store.base import BaseStore, PutOp

from agentmm.memory.conversation import memory_text
from agentmm.memory.locomo import Sample, Scores, load_locomo
from agentmm.memory.retrieval import hybrid_search

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
    for session, _, turn in sample.turns():
        text = turn.text + (f" [shares a photo of {turn.blip_caption}]" if turn.blip_caption else "")
        when = session_date(session.date_time)
        value = {"text": memory_text(turn.speaker, text, when, previous), "content": text, "speaker": turn.speaker,
                 "session": session.number}  # fmt: skip
        ops.append(PutOp(namespace, turn.dia_id, value))
        previous = f"{turn.speaker}: {text}"[:300]
    store.batch(ops)
    return len(ops)


def retrieve(store: BaseStore, namespace: tuple[str, ...], question: str, k: int, retrieval: str) -> list[str]:
    if retrieval == "dense":
        return [hit.key for hit in store.search(namespace, query=question, limit=k)]
    return [hit.key for hit in hybrid_search(store, namespace, question, k=k, candidates=max(50, k))]


def evaluate(
    store: BaseStore,
    samples: Sequence[Sample],
    ks: Sequence[int],
    *,
    retrieval: str = "hybrid",
    progress: Progress | None = None,
) -> dict[str, Any]:
    scores = Scores(ks)
    depth = max(ks)
    total_turns = sum(1 for s in samples for _ in s.turns())
    questions = [(s, q) for s in samples for q in s.qa if q.evidence]
    started = time.perf_counter()
    ingested = 0
    for sample in samples:
        ingested += ingest(store, sample, ("eval", sample.sample_id))
        if progress:
            progress(ingested, total_turns, "ingesting")
    ingest_s = time.perf_counter() - started
    latencies = []
    for i, (sample, question) in enumerate(questions, 1):
        t0 = time.perf_counter()
        retrieved = retrieve(store, ("eval", sample.sample_id), question.question, depth, retrieval)
        latencies.append(time.perf_counter() - t0)
        scores.add(question.category, retrieved, question.evidence)
        if progress:
            progress(i, len(questions), "querying")
    latencies.sort()
    return {
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
        "config": {"retrieval": retrieval, "ks": list(ks), "scored_categories": list(SCORED_CATEGORIES)},
    }


def evaluate_file(
    path: Path, ks: Sequence[int], *, retrieval: str = "hybrid", settings: Any, progress: Progress | None = None
) -> dict[str, Any]:
    """Evaluate on a LoCoMo file with the configured embeddings, in a throwaway store."""
    from agentmm.memory.chroma_store import ChromaStore
    from agentmm.memory.embeddings import SentenceTransformerEmbeddings

    samples = load_locomo(path)
    embedder = SentenceTransformerEmbeddings.from_settings(settings)
    index = embedder.index_config()
    with tempfile.TemporaryDirectory(prefix="agentmm-eval-") as tmp, ChromaStore.from_path(tmp, index=index) as store:
        report = evaluate(store, samples, ks, retrieval=retrieval, progress=progress)
    report["config"]["file"] = str(path)
    report["config"]["embedding_model"] = embedder.model_name
    report["config"]["embedding_runtime"] = embedder.runtime
    return report
