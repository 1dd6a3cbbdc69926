"""Recall by date: the days a question asks about, the days a memory speaks of, and hybrid
recall ranking the memories whose days meet the question's."""

from __future__ import annotations

import asyncio
from datetime import date, datetime

import pytest

from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.conversation import recall
from agentmm.memory.dates import annotate
from agentmm.memory.retrieval import WHEN, ahybrid_search, hybrid_search
from agentmm.memory.selection import select_memories
from agentmm.memory.when import DateIndex, memory_spans, question_span

NOW = date(2023, 7, 30)
D = date


@pytest.mark.parametrize(
    ("question", "span"),
    [
        ("Where did Ada go on 23 July 2023?", (D(2023, 7, 23), D(2023, 7, 23))),
        ("What did Ada take up in July 2023?", (D(2023, 7, 1), D(2023, 7, 31))),
        ("what did I tell you yesterday?", (D(2023, 7, 29), D(2023, 7, 29))),
        ("Remind me what we said last week", (D(2023, 7, 17), D(2023, 7, 23))),
        ("What did we do in may?", (D(2023, 5, 1), D(2023, 5, 31))),
        ("What did we plan for August?", None),  # a bare month without "in" or a year: not read
        ("What happened in 2022?", (D(2022, 1, 1), D(2022, 12, 31))),
        ("What about July 4th?", (D(2023, 7, 4), D(2023, 7, 4))),
        ("what did I say 3 days ago?", (D(2023, 7, 27), D(2023, 7, 27))),
        ("How was last weekend?", (D(2023, 7, 22), D(2023, 7, 23))),
        ("What happened on 2023-07-01?", (D(2023, 7, 1), D(2023, 7, 1))),
        ("What happened on 31 February 2023?", (D(2023, 2, 1), D(2023, 2, 28))),  # no such day: its month
        ("When did Ada go to the fair?", None),  # asks for a date, names none
        ("I went running this morning.", None),  # not a question
        ("I may go", None),
    ],
)
def test_the_days_a_question_asks_about(question: str, span: tuple[date, date] | None) -> None:
    assert question_span(question, NOW) == span


def test_dates_out_of_range_are_no_dates() -> None:
    assert question_span("What happened in 0000?", NOW) is None
    assert question_span("What did I do on 1 January 0001?", NOW) == (D(1, 1, 1), D(1, 1, 1))
    assert question_span("what did I say yesterday?", D(1, 1, 1)) is None
    assert memory_spans({"when": "0001-01-01T00:00:00", "content": "yesterday and last month"}) == [(D(1, 1, 1),) * 2]
    assert question_span("what did I do 99999999999 days ago?", NOW) is None
    # The prompt's resolved dates skip what the calendar cannot hold, too.
    assert annotate("seen 99999999 days ago, and yesterday", "2023-07-24") == (
        "seen 99999999 days ago, and yesterday [yesterday: 23 July 2023]"
    )
    assert annotate("yesterday", "0001-01-01") == "yesterday"


def test_without_a_day_to_count_from_only_full_dates_are_read() -> None:
    assert question_span("what did I say yesterday?", None) is None
    assert question_span("Where was Ada on 3 May 2023?", None) == (D(2023, 5, 3), D(2023, 5, 3))


def test_the_days_a_memory_speaks_of() -> None:
    said = {"when": "2023-07-24T18:00:00", "content": "I went to the fair yesterday and saw Bo two days ago."}
    assert memory_spans(said) == [(D(2023, 7, 24), D(2023, 7, 24)), (D(2023, 7, 23), D(2023, 7, 23)),
                                  (D(2023, 7, 22), D(2023, 7, 22))]  # fmt: skip
    # "last year" names no day worth ranking by; a memory without a date speaks of none.
    assert memory_spans({"when": "2023-07-24", "content": "Last year was hard."}) == [(D(2023, 7, 24),) * 2]
    assert memory_spans({"when": "sometime", "content": "yesterday"}) == []


