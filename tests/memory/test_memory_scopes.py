"""Which scopes a turn recalls from, and how hits from several scopes are ranked together."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore

from agentmm.graphs.memory import Recall
from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.conversation import recall, remember_turn, scope
from agentmm.memory.manage import add_memory, user_scopes
from agentmm.state import TurnContext
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


def recalled_by(store: BaseStore, persona: str, message: str, *, shared_memory: bool) -> list[str]:
    """What the turn graph's recall node recalls for ``persona``'s turn."""
    node = Recall()
    state: Any = {"messages": [HumanMessage(message)], "persona": persona}
    runtime: Runtime[Any] = Runtime(context=TurnContext(user_id="ada", shared_memory=shared_memory), store=store)
    out = node(state, {"configurable": {"thread_id": "now"}}, runtime)
    return [r["text"] for r in out["recalled"]]


def test_shared_notes_are_recalled_by_every_persona_and_shared_memory_by_all(any_store: BaseStore) -> None:
    """README: what you told one character is not known to another unless ``shared_memory``;
    ``memory add --shared`` is "known to every persona". Before, a ``--shared`` note was
    recalled only with ``shared_memory`` on, and ``shared_memory`` recalled that note alone,
    never what the user told another persona."""
    told(any_store, "Nora", "My sister is named Zelda.", "a")
    add_memory(any_store, "ada", None, "My cat is called Mochi.", shared=True)
    ask = "What is my sister's name and what is my cat called?"

    alone = recalled_by(any_store, "Bram", ask, shared_memory=False)
    assert "My cat is called Mochi." in alone
    assert "My sister is named Zelda." not in alone  # told to Nora, not Bram

    together = recalled_by(any_store, "Bram", ask, shared_memory=True)
    assert {"My cat is called Mochi.", "My sister is named Zelda."} <= set(together)

    assert recalled_by(any_store, "Nora", ask, shared_memory=False)[:2] != []  # her own and the note
    assert set(recalled_by(any_store, "Nora", ask, shared_memory=False)) >= {
        "My sister is named Zelda.",
        "My cat is called Mochi.",
    }


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
