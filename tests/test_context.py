from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from agentmm.context import (
    CONTEXT_KEPT_KEY,
    CONTEXT_KEY,
    MEMORY_TOKENS_KEY,
    memory_tokens,
    plan_window,
    render,
    turn_context,
    without_recalled,
)
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


def persona_plan(description: str, message: str = "now", n_ctx: int = 400) -> object:
    head = [("description", description), ("personality", "wry and patient " * 5), ("scenario", "a lighthouse " * 5)]
    return plan_window([HumanMessage(message)], 0, WORDS, n_ctx=n_ctx, reply_tokens=100, head=head,
                       droppable=("scenario", "personality", "description"), truncatable=("description",))  # fmt: skip


def test_parts_dropped_before_a_big_one_come_back_and_the_big_one_is_cut_short() -> None:
    sentences = " ".join(f"Fact {i} about the keeper." for i in range(2000))  # 10,000 words
    result = persona_plan(sentences)
    assert result.dropped == []
    assert set(result.kept) == {"description", "personality", "scenario"}
    cut = result.truncated[0]
    assert cut["part"] == "description" and cut["full_tokens"] == 10_000
    # Half of what the other head parts leave ((300 - 15 - 10) // 2) stays for the turn and history.
    assert 120 <= cut["tokens"] <= 137 and result.kept["description"].endswith("keeper.…")
    assert result.kept["description"].startswith("Fact 0 about the keeper.")
    assert result.budget["free"] >= 110  # less the template's tokens (markers, separators)
    assert result.budget["prompt_tokens"] == sum(p["tokens"] for p in result.parts) + result.budget["template_tokens"]


def test_the_cut_is_the_same_whatever_the_message() -> None:
    sentences = " ".join(f"Fact {i} about the keeper." for i in range(2000))
    cuts = {persona_plan(sentences, message).kept["description"] for message in ["hi", "tell me more " * 10]}
    assert len(cuts) == 1  # the prompt's head stays put from turn to turn


def test_too_little_room_leaves_the_part_out() -> None:
    result = persona_plan("word " * 5000, n_ctx=180)  # 80 tokens left: too few to cut to
    assert result.dropped == ["description"] and result.truncated == []


def test_a_message_that_cannot_fit_names_what_else_the_turn_brings() -> None:
    with pytest.raises(InputTooLongError, match=r"this turn's observations 50 tokens\); shorten it"):
        plan_window([HumanMessage("word " * 260)], 0, WORDS, n_ctx=400, reply_tokens=100, head=[("system", "hi")],
                    turn=[("observations", "seen " * 50)])  # fmt: skip


def test_a_context_the_reply_reserve_fills_says_to_change_the_reserve() -> None:
    """--n-ctx 512 with the default max_tokens (512) refused "hi" with "shorten it"."""
    with pytest.raises(InputTooLongError, match=r"512 kept for the reply\); lower max_tokens or raise n_ctx"):
        plan_window([HumanMessage("hi")], 0, WORDS, n_ctx=512, reply_tokens=512, head=[("system", "hi")])


