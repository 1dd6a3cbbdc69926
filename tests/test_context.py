from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from agentmm.context import plan_window
from agentmm.errors import InputTooLongError
from agentmm.tokens import PER_MESSAGE_OVERHEAD, TokenCounter

WORDS = TokenCounter(lambda text: len(text.split()))


def conversation(turns: int, words: int = 10) -> list[BaseMessage]:
    messages: list[BaseMessage] = []
    for i in range(turns):
        messages.append(HumanMessage(" ".join([f"u{i}"] * words)))
        messages.append(AIMessage(" ".join([f"a{i}"] * words)))
    messages.append(HumanMessage("now"))
    return messages


def plan(messages: list[BaseMessage], start: int = 0, n_ctx: int = 400):
    return plan_window(messages, start, WORDS, n_ctx=n_ctx, reply_tokens=100, head=[("system", "be kind")])


def test_everything_fits() -> None:
    result = plan(conversation(3))
    assert result.window_start == 0
    parts = {p["part"]: p["tokens"] for p in result.parts}
    assert parts == {"system": 2, "history": 6 * (10 + PER_MESSAGE_OVERHEAD), "message": 1 + PER_MESSAGE_OVERHEAD}


def test_overflow_folds_many_turns_at_once_on_a_turn_boundary() -> None:
    messages = conversation(20)  # 20 turns * 32 tokens = 640 > the 298 available
    result = plan(messages)
    assert isinstance(messages[result.window_start], HumanMessage)
    history = next(p["tokens"] for p in result.parts if p["part"] == "history")
    assert history + 7 <= 298 * 0.5
    assert result.folded_messages == result.window_start > 0
    # The next turn fits without moving the window: the prompt head is unchanged.
    messages += [AIMessage("ok"), HumanMessage("again")]
    assert plan(messages, result.window_start).window_start == result.window_start


def test_window_never_moves_back() -> None:
    messages = conversation(3)
    assert plan(messages, start=4).window_start == 4


def test_message_too_long_for_the_context() -> None:
    with pytest.raises(InputTooLongError, match="shorten it or raise n_ctx"):
        plan([HumanMessage("word " * 1000)])
