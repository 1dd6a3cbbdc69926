"""The Agent facade: sync, streaming and async turns, threads on disk."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from agentmm import Agent, TurnResult
from agentmm.errors import DataDirError, EmptyInputError
from agentmm.settings import Settings
from agentmm.threads import list_threads


def fake_agent(settings: Settings, *replies: str) -> Agent:
    return Agent(settings, model=FakeListChatModel(responses=list(replies) or ["ok"]))


def test_chat_returns_the_json_contract(settings: Settings) -> None:
    result = fake_agent(settings, "Hello!").chat("hi", thread_id="abc")
    assert isinstance(result, TurnResult)
    data = result.to_json()
    assert {"reply", "thread_id", "model", "usage", "timings", "trace"} <= set(data)
    assert data["reply"] == "Hello!"
    assert data["thread_id"] == "abc"
    assert set(data["usage"]) == {"prompt_tokens", "completion_tokens"}
    assert set(data["timings"]) == {"ttft_s", "total_s"}
    assert data["timings"]["ttft_s"] <= data["timings"]["total_s"]
    assert data["trace"]["path"] == ["ingest", "compose", "generate"]


def test_stream_yields_text_then_result(settings: Settings) -> None:
    turn = fake_agent(settings, "streamed reply").stream("hi")
    with pytest.raises(RuntimeError):
        _ = turn.result
    assert "".join(turn) == "streamed reply"
    assert turn.result.reply == "streamed reply"


def test_threads_persist_in_the_data_dir(settings: Settings) -> None:
    first = fake_agent(settings, "one").chat("remember me")
    again = fake_agent(settings, "two")  # a new Agent opens the same SQLite file
    again.chat("still there?", thread_id=first.thread_id)
    threads = list_threads(again.checkpointer)
    assert [(t.thread_id, t.turns, t.title) for t in threads] == [(first.thread_id, 2, "remember me")]


def test_async_twins(settings: Settings) -> None:
    agent = fake_agent(settings, "a-reply", "b reply")

    async def run() -> tuple[TurnResult, list[str]]:
        result = await agent.achat("hi", thread_id="t")
        chunks = [c async for c in agent.astream("more", thread_id="t")]
        return result, chunks

    result, chunks = asyncio.run(run())
    assert result.reply == "a-reply"
    assert "".join(chunks) == "b reply"


def test_empty_input(settings: Settings) -> None:
    with pytest.raises(EmptyInputError):
        fake_agent(settings).chat("  \n")


def test_arguments_of_the_wrong_type_are_one_typed_error_and_save_nothing(settings: Settings) -> None:
    """They were AttributeErrors from deep inside (a thread id of 5 from the thread lock, a
    persona of 5 from the registry), and a path given as the attachments was read as one
    attachment per letter."""
    from agentmm.errors import InvalidContextError

    agent = fake_agent(settings, "ok")
    calls = [
        ("the message must be text (str), not int", lambda: agent.chat(123)),  # type: ignore[arg-type]
        ("a thread id is text (str), not int", lambda: agent.chat("hi", 5)),  # type: ignore[arg-type]
        ("persona must be str or None, not int", lambda: agent.chat("hi", persona=5)),  # type: ignore[arg-type]
        ("greeting must be int, not str", lambda: agent.chat("hi", greeting="1")),  # type: ignore[arg-type]
        ("attachments must be a list of file paths, not str", lambda: agent.chat("hi", attachments="cat.png")),
        ("attachments must be file paths, not int", lambda: agent.chat("hi", attachments=[5])),  # type: ignore[list-item]
        ("a thread id is text (str), not NoneType", lambda: agent.undo(None)),  # type: ignore[arg-type]
        ("a thread id is text (str), not int", lambda: agent.retry(7)),  # type: ignore[arg-type]
    ]
    for message, call in calls:
        with pytest.raises(InvalidContextError, match=f"^{re.escape(message)}$"):
            call()
    assert list_threads(agent.checkpointer) == []
    assert agent.chat("hi", attachments=()).reply == "ok"


def test_unwritable_data_dir(tmp_path: Path, settings: Settings) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    agent = Agent(settings.model_copy(update={"data_dir": blocker / "data"}), model=FakeListChatModel(responses=["x"]))
    with pytest.raises(DataDirError, match="is a file, not a folder"):
        agent.chat("hi")


def test_a_turn_that_fails_after_ingest_leaves_the_thread_as_it_was(tmp_path: Path) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from agentmm.errors import InputTooLongError
    from agentmm.threads import thread_exists

    model = FakeListChatModel(responses=["Hello!", "Fine."])
    with Agent(model=model, data_dir=tmp_path, memory=False, n_ctx=256, max_tokens=64) as agent:
        agent.chat("hi", "t")
        with pytest.raises(InputTooLongError):
            agent.chat("word " * 1500, "t")  # compose fails: it cannot fit (7,500 characters pass the size check)
        messages = agent.graph.get_state(agent.config("t")).values["messages"]
        assert [m.text for m in messages] == ["hi", "Hello!"]
        assert agent.chat("and now?", "t").reply == "Fine."
        with pytest.raises(InputTooLongError):
            agent.chat("word " * 1500, "fresh")
        assert not thread_exists(agent.checkpointer, "fresh")  # a new thread that failed is not kept


def test_a_message_far_too_long_is_refused_before_the_turn_touches_the_thread(tmp_path: Path) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from agentmm.errors import InputTooLongError
    from agentmm.threads import summarize_thread

    model = FakeListChatModel(responses=["Hello!"])
    with Agent(model=model, data_dir=tmp_path, memory=False, n_ctx=256, max_tokens=64) as agent:
        agent.chat("hi", "t")
        before = (summarize_thread(agent.checkpointer, "t"), len(list(agent.checkpointer.list(agent.config("t")))))
        with pytest.raises(InputTooLongError, match="8,193 characters: too long for n_ctx=256"):
            agent.chat("x" * (32 * 256 + 1), "t")
        after = (summarize_thread(agent.checkpointer, "t"), len(list(agent.checkpointer.list(agent.config("t")))))
        assert after == before  # no checkpoint written and rolled back: the thread's time did not move


def test_a_persona_added_in_python_is_played_by_its_nickname(settings: Settings) -> None:
    from agentmm.personas import Persona

    with Agent(settings, model=FakeListChatModel(responses=["Hm."])) as agent:
        agent.personas.add(Persona(name="Wren Tremaine", nickname="Trey", greetings=["*Trey nods.*"]))
        result = agent.chat("Hello.", persona="Trey")
    assert result.trace["persona"] == "Wren Tremaine" and result.trace["greeting"] == "*Trey nods.*"
