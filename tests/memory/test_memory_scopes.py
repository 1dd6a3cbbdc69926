"""Which scopes a turn recalls from, and how hits from several scopes are ranked together."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore

from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.conversation import recall, remember_turn, scope
from agentmm.memory.manage import user_scopes
from tests.memory.conftest import CharacterEmbeddings

INDEX: dict[str, Any] = {"dims": 64, "fields": ["text"]}


@pytest.fixture(params=["in-memory", "chroma"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaseStore]:
    """The full-read path (LangGraph's ``InMemoryStore``) and the incremental one (Chroma)."""
    index = {**INDEX, "embed": CharacterEmbeddings(64)}
    if request.param == "in-memory":
        yield InMemoryStore(index=index)  # type: ignore[arg-type]
    else:
        with ChromaStore.from_path(tmp_path / "store", index=index) as store:  # type: ignore[arg-type]
            yield store


def told(store: BaseStore, persona: str, text: str, thread: str) -> None:
    remember_turn(store, scope("ada", persona), thread_id=thread, turn=1, exchange=[("user", "Ada", text)],
                  when=datetime(2026, 12, 1, tzinfo=UTC))  # fmt: skip


def test_hits_of_several_scopes_are_ranked_by_relevance_not_by_rank_in_their_scope(any_store: BaseStore) -> None:
    """``memory search`` without ``--persona``: each scope was fused on its own, so each scope's
    best hit got the same score (1/61) and the scopes' order decided: the exact text came
    third behind weaker hits of scopes listed before its own."""
    told(any_store, "Amy", "Lunch at noon, tomorrow.", "a")
    told(any_store, "Bo", "We took the train to the coast.", "b")
    told(any_store, "Zed", "🎂🎉🐢", "c")
    scopes: Callable[[], list[tuple[str, ...]]] = lambda: user_scopes(any_store, "ada", None)  # noqa: E731
    assert len(scopes()) == 3
    found = recall(any_store, scopes(), "🎂🎉🐢", k=3, min_similarity=0.0)
    assert found[0].text == "🎂🎉🐢"
    assert recall(any_store, scopes(), "🎂🎉🐢", k=1, min_similarity=0.0)[0].text == "🎂🎉🐢"
    similarities = [r.similarity for r in found]
    assert similarities == sorted(similarities, reverse=True)  # dense alone: its order is theirs
    assert len({r.score for r in found}) == len(found)  # no longer one score per scope's best
