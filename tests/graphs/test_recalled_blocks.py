"""Earlier turns' recalled memories leave the prompt before the window folds (agentmm.context).

At n_ctx 1024 with a persona and memory an exchange stored with its memories and lore was about
the history's whole room, and the window folded (a summary generated, 19-46 s on 2 cores) every
turn or two. The compose node now takes the earlier turns' recalled blocks out of the prompt
first, and folds only where the exchanges alone do not fit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agentmm.context import CONTEXT_KEY, turn_context
from agentmm.graphs.chat import build_graph, prompt_messages
from agentmm.memory.conversation import remember_turn, scope
from agentmm.memory.selection import IN_WINDOW, OVER_WINDOW
from agentmm.settings import Settings
from agentmm.state import TurnContext
from agentmm.tokens import TokenCounter
from tests.memory.conftest import CharacterEmbeddings

WORDS = TokenCounter(lambda text: len(text.split()))
FACTS = ["My sister is called Mira and she lives in Lisbon by the sea.",
         "My brother is called Tomas and he lives in Porto near the river.",
         "My cat Pickle is grey and sleeps all day."]  # fmt: skip
REPLY = "Noted, " + "word " * 15
ASKED = ["Where does my sister live?", "Tell me about the weather today please.", "What about tomorrow then?"]


def graph(store: InMemoryStore, n_ctx: int) -> Any:
    settings = Settings(memory_min_similarity=0.0, memory_max_tokens=60, memory_window_share=1.0, n_ctx=n_ctx,
                        max_tokens=120)  # fmt: skip
    model = FakeListChatModel(responses=[REPLY])
    return build_graph(settings, model=model, checkpointer=InMemorySaver(), store=store, counter=WORDS)


def turn(graph: Any, text: str, thread: str) -> dict[str, Any]:
    return graph.invoke({"input": text}, {"configurable": {"thread_id": thread}}, context=TurnContext(user_name="Ada"))


def three_turns() -> list[dict[str, Any]]:
    """The states after each of ``ASKED`` on a thread over a store of ``FACTS``, at an n_ctx
    (300, 180 tokens for the prompt) where two exchanges with their memories overflow."""
    store = InMemoryStore(index={"dims": 64, "embed": CharacterEmbeddings(64), "fields": ["text"]})
    for i, fact in enumerate(FACTS):
        exchange = [("user", "Ada", fact), ("assistant", "Assistant", REPLY)]
        remember_turn(store, scope(Settings().user_id), thread_id=f"seed{i}", turn=1, exchange=exchange,
                      when=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip
    small = graph(store, 300)
    return [turn(small, text, "w") for text in ASKED]


def test_earlier_turns_memories_leave_the_prompt_before_the_window_folds() -> None:
    states = three_turns()
    budgets = [state["trace"]["budget"] for state in states]
    # Turns 1 and 2 placed memories; turn 3 overflowed with them (it folded turn 1 away before)
    # and took them out of the prompt instead.
    assert all(s["trace"]["recall_tokens"] for s in states[:2])
    assert budgets[2]["folded_this_turn"] == 0 and budgets[2]["recalled_dropped_this_turn"] == 2
    third = states[2]
    assert third["window_start"] == 0 and budgets[2]["history_messages"] == 4
    prompt = [m.text for m in prompt_messages(third) if isinstance(m, HumanMessage)]
    assert prompt[:2] == ASKED[:2]  # the exchanges stay, without their memory blocks
    earlier = [m for m in third["messages"] if isinstance(m, HumanMessage)][:2]
    assert all(m.additional_kwargs[CONTEXT_KEY] and not turn_context(m) for m in earlier)  # kept for the record


def test_a_memory_an_earlier_block_shows_is_placed_again_once_that_block_leaves() -> None:
    """Recall left out memories shown in an earlier turn's block; when compose then took that
    block out (or folded it away) the memory was in the prompt no more, for that turn."""
    states = three_turns()
    first_block = states[0]["messages"][-2].additional_kwargs[CONTEXT_KEY]
    first_placed = {r["id"]: r["text"] for r in states[0]["trace"]["recalled"]}
    # Turn 2: turn 1's block stays, so what it shows is not placed twice, and the trace says why.
    second = states[1]["trace"]
    shown = [d["id"] for d in second["recall_dropped"] if d["reason"] == IN_WINDOW]
    assert shown and set(shown) <= set(first_placed)
    assert not set(shown) & {r["id"] for r in second["recalled"]}
    assert all(
        first_placed[key] not in states[1]["messages"][-2].additional_kwargs.get(CONTEXT_KEY, "") for key in shown
    )
    # Turn 3 takes turn 1's block out: a memory it showed that recall finds again is placed again.
    third = states[2]
    assert third["trace"]["budget"]["recalled_dropped_this_turn"] == 2
    again = [r["text"] for r in third["trace"]["recalled"] if r["text"] in first_block]
    assert again and all(text in third["messages"][-2].additional_kwargs[CONTEXT_KEY] for text in again)


JOB = "I work as a carpenter, mostly boats."
KNOWN = [*FACTS[:2], JOB, "My work bench is in the old boat shed."]
ASKED_JOB = ["Where does my sister live?", "Where does my brother live?", "What do I work as?"]


def job_turns(share: float) -> list[dict[str, Any]]:
    """The states after each of ``ASKED_JOB`` on a thread over a store of ``KNOWN``, at an n_ctx
    (1100) where the history always fits: the window's memory budget (``share`` of 1000) is what
    runs out. The first turn's block (40 tokens, the cap) shows the work bench; the job question
    recalls it first (left out: already in the window) and the carpenter memory after it."""
    store = InMemoryStore(index={"dims": 64, "embed": CharacterEmbeddings(64), "fields": ["text"]})
    for i, fact in enumerate(KNOWN):
        remember_turn(store, scope(Settings().user_id), thread_id=f"seed{i}", turn=1, exchange=[("user", "Ada", fact)],
                      when=datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip
    settings = Settings(memory_min_similarity=0.0, memory_max_tokens=40, memory_window_share=share, n_ctx=1100,
                        max_tokens=100)  # fmt: skip
    chat = build_graph(settings, model=FakeListChatModel(responses=["Noted."]), checkpointer=InMemorySaver(),
                       store=store, counter=WORDS)  # fmt: skip
    return [turn(chat, text, "w") for text in ASKED_JOB]


def test_this_turns_memory_wins_the_window_budget_earlier_blocks_hold() -> None:
    """The carpenter case in miniature (BENCHMARKS.md, folds at n_ctx 1024): with folds rarer,
    earlier turns' blocks held the window's memory budget, and "What do I work as?" had "I work
    as a carpenter" recalled and dropped over it. The earlier blocks now leave the prompt (a
    prefill, no fold, no summary) so the memory goes in."""
    first, _, third = job_turns(0.05)
    held = first["trace"]["recall_tokens"]
    trace, budget = third["trace"], third["trace"]["budget"]
    assert held and JOB in [r["text"] for r in trace["recalled"]]
    assert OVER_WINDOW not in {d["reason"] for d in trace["recall_dropped"]}
    window = trace["recall_window"]
    assert window["held"] == held and window["freed"] == held and window["room"] == window["budget"] == 50
    assert [r["id"] for r in trace["recalled"] if r["text"] == JOB] == window["let_in"]
    # What left, and why: turn 1's block (turn 2 placed none), for this turn's memories; no fold.
    assert budget["recalled_dropped_this_turn"] == budget["recalled_dropped_for_memories"] == 1
    assert budget["folded_this_turn"] == 0 and third["window_start"] == 0
    users = [m for m in third["messages"] if isinstance(m, HumanMessage)]
    assert users[0].additional_kwargs[CONTEXT_KEY] and not turn_context(users[0])  # kept for the record
    assert JOB in [m for m in prompt_messages(third) if isinstance(m, HumanMessage)][-1].text


def test_a_memory_that_would_not_fit_anyway_costs_no_prefill() -> None:
    """Where even the earlier blocks' room would not let the dropped memory in, they stay: the
    prompt stays append-only."""
    first, _, third = job_turns(0.03)
    trace, budget = third["trace"], third["trace"]["budget"]
    assert JOB not in [r["text"] for r in trace["recalled"]]
    assert OVER_WINDOW in {d["reason"] for d in trace["recall_dropped"]}
    assert trace["recall_window"]["freed"] == 0 and trace["recall_window"]["let_in"] == []
    assert budget["recalled_dropped_this_turn"] == 0
    block = first["messages"][-2].additional_kwargs[CONTEXT_KEY]
    assert turn_context(next(m for m in third["messages"] if isinstance(m, HumanMessage))) == block
