"""A played reply that runs into the user's line ("Ada: ...", "ada:", "**Ada:**", "Ada :") is
ended there: told from its streamed text, at its very start too, and generated again when nothing
of the character's came before it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from agentmm import Agent
from agentmm.personas import Persona
from agentmm.reply_cut import USERS_LINE, ReplyCut, ReplyCutFilter
from agentmm.settings import load_settings
from agentmm.users_line import users_line_start
from tests.test_reply_cut import Tokens


def test_the_user_is_watched_for_unless_they_go_by_one_of_the_characters_names() -> None:
    assert users_line_start("Ada", "Tamsin") == "Ada"
    assert users_line_start("Ada", None) == "" and users_line_start("", "Tamsin") == ""
    assert users_line_start("Tamsin", "tamsin") == ""  # the user shares the character's name
    assert users_line_start("Odo", "Odo Finch") == ""  # ... or its first name
    assert users_line_start("Finch", "Odo Finch") == "Finch"


def test_the_users_line_in_its_forms_is_found_at_a_lines_start_only() -> None:
    cut = ReplyCut("Ada")
    for reply in ("Ada: hi", "ada: hi", "**Ada:** hi", "Ada : hi", "  Ada:\nhello", "\nAda: hi"):
        found = cut.find(reply)
        assert found is not None and found[1] == USERS_LINE and not reply[: found[0]].strip(), reply
    assert cut.find("Aye.\nada: more") == (5, USERS_LINE)
    for reply in ("Tamsin: Aye.", "Ada, the lamp is old.", "I'll tell you this, Ada: it is old.", "Adam: hi"):
        assert cut.find(reply) is None, reply


def test_the_filter_holds_a_start_back_until_it_can_tell_and_drops_the_users_line() -> None:
    shown = ReplyCutFilter(ReplyCut("Ada"))
    assert [shown.feed("r1", piece) for piece in ("A", "da", ": Is it", " old?")] == ["", "", "", ""]
    assert "".join(shown.feed("r2", piece) for piece in ("A", "da", ", it is", " old.")) == "Ada, it is old."
    assert shown.feed("r3", "Ad") == "" and shown.flush() == "Ad"  # a reply that ended before it could tell
    assert ReplyCutFilter(None).feed("r4", "Ada: hi") == "Ada: hi"  # not watching


def test_the_users_name_in_brackets_at_a_lines_start_is_the_users_line() -> None:
    """smollm2 wrote the user's turn as '[ADA]' or '[Ada]:' on a new line: not cut."""
    cut = ReplyCut("Ada")
    for reply in ("[ADA]\nIs it old?", "[Ada]: hi", "**[Ada]** hi", " [ ada ]:"):
        assert cut.find(reply) == (0, USERS_LINE), reply
    assert cut.find("Aye.\n[ADA]\nIs it?") == (5, USERS_LINE)
    for reply in ("[laughs] Aye.", "[1] The lamp.", "Aye.\n[Adam]: hi", "I call you [Ada] now.", "[Ada's lamp]"):
        assert cut.find(reply) is None, reply


def test_the_filter_holds_back_a_bracketed_start_until_it_can_tell() -> None:
    shown = ReplyCutFilter(ReplyCut("Ada"))
    held = [shown.feed("r1", piece) for piece in ("Aye.", "\n[", "A", "DA", "]", " Is it?")]
    assert held == ["Aye.", "", "", "", "", ""] and shown.flush() == ""
    said = "".join(shown.feed("r2", piece) for piece in ("Aye.", "\n[", "la", "ughs]", " Well.")) + shown.flush()
    assert said == "Aye.\n[laughs] Well."


def test_a_streamed_reply_running_into_the_users_name_in_brackets_ends_there_unseen(tmp_path) -> None:
    """Through the graph, token by token: '[ADA]' on a new line ends the reply, '[Ada]:' at its
    start has it generated again; '[laughs]' is the character's own."""
    model = Tokens(responses=["Aye|,| it| is|.|\n|[|AD|A|]|\n|And| the| boat|?", "[|Ada|]|:| hi", "[|laughs|]| Aye|."])
    with _agent(tmp_path, model=model) as agent:
        turn = agent.stream("Tell me of the lamp.", persona="Tamsin")
        assert "".join(turn) == "Aye, it is." == turn.result.reply and "reply_again" not in turn.result.trace
        turn = agent.stream("And the boat?", turn.result.thread_id)
        assert "".join(turn) == "[laughs] Aye." == turn.result.reply
        assert turn.result.trace["reply_again"] == "the user's line"


