"""Only relevant memories, within a token cap, enter the prompt; the trace says what was dropped."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agentmm.graphs.chat import build_graph
from agentmm.memory.conversation import format_recalled
from agentmm.memory.selection import BELOW_BAR, OVER_CAP, select_memories
from agentmm.settings import Settings
from agentmm.state import TurnContext
from agentmm.tokens import TokenCounter
from tests.memory.conftest import CharacterEmbeddings


def words(text: str) -> int:
    return len(text.split())


def memory(key: str, text: str, similarity: float | None) -> dict[str, Any]:
    return {"id": key, "text": text, "similarity": similarity, "speaker": "Ada", "when": "2026-11-27T10:00:00"}


def test_memories_below_the_bar_or_found_by_bm25_alone_are_dropped() -> None:
    recalled = [memory("a", "my sister is Mira", 0.6), memory("b", "the weather", 0.2), memory("c", "coffee", None)]
    chosen = select_memories(recalled, words, user_name="Ada", min_similarity=0.3, max_tokens=1000)
    assert [m["id"] for m in chosen.kept] == ["a"]
    assert chosen.dropped == [
        {"id": "b", "similarity": 0.2, "reason": BELOW_BAR},
        {"id": "c", "similarity": None, "reason": BELOW_BAR},
    ]
    assert chosen.tokens == words(format_recalled(chosen.kept, "Ada"))


def test_the_block_stays_within_the_cap_and_a_shorter_memory_may_still_fit() -> None:
    long = memory("long", " ".join(["word"] * 40), 0.9)
    recalled = [memory("a", "one two three", 0.8), long, memory("b", "four five", 0.7)]
    cap = words(format_recalled([recalled[0], recalled[2]], "Ada"))
    chosen = select_memories(recalled, words, user_name="Ada", min_similarity=0.3, max_tokens=cap)
    assert [m["id"] for m in chosen.kept] == ["a", "b"]
    assert chosen.dropped == [{"id": "long", "similarity": 0.9, "reason": OVER_CAP}]
    assert chosen.tokens == cap
    assert select_memories(recalled, words, user_name="Ada", min_similarity=0.3, max_tokens=0).kept == []


def test_recall_node_places_only_selected_memories_and_traces_the_rest() -> None:
    store = InMemoryStore(index={"dims": 64, "embed": CharacterEmbeddings(64), "fields": ["text"]})
    model = FakeListChatModel(responses=["Noted!", "Noted!", "Mira."])
    counter = TokenCounter(words)

    def turn(graph: Any, text: str, thread: str) -> dict[str, Any]:
        return graph.invoke({"input": text}, {"configurable": {"thread_id": thread}},
                            context=TurnContext(user_name="Ada"))  # fmt: skip

    wide = build_graph(Settings(memory_min_similarity=0.0), model=model, checkpointer=InMemorySaver(), store=store,
                       counter=counter)  # fmt: skip
    turn(wide, "My sister is called Mira and she lives in Lisbon.", "a")
    turn(wide, " ".join(["filler"] * 60), "b")
    # A bar no memory clears: none is placed, each is traced as dropped below it.
    strict = build_graph(Settings(memory_min_similarity=1.01), model=FakeListChatModel(responses=["?"]),
                         checkpointer=InMemorySaver(), store=store, counter=counter)  # fmt: skip
    result = turn(strict, "What is my sister called?", "c")
    assert result["trace"]["recalled"] == []
    dropped = result["trace"]["recall_dropped"]
    assert dropped and {d["reason"] for d in dropped} == {BELOW_BAR}
    assert "agentmm_context" not in result["messages"][-2].additional_kwargs
    # A cap that fits the short memory but not the long one.
    capped = build_graph(Settings(memory_min_similarity=0.0, memory_max_tokens=40),
                         model=FakeListChatModel(responses=["Mira."]), checkpointer=InMemorySaver(), store=store,
                         counter=counter)  # fmt: skip
    result = turn(capped, "What is my sister called? filler", "d")
    kept = result["trace"]["recalled"]
    assert kept and all(words(r["text"]) < 40 for r in kept)
    assert OVER_CAP in {d["reason"] for d in result["trace"]["recall_dropped"]}
    assert result["trace"]["recall_tokens"] <= 40