def exchanges(*words: int) -> list[BaseMessage]:
    """A thread of exchanges of ``words`` words each (half the user's, half the reply's), then "now"."""
    messages: list[BaseMessage] = []
    for i, size in enumerate(words):
        messages += [HumanMessage(" ".join([f"u{i}"] * (size // 2))), AIMessage(" ".join([f"a{i}"] * (size // 2)))]
    return [*messages, HumanMessage("now")]


def test_a_fold_with_no_room_for_half_keeps_the_last_exchange_alone_so_the_next_turn_fits() -> None:
    """At n_ctx 1024 with memory the history had room for about two exchanges: when no boundary
    left half the budget free, the window moved to the earliest boundary that fitted at all,
    stayed all but full, and folded again on the next turn by one exchange (17 folds in 37)."""
    # The history's budget: 300 - 2 (system) - 7 ("now") - 14 (template) = 277 tokens; a
    # message is its words and 6.
    messages = exchanges(80, 80, 170)  # 92 + 92 + 182 = 366: over; 92 + 182 = 274 fits; 182 > 277 / 2
    result = plan(messages)
    assert result.window_start == 4 and result.budget["history_messages"] == 2
    # The next turn (another 80-word exchange) fits without folding: the head stays put.
    messages += [AIMessage(" ".join(["a3"] * 40)), HumanMessage("again")]
    messages[-3] = HumanMessage(" ".join(["u3"] * 40))
    assert plan(messages, result.window_start).window_start == result.window_start


def test_the_last_exchange_is_kept_before_this_turns_recalled_memories() -> None:
    """An exchange stored with its memories and lore outgrew the room a turn with its own
    memories left, and the model answered having seen no earlier exchange (history_messages 0)."""
    # The history's budget: 300 - 2 - 7 - 15 (template) - 120 (memories) = 156 tokens, 277 without
    # the memories, which the last exchange (212) fits but not both (132 + 212).
    messages = exchanges(120, 200)
    memories = "remembered " * 120

    def planned(start: int, memories: str) -> object:
        return plan_window(messages, start, WORDS, n_ctx=400, reply_tokens=100, head=[("system", "be kind")],
                           turn=[("memories", memories)], droppable=("memories",))  # fmt: skip

    result = planned(0, memories)
    assert result.budget["history_messages"] == 2 and result.window_start == 2
    assert result.dropped == ["memories"] and "memories" not in result.kept
    # Memories that leave room for the last exchange stay.
    assert planned(0, "remembered " * 40).dropped == []
    # Where the last exchange cannot fit even without them, they stay and the history goes.
    messages[2:4] = [HumanMessage("u " * 150), AIMessage("a " * 150)]  # 312 tokens
    alone = planned(0, memories)
    assert alone.dropped == [] and alone.budget["history_messages"] == 0


def test_what_the_user_sent_is_never_dropped_to_keep_the_last_exchange() -> None:
    """Only recalled lore and memories yield to the last exchange: the caption or transcript of
    what the user sent this turn went too (the model answered a picture it was not shown)."""
    messages = exchanges(100, 200)  # the last exchange: 200 tokens, 164 left beside this turn's parts
    plan = plan_window(messages, 0, WORDS, n_ctx=600, reply_tokens=100, head=[("description", "d " * 50)],
                       turn=[("memories", "m " * 20), ("observations", "seen " * 250)],
                       droppable=("memories", "observations"), truncatable=("observations",))  # fmt: skip
    # The memories alone would not make room for it: they stay, and the history folds instead.
    assert plan.dropped == [] and "observations" in plan.kept and plan.budget["history_messages"] == 0


def recalled_exchanges(*contexts: int, words: int = 20, kept: str | None = "") -> list[BaseMessage]:
    """Exchanges of ``words`` words a side, each user turn stored with a recalled block of
    ``contexts[i]`` words (``kept``: what stays of it once the block leaves; None: a turn saved
    before that was written), then "now"."""
    messages: list[BaseMessage] = []
    for i, size in enumerate(contexts):
        stored = {CONTEXT_KEY: " ".join(["remembered"] * size), MEMORY_TOKENS_KEY: size}
        if kept is not None:
            stored[CONTEXT_KEPT_KEY] = kept
        messages += [HumanMessage(" ".join([f"u{i}"] * words), additional_kwargs=stored),
                     AIMessage(" ".join([f"a{i}"] * words))]  # fmt: skip
    return [*messages, HumanMessage("now")]


def test_earlier_turns_recalled_blocks_leave_before_anything_folds() -> None:
    """At n_ctx 1024 with a persona and memory an exchange stored with its memories and lore was
    250-400 tokens, about the history's whole room, and the window folded (a summary generated)
    every turn or two. The blocks go first; the exchanges stay."""
    # The history's budget is about 277 tokens; the exchanges are 26 + 26 tokens a side, and the
    # first user turn holds a 150-word block: 306 in all, 156 without it.
    messages = recalled_exchanges(150, 0, 0)
    result = plan(messages)
    assert result.window_start == 0 and result.folded_messages == 0
    assert result.stripped == [0] and result.budget["recalled_dropped_this_turn"] == 1
    history = next(p["tokens"] for p in result.parts if p["part"] == "history")
    assert history == 3 * 2 * (20 + PER_MESSAGE_OVERHEAD)
    # While the blocks fit, nothing leaves: the prompt stays append-only.
    small = plan(recalled_exchanges(60, 0, 0))
    assert small.stripped == [] and small.budget["recalled_dropped_this_turn"] == 0


def test_a_fold_keeps_its_exchanges_without_their_recalled_blocks() -> None:
    """Where the exchanges alone do not fit, the window folds, and the exchanges it keeps are
    counted (and shown) without their blocks: the prompt changes there anyway, and more of
    them stay."""
    messages = recalled_exchanges(60, 60, 60, 60, 60, 60)  # 6 * 52 = 312 tokens bare: over
    result = plan(messages)
    # Half the room (~138) holds two bare exchanges (104), not one with its block (112).
    assert result.window_start == 8 and result.budget["history_messages"] == 4
    assert result.stripped == [8, 10]


def test_a_turn_saved_before_its_recalled_part_was_said_apart_keeps_its_context() -> None:
    """Without ``CONTEXT_KEPT_KEY`` the stored context may hold what the user sent: it is not cut."""
    result = plan(recalled_exchanges(150, 0, 0, kept=None))
    assert result.stripped == [] and result.window_start > 0


def test_a_turn_without_its_recalled_block_still_shows_what_the_user_sent() -> None:
    seen = "[Ada sent a picture: a lighthouse at dusk]"
    message = HumanMessage("look", additional_kwargs={CONTEXT_KEY: f"remembered things\n\n{seen}",
                                                      CONTEXT_KEPT_KEY: seen, MEMORY_TOKENS_KEY: 2})  # fmt: skip
    assert render(message, recalled=False) == f"{seen}\n\nlook"
    assert render(message) == f"remembered things\n\n{seen}\n\nlook"
    stripped = without_recalled(message)
    assert render(stripped) == f"{seen}\n\nlook" and turn_context(stripped) == seen
    assert memory_tokens(stripped) == 0 and memory_tokens(message) == 2
    assert stripped.additional_kwargs[CONTEXT_KEY] == message.additional_kwargs[CONTEXT_KEY]  # kept for the record


def test_recalled_blocks_leave_for_this_turns_memories_and_say_so_even_on_an_overflow() -> None:
    """``clear_recalled`` (recall took their room in the window's memory budget) takes the
    earlier blocks out where the history fits, and counts them as left for this turn's memories
    where it overflows too: there this turn's bigger block is part of the overflow (at n_ctx 1024
    it was on every turn it fired), and they were counted as left for the overflow alone."""
    fits = plan_window(recalled_exchanges(60, 0, 0), 0, WORDS, n_ctx=400, reply_tokens=100,
                       head=[("system", "be kind")], clear_recalled=True)  # fmt: skip
    assert fits.stripped == [0] and fits.window_start == 0
    assert fits.budget["recalled_dropped_for_memories"] == fits.budget["recalled_dropped_this_turn"] == 1
    over = plan_window(recalled_exchanges(150, 0, 0), 0, WORDS, n_ctx=400, reply_tokens=100,
                       head=[("system", "be kind")], clear_recalled=True)  # fmt: skip
    assert over.stripped == [0] and over.budget["recalled_dropped_for_memories"] == 1
    # Without it, an overflow's blocks are not counted as left for this turn's memories.
    assert plan(recalled_exchanges(150, 0, 0)).budget["recalled_dropped_for_memories"] == 0