def test_the_date_index_finds_spans_that_meet_and_follows_changes() -> None:
    index: DateIndex[str] = DateIndex()
    index.add("fair", [(D(2023, 7, 24), D(2023, 7, 24)), (D(2023, 7, 23), D(2023, 7, 23))])
    index.add("june", [(D(2023, 6, 1), D(2023, 6, 30))])
    index.add("later", [(D(2023, 7, 25), D(2023, 7, 25))])
    assert index.meeting((D(2023, 7, 23), D(2023, 7, 23))) == ["fair"]
    assert index.meeting((D(2023, 6, 30), D(2023, 7, 24))) == ["june", "fair"]  # the last added first
    assert index.meeting((D(2023, 7, 1), D(2023, 7, 31))) == ["later", "fair"]
    index.add("fair", [(D(2023, 8, 2), D(2023, 8, 2))])  # rewritten: its old days are gone
    assert index.meeting((D(2023, 7, 23), D(2023, 7, 24))) == []
    index.remove("june")
    assert index.meeting((D(2023, 6, 15), D(2023, 6, 15))) == []
    assert len(index) == 2


def _said(store: ChromaStore, key: str, when: str, text: str) -> None:
    store.put(("m", "ada"), key, {"text": f"Ada: {text}", "content": text, "speaker": "Ada", "when": when})


def _diary(store: ChromaStore) -> None:
    _said(store, "fair", "2023-07-24T18:00:00", "I went to the county fair yesterday, it was lovely.")
    for day in range(1, 29):
        if day not in (23, 24):
            _said(store, f"d{day}", f"2023-07-{day:02d}T18:00:00", f"Where did the week go? Day {day} of work again.")


def test_a_question_naming_a_day_recalls_what_was_said_of_that_day(vector_store: ChromaStore) -> None:
    _diary(vector_store)
    question = "Where did Ada go on 23 July 2023?"
    hits = hybrid_search(vector_store, ("m", "ada"), question, k=3, now=datetime(2023, 7, 30))
    assert hits[0].key == "fair" and WHEN in hits[0].found_by
    without = hybrid_search(vector_store, ("m", "ada"), question, k=3, weights={"dense": 1.0, "bm25": 0.25})
    assert "fair" not in [h.key for h in without]


def test_recall_keeps_a_memory_found_by_date_below_the_similarity_bar(vector_store: ChromaStore) -> None:
    _diary(vector_store)
    found = recall(vector_store, [("m", "ada")], "what did I do yesterday?", k=3, min_similarity=0.99,
                   now=datetime(2023, 7, 25, 9))  # fmt: skip
    assert [r.key for r in found][:1] == ["fair"]
    chosen = select_memories([r.as_trace() for r in found], len, user_name="Ada", min_similarity=0.99,
                             max_tokens=10_000)  # fmt: skip
    assert [m["id"] for m in chosen.kept] == [r.key for r in found if WHEN in r.found_by]


def test_a_statement_naming_a_day_recalls_as_before(vector_store: ChromaStore) -> None:
    _diary(vector_store)
    hits = hybrid_search(vector_store, ("m", "ada"), "I was at work yesterday.", k=5, now=datetime(2023, 7, 25))
    assert all(WHEN not in h.found_by for h in hits)


def test_the_async_twin_ranks_by_date_too(vector_store: ChromaStore) -> None:
    _diary(vector_store)
    hits = asyncio.run(ahybrid_search(vector_store, ("m", "ada"), "Where did Ada go on 23 July 2023?", k=3,
                                      now=datetime(2023, 7, 30)))  # fmt: skip
    assert hits[0].key == "fair"


def test_recall_by_date_can_be_turned_off(vector_store: ChromaStore) -> None:
    _diary(vector_store)
    found = recall(vector_store, [("m", "ada")], "what did I do yesterday?", k=3, min_similarity=0.0,
                   now=datetime(2023, 7, 25, 9), by_date=False)  # fmt: skip
    assert all(WHEN not in r.found_by for r in found)


def test_the_setting_reaches_the_recall_node() -> None:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.store.memory import InMemoryStore

    from agentmm.graphs.chat import build_graph
    from agentmm.settings import Settings
    from tests.memory.conftest import CharacterEmbeddings

    store = InMemoryStore(index={"dims": 64, "embed": CharacterEmbeddings(64), "fields": ["text"]})
    for by_date in (True, False):
        graph = build_graph(Settings(memory_by_date=by_date), model=None, checkpointer=InMemorySaver(), store=store)
        assert graph.builder.nodes["recall"].runnable.func.by_date is by_date  # type: ignore[attr-defined]