def _agent(tmp_path, *replies: str, model: Any = None, user: str = "Ada", name: str = "Tamsin") -> Agent:
    settings = load_settings(data_dir=tmp_path / "data", user_name=user, max_tokens=48)
    agent = Agent(settings, model=model or FakeListChatModel(responses=list(replies)))
    agent.personas.add(Persona(name=name, greetings=[f"*{name} waves.*"]))
    return agent


def test_a_played_reply_that_begins_with_the_users_line_in_any_form_is_not_shown_and_is_generated_again(
    tmp_path,
) -> None:
    """'ada: hi', '**Ada:** hi' and 'Ada : hi' were kept: only the exact 'Ada:' was watched for."""
    for first in ("Ada: Is the lamp old?", "ada: hi", "**Ada:** hi", "Ada : hi"):
        with _agent(tmp_path, first, "Aye, the lamp is old.") as agent:
            turn = agent.stream("Tell me of the lamp.", persona="Tamsin")
            streamed = "".join(turn)  # FakeListChatModel streams a character at a time
            assert streamed == "Aye, the lamp is old." == turn.result.reply, first
            assert turn.result.trace["reply_again"] == "the user's line", first


def test_a_reply_that_runs_into_the_users_line_ends_there(tmp_path) -> None:
    with _agent(tmp_path, "Aye, it is.\n**ada:** And the boat?") as agent:
        turn = agent.stream("Tell me of the lamp.", persona="Tamsin")
        assert "".join(turn) == "Aye, it is." == turn.result.reply
        assert "reply_again" not in turn.result.trace


class HonorsStops(FakeListChatModel):
    """Ends its reply where a stop string starts, as llama.cpp does."""

    def _stream(self, messages: list[Any], stop: list[str] | None = None, *args: Any, **kw: Any) -> Iterator[Any]:
        text = self._call(messages, stop=stop, **kw)
        text = text[: min((text.index(s) for s in stop or () if s in text), default=len(text))]
        for ch in text:
            yield ChatGenerationChunk(message=AIMessageChunk(content=ch))


def test_a_reply_beginning_with_a_line_break_and_the_users_line_is_generated_again(tmp_path) -> None:
    """With the '\\nAda:' stop string such a reply was cut to nothing at once and kept empty
    (with memories in the prompt, taken for a copied memory)."""
    with _agent(tmp_path, model=HonorsStops(responses=["\nAda: hi", "Aye."])) as agent:
        turn = agent.stream("Tell me of the lamp.", persona="Tamsin")
        assert "".join(turn) == "Aye." == turn.result.reply
        assert turn.result.trace["reply_again"] == "the user's line"


def test_a_user_going_by_the_characters_first_name_gets_its_own_lines(tmp_path) -> None:
    """User 'Odo' with 'Odo Finch': the character's own 'Odo:' was taken for the user's line."""
    with _agent(tmp_path, "Odo: Aye.\nOdo: Well.", user="Odo", name="Odo Finch") as agent:
        turn = agent.stream("Tell me of the lamp.", persona="Odo Finch")
        assert "".join(turn) == "Odo: Aye.\nOdo: Well." == turn.result.reply
        assert "reply_again" not in turn.result.trace


def test_twice_the_users_line_is_a_line_saying_so(tmp_path) -> None:
    from agentmm.graphs.chat import NO_REPLY, USERS_LINE

    with _agent(tmp_path, "Ada: Is it?", "ada: Well?") as agent:
        turn = agent.stream("Tell me of the lamp.", persona="Tamsin")
        assert "".join(turn) == NO_REPLY[USERS_LINE] == turn.result.reply


def test_a_user_going_by_the_characters_nickname_gets_its_own_lines(tmp_path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", user_name="Kit", max_tokens=48)
    with Agent(settings, model=FakeListChatModel(responses=["Kit: Aye."])) as agent:
        agent.personas.add(Persona(name="Katherine Moss", nickname="Kit", greetings=["*Kit waves.*"]))
        turn = agent.stream("Tell me of the lamp.", persona="Katherine Moss")
        assert "".join(turn) == "Kit: Aye." == turn.result.reply
        assert "reply_again" not in turn.result.trace
