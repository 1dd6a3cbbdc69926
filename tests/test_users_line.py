"""A played reply that begins with the user's name and a colon is the user's line, not the
character's: told from the reply's first characters, streamed or not."""

from __future__ import annotations

from langchain_core.language_models.fake_chat_models import FakeListChatModel

from agentmm import Agent
from agentmm.personas import Persona
from agentmm.settings import load_settings
from agentmm.users_line import UsersLineFilter, begins_with, users_line_start


def test_only_the_users_name_and_a_colon_at_the_start_is_the_users_line() -> None:
    start = users_line_start("Ada", "Tamsin")
    assert start == "Ada:"
    assert begins_with("  Ada: Is the lamp old?", start) is True
    assert begins_with("Ad", start) is None  # too short to tell
    for reply in ("Tamsin: Aye.", "Ada, the lamp is old.", "I'll tell you this, Ada: it is old.", "Adam: hi"):
        assert begins_with(reply, start) is False, reply
    assert users_line_start("Ada", None) == "" and users_line_start("", "Tamsin") == ""
    assert users_line_start("Tamsin", "tamsin") == ""  # the user shares the character's name


def test_the_filter_holds_a_start_back_until_it_can_tell_and_drops_the_users_line() -> None:
    shown = UsersLineFilter("Ada:")
    assert [shown.feed("r1", piece) for piece in ("A", "da", ": Is it", " old?")] == ["", "", "", ""]
    assert [shown.feed("r2", piece) for piece in ("A", "da", ", it is", " old.")] == ["", "", "Ada, it is", " old."]
    assert shown.feed("r3", "Ad") == "" and shown.flush() == "Ad"  # a reply that ended before it could tell
    assert UsersLineFilter("").feed("r4", "Ada: hi") == "Ada: hi"  # not watching


def _agent(tmp_path, *replies: str) -> Agent:
    settings = load_settings(data_dir=tmp_path / "data", user_name="Ada", max_tokens=48)
    agent = Agent(settings, model=FakeListChatModel(responses=list(replies)))
    agent.personas.add(Persona(name="Tamsin", greetings=["*Tamsin waves.*"]))
    return agent


def test_a_played_reply_that_begins_with_the_users_name_is_not_shown_and_is_generated_again(tmp_path) -> None:
    """The user's-name stop ('\\nAda:') needs a line break before the name: a reply that began
    'Ada: ...' (the model writing the user's turn on its first token) reached the user whole."""
    with _agent(tmp_path, "Ada: Is the lamp old?", "Aye, the lamp is old.") as agent:
        turn = agent.stream("Tell me of the lamp.", persona="Tamsin")
        streamed = "".join(turn)  # FakeListChatModel streams a character at a time
        assert streamed == "Aye, the lamp is old." == turn.result.reply
        assert turn.result.trace["reply_again"] == "the user's line"


def test_a_reply_beginning_with_the_characters_own_name_or_naming_the_user_is_kept(tmp_path) -> None:
    with _agent(tmp_path, "Tamsin: Aye.", "Ada, the lamp is old.") as agent:
        for reply in ("Tamsin: Aye.", "Ada, the lamp is old."):
            turn = agent.stream("Tell me of the lamp.", persona="Tamsin", thread_id="t")
            assert "".join(turn) == reply == turn.result.reply
            assert "reply_again" not in turn.result.trace


def test_twice_the_users_line_is_a_line_saying_so(tmp_path) -> None:
    from agentmm.graphs.chat import NO_REPLY, USERS_LINE

    with _agent(tmp_path, "Ada: Is it?", "Ada: Well?") as agent:
        turn = agent.stream("Tell me of the lamp.", persona="Tamsin")
        assert "".join(turn) == NO_REPLY[USERS_LINE] == turn.result.reply
