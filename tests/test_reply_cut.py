"""A played reply that runs into a line in the recalled-memory block's form ("- (7 December
2026) Odom: Hello", "*(7 December 2026)", "... (12 January 2027) Oma: ...") ends there, in
the stream the user sees and in the reply kept, whatever the speaker; a date said in words is
the character's own."""

from __future__ import annotations

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from agentmm import Agent
from agentmm.personas import Persona
from agentmm.reply_cut import MEMORY_LINE, ReplyCut
from agentmm.settings import load_settings

# Replies smollm2 gave (user "Ada", persona "Odo"), shown in full, and what is left of each.
COPIES = [
    ("* Odo: hello\nOdo: Hi! You're Ada.\n- (7 December 2026) Odom: Hello", "* Odo: hello\nOdo: Hi! You're Ada."),
    ("Hello there.\n- (8 December 2026) Odom Finch: Hi", "Hello there."),
    ("Odo: I'm glad you're happy. (12 January 2027) Oma: How's it going, Odo", "Odo: I'm glad you're happy."),
    ("The fog is in the past.\n*(7 December 2026)\nYou'll see it again soon.", "The fog is in the past."),
    ("Aye.\n[5 January 2027] Ada:\n*The sun is shining.*", "Aye."),  # square brackets, seen once too
]
OWN = [
    "I was born on 7 December 1990.",
    "[Looks up] Hello.",
    "*waves* [7 December 2026] it was.",
    "*smiles* It was (7 December 1990) a cold day.",
    "- (3 coins) Stew: lamb",
]


@pytest.mark.parametrize(("reply", "kept"), COPIES)
def test_a_line_in_the_memory_blocks_form_is_found(reply: str, kept: str) -> None:
    found = ReplyCut("Ada").find(reply)
    assert found is not None and found[1] == MEMORY_LINE and reply[: found[0]].rstrip() == kept


def _agent(tmp_path, *replies: str) -> Agent:
    settings = load_settings(data_dir=tmp_path / "data", user_name="Ada", memory=False, max_tokens=64)
    agent = Agent(settings, model=FakeListChatModel(responses=list(replies)))
    agent.personas.add(Persona(name="Odo", greetings=["*Odo nods.*"]))
    return agent


@pytest.mark.parametrize(("reply", "kept"), COPIES)
def test_a_reply_running_into_a_memory_line_ends_there_unseen(tmp_path, reply: str, kept: str) -> None:
    with _agent(tmp_path, reply) as agent:
        turn = agent.stream("hello", persona="Odo")
        assert "".join(turn) == kept == turn.result.reply  # streamed a character at a time
        assert "reply_again" not in turn.result.trace


@pytest.mark.parametrize("reply", OWN)
def test_a_date_of_the_characters_own_is_kept(tmp_path, reply: str) -> None:
    with _agent(tmp_path, reply) as agent:
        turn = agent.stream("hello", persona="Odo")
        assert "".join(turn) == reply == turn.result.reply


def test_a_reply_that_begins_with_a_memory_line_is_generated_again(tmp_path) -> None:
    with _agent(tmp_path, "*(7 December 2026) Ada: hi", "Hello, Ada.") as agent:
        turn = agent.stream("hello", persona="Odo")
        assert "".join(turn) == "Hello, Ada." == turn.result.reply
        assert turn.result.trace["reply_again"] == "copied memory"
