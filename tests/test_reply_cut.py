"""A played reply that runs into a line in the recalled-memory block's form ("- (7 December
2026) Odom: Hello", "*(7 December 2026)", "... (12 January 2027) Oma: ...") ends there, in
the stream the user sees and in the reply kept, whatever the speaker; a date said in words is
the character's own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from agentmm import Agent
from agentmm.personas import Persona
from agentmm.reply_cut import MEMORY_LINE, ReplyCut, ReplyCutFilter
from agentmm.settings import load_settings
from agentmm.users_line import character_names

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


class Tokens(FakeListChatModel):
    """Streams each reply in the pieces given ("|" between them), as a model's tokens come."""

    def _stream(self, messages: list[Any], stop: list[str] | None = None, *args: Any, **kw: Any) -> Iterator[Any]:
        for piece in self._call(messages, stop=stop, **kw).split("|"):
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))

    async def _astream(self, messages: list[Any], stop: list[str] | None = None, *args: Any, **kw: Any) -> Any:
        for chunk in self._stream(messages, stop, **kw):
            yield chunk


def test_the_characters_own_name_on_a_line_of_its_own_opens_a_reply_without_being_its_text() -> None:
    """smollm2 began replies 'Odo Finch:\\n*He looks up.* Hello.' and '**Odo Finch:**\\nHello':
    a script's speaker tag, kept as the reply's first line."""
    cut = ReplyCut("Ada", character_names("Odo Finch"))
    for reply, text in [("Odo Finch:\n*He looks up.* Hello.", "*He looks up.* Hello."),
                        ("**Odo Finch:**\nHello", "Hello"), ("  odo :\r\n\nHello", "Hello"),
                        ("**Odo Finch**:\nHello", "Hello")]:  # fmt: skip
        assert reply[cut.opening(reply) :] == text, reply
    assert cut.opening("Odo Finch:", ended=True) == len("Odo Finch:")  # all of a reply that is only that
    for reply in ("Odo Finch: Hello", "Hey.\nOdo Finch:\nthat's me.", "Odo Finch\nHello", "Finch:\nHello", "Odo!\nHi"):
        assert cut.opening(reply) == 0, reply  # the name said with words, later, or not as a tag: kept
    for start in ("", "Od", "Odo Finch", "**Odo Finch:**", "Odo Finch: "):
        assert cut.opening(start) is None, start  # may still be the name line: not known yet
    assert cut.opening("Odo Fish") == 0 and ReplyCut("Ada").opening("Odo Finch:\nHello") == 0


def test_the_filter_never_shows_the_characters_own_name_line() -> None:
    shown = ReplyCutFilter(ReplyCut("Ada", character_names("Odo Finch")))
    pieces = ("**", "Odo", " Finch", ":**", "\n", "\n*He", " looks up.*", " Hello.")
    assert "".join(shown.feed("r1", piece) for piece in pieces) + shown.flush() == "*He looks up.* Hello."
    assert [shown.feed("r2", piece) for piece in ("Odo", " Finch", ":")] == ["", "", ""] and shown.flush() == ""
    said = "".join(shown.feed("r3", piece) for piece in ("Odo", " Finch", ": that's", " me.")) + shown.flush()
    assert said == "Odo Finch: that's me."


def test_a_streamed_reply_opening_with_the_characters_name_line_is_shown_and_kept_without_it(tmp_path) -> None:
    """Through the graph, the reply streamed token by token: what the user sees and what is kept
    both start after the name line; the name said mid-text is kept; a reply that is only the name
    line is an empty one; a name line before the user's line is the user's line at the start."""
    model = Tokens(responses=[
        "**|Odo| Finch|:**|\n|*He| looks| up|.*| Hello|.|\nOdo| Finch|: that|'s| me|.",
        "Odo| Finch|:|\n",
        "Odo| Finch|:|\n|Ada|:| Is| it|?", "Aye|.",
    ])  # fmt: skip
    settings = load_settings(data_dir=tmp_path / "data", user_name="Ada", memory=False, max_tokens=64)
    with Agent(settings, model=model) as agent:
        agent.personas.add(Persona(name="Odo Finch", greetings=["*Odo nods.*"]))
        turn = agent.stream("hello", persona="Odo Finch")
        said = "*He looks up.* Hello.\nOdo Finch: that's me."
        assert "".join(turn) == said == turn.result.reply
        turn = agent.stream("And?", turn.result.thread_id)
        assert "".join(turn) == "" == turn.result.reply and "reply_again" not in turn.result.trace  # as an empty reply
        turn = agent.stream("Well?", turn.result.thread_id)
        assert "".join(turn) == "Aye." == turn.result.reply and turn.result.trace["reply_again"] == "the user's line"
        kept = [m.text for m in agent.graph.get_state(agent.config(turn.result.thread_id)).values["messages"]]
        assert kept[2] == said and kept[4] == ""
