"""Only relevant memories, within a token cap and the window's memory budget, enter the prompt; the trace says
what was dropped."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agentmm.context import MEMORY_TOKENS_KEY
from agentmm.graphs.chat import build_graph
from agentmm.memory.conversation import format_recalled
from agentmm.memory.selection import (
    BELOW_BAR,
    LEXICAL_MARGIN,
    OVER_CAP,
    OVER_WINDOW,
    OVERLAP_SHARE,
    SAME_AS_PLACED,
    select_memories,
)
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


def test_the_window_budget_bounds_the_block_and_is_told_apart_from_the_cap() -> None:
    recalled = [memory("a", "one two three", 0.8), memory("long", " ".join(["word"] * 10), 0.9),
                memory("b", "four five", 0.7)]  # fmt: skip
    room = words(format_recalled([recalled[0], recalled[2]], "Ada"))
    chosen = select_memories(recalled, words, user_name="Ada", min_similarity=0.3, max_tokens=1000, window_room=room)
    assert [m["id"] for m in chosen.kept] == ["a", "b"]
    assert chosen.dropped == [{"id": "long", "similarity": 0.9, "reason": OVER_WINDOW}]
    assert chosen.tokens <= room
    # A spent budget still lets the turn's best memory in (memory never goes quiet), no more.
    spent = select_memories(recalled, words, user_name="Ada", min_similarity=0.3, max_tokens=1000, window_room=0)
    assert [m["id"] for m in spent.kept] == ["a"] and {d["reason"] for d in spent.dropped} == {OVER_WINDOW}
    assert [d["id"] for d in spent.dropped] == ["long", "b"]
    # The per-turn cap is checked first, so a memory over both is traced as over the cap.
    both = select_memories(recalled, words, user_name="Ada", min_similarity=0.3, max_tokens=room, window_room=room)
    assert both.dropped == [{"id": "long", "similarity": 0.9, "reason": OVER_CAP}]


def test_recall_counts_the_memories_earlier_turns_in_the_window_hold() -> None:
    """Turn 1 places a block; turn 2 of the same thread gets only what the window's budget has
    left (past it, its best memory alone), and turn 1's stored context is untouched (the prompt
    stays append-only)."""
    store = InMemoryStore(index={"dims": 64, "embed": CharacterEmbeddings(64), "fields": ["text"]})
    counter = TokenCounter(words)

    def turn(graph: Any, text: str, thread: str) -> dict[str, Any]:
        return graph.invoke({"input": text}, {"configurable": {"thread_id": thread}},
                            context=TurnContext(user_name="Ada"))  # fmt: skip

    def graph(share: float) -> Any:
        # n_ctx less the reply's reserve is 1000 tokens, so the window's budget is 1000 * share.
        settings = Settings(memory_min_similarity=0.0, memory_max_tokens=25, memory_window_share=share,
                            n_ctx=1001, max_tokens=1)  # fmt: skip
        return build_graph(settings, model=FakeListChatModel(responses=["Noted!"]), checkpointer=InMemorySaver(),
                           store=store, counter=counter)  # fmt: skip

    writer = graph(1.0)
    turn(writer, "My sister is called Mira and she lives in Lisbon.", "a")
    turn(writer, "My brother is called Tomas and he lives in Porto.", "b")

    bounded = graph(0.03)
    first = turn(bounded, "Where does my sister live?", "w")
    placed = first["trace"]["recall_tokens"]
    assert first["trace"]["recall_window"] == {"budget": 30, "held": 0, "room": 30, "freed": 0, "let_in": []}
    assert 0 < placed <= 25
    context_before = dict(first["messages"][-2].additional_kwargs)
    assert context_before[MEMORY_TOKENS_KEY] == placed
    second = turn(bounded, "Where does my brother live?", "w")
    window = {"budget": 30, "held": placed, "room": 30 - placed, "freed": 0, "let_in": []}
    assert second["trace"]["recall_window"] == window
    # Past the budget the turn places its best memory only (the unit test above drops the rest).
    assert len(second["trace"]["recalled"]) == 1 and second["trace"]["recall_tokens"] > 30 - placed
    assert second["messages"][-4].additional_kwargs == context_before
    # The same two turns on a thread whose budget is not spent: the second turn places a memory.
    free = turn(writer, "Where does my sister live?", "x")
    assert free["trace"]["recall_tokens"] > 0
    again = turn(writer, "Where does my brother live?", "x")
    assert again["trace"]["recalled"] and OVER_WINDOW not in {d["reason"] for d in again["trace"]["recall_dropped"]}


def test_a_memory_holding_the_question_s_content_words_needs_a_lower_bar() -> None:
    """A short fact embeds far from the question asking for it; holding the question's content
    words ("dog") lets it in ``LEXICAL_MARGIN`` below the bar, never further."""
    rex = {**memory("rex", "My dog is Rex", 0.26), "overlap": 1.0}
    weak = {**memory("weak", "I walked the dog today", 0.15), "overlap": 1.0}
    half = {**memory("half", "the dog show", 0.25), "overlap": 0.4}
    chosen = select_memories([rex, weak, half], words, user_name="Ada", min_similarity=0.3, max_tokens=1000)
    assert [m["id"] for m in chosen.kept] == ["rex"]
    assert [d["id"] for d in chosen.dropped] == ["weak", "half"]
    assert 0.3 - LEXICAL_MARGIN <= 0.26 < 0.3 and 0.4 < OVERLAP_SHARE <= 1.0
    strict = select_memories([rex], words, user_name="Ada", min_similarity=0.4, max_tokens=1000)
    assert strict.kept == []


def test_the_same_words_said_again_are_placed_once() -> None:
    """ "What did I say?" asked in five turns was five memories, all placed: 100 tokens of the
    block in one line said five times, which the model copied into its reply. The best ranked
    stays; the same words by the same speaker (case and whitespace aside) are dropped as such."""
    recalled = [memory("a", "What did I say?", 0.8), memory("m", "My sister is Mira", 0.7),
                memory("b", "what did  I say?", 0.75), {**memory("n", "What did I say?", 0.6), "speaker": "Nora"},
                memory("c", "What did I say? ", 0.5)]  # fmt: skip
    chosen = select_memories(recalled, words, user_name="Ada", min_similarity=0.3, max_tokens=1000)
    assert [m["id"] for m in chosen.kept] == ["a", "m", "n"]  # Nora saying it is another line
    assert chosen.dropped == [{"id": "b", "similarity": 0.75, "reason": SAME_AS_PLACED},
                              {"id": "c", "similarity": 0.5, "reason": SAME_AS_PLACED}]  # fmt: skip
    # One dropped below the bar does not keep a later copy that clears it out.
    low = select_memories([memory("x", "What did I say?", 0.1), memory("y", "What did I say?", 0.5)], words,
                          user_name="Ada", min_similarity=0.3, max_tokens=1000)  # fmt: skip
    assert [m["id"] for m in low.kept] == ["y"] and low.dropped[0]["reason"] == BELOW_BAR


def test_a_question_asked_in_several_turns_is_recalled_once() -> None:
    store = InMemoryStore(index={"dims": 64, "embed": CharacterEmbeddings(64), "fields": ["text"]})
    settings = Settings(memory_min_similarity=0.0)

    def turn(thread: str) -> dict[str, Any]:
        graph = build_graph(settings, model=FakeListChatModel(responses=["You asked."]),
                            checkpointer=InMemorySaver(), store=store, counter=TokenCounter(words))  # fmt: skip
        return graph.invoke({"input": "What did I say?"}, {"configurable": {"thread_id": thread}},
                            context=TurnContext(user_name="Ada"))  # fmt: skip

    for thread in "abcde":
        turn(thread)
    trace = turn("f")["trace"]
    said = [m for m in trace["recalled"] if m["text"] == "What did I say?"]
    assert len(said) == 1
    assert len([d for d in trace["recall_dropped"] if d["reason"] == SAME_AS_PLACED]) == 4
