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
from agentmm.memory.selection import IN_WINDOW
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
