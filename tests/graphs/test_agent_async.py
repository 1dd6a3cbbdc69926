"""Every turn runs through one runner (``agentmm.graphs.turn``): LangGraph's ``astream`` on the
agent's own event loop thread, with ``chat``/``stream`` as sync wrappers over it. Cancelling an
async turn stops generation and frees the model, and the cancelled turn ends as a sync cancel
does: its partial reply kept, marked interrupted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult

from agentmm import Agent
from agentmm.settings import Settings
from agentmm.threads import thread_exists
from agentmm.tools.builtin import roll_dice
from tests.graphs.scripted_model import ScriptedToolModel, call

LONG = "Write a very long story about a dragon and a knight, in many chapters, with every detail."


def last_reply(agent: Agent, thread_id: str) -> AIMessage:
    message = agent.graph.get_state(agent.config(thread_id)).values["messages"][-1]
    assert isinstance(message, AIMessage)
    return message


def test_cancelling_an_async_turn_on_the_shipped_model_frees_it_within_a_second(
    shipped_model: Path, isolated_env: Path
) -> None:
    agent = Agent(model=str(shipped_model), max_tokens=2048, temperature=0.7)

    async def run() -> None:
        agent.warm_up()  # the graph built, the model loaded
        loaded = agent.model.load()
        lock = loaded.lock
        for how in ("astream", "achat"):
            loaded.stats.completion_tokens = 0

            async def long_turn(how: str = how) -> None:
                if how == "achat":
                    await agent.achat(LONG, "t")
                    return
                async for _ in agent.astream(LONG, "t"):
                    pass

            task = asyncio.create_task(long_turn())
            # Mid-reply: the prompt is read and tokens are being made (a prompt being read is one
            # llama.cpp call, which a stop cannot cut short; the stop comes after it).
            while loaded.stats.completion_tokens < 8:
                await asyncio.sleep(0.01)
            assert lock.locked(), how
            cancelled = time.perf_counter()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert lock.acquire(timeout=1.0), f"{how}: the model was still held a second after the cancel"
            freed = time.perf_counter() - cancelled
            lock.release()
            assert freed < 1.0, f"{how}: {freed:.2f} s"
            # Kept as a sync cancel keeps it: the partial reply, marked interrupted.
            partial = last_reply(agent, "t")
            assert partial.response_metadata.get("interrupted") is True, how
            # What the stopped reply spent is counted (it was 0/0: usage came only at the end).
            usage = agent.graph.get_state(agent.config("t")).values["trace"]["usage"]
            assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] >= 8, (how, usage)
        # The agent goes on: the next turn on the same thread answers in full.
        after = await agent.achat("Say hi.", "t")
        assert after.reply and not after.interrupted

    with agent:
        asyncio.run(run())


def test_an_async_cancel_keeps_the_partial_reply_as_a_sync_cancel_does(settings: Settings) -> None:
    words = " ".join(f"word{i}" for i in range(200))
    agent = Agent(settings, model=FakeListChatModel(responses=[words], sleep=0.01))
    with agent:
        turn = agent.stream("go", "sync")
        for i, _ in enumerate(turn):
            if i == 3:
                turn.cancel()
        assert turn.result.interrupted and 0 < len(turn.result.reply) < len(words)

        async def cancel_after_four() -> None:
            async def consume() -> None:
                async for i, _ in _enumerate(agent.astream("go", "async")):
                    if i == 3:
                        started.set()

            started = asyncio.Event()
            task = asyncio.create_task(consume())
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_after_four())
        for thread in ("sync", "async"):
            reply = last_reply(agent, thread)
            assert reply.response_metadata.get("interrupted") is True, thread
            assert 0 < len(reply.text) < len(words), thread


async def _enumerate(chunks: Any) -> Any:
    i = 0
    async for chunk in chunks:
        yield i, chunk
        i += 1


def test_leaving_a_stream_early_ends_the_turn_interrupted(settings: Settings) -> None:
    words = " ".join(f"w{i}" for i in range(100))
    agent = Agent(settings, model=FakeListChatModel(responses=[words, "next"], sleep=0.01))
    with agent:
        for _ in agent.stream("go", "t"):
            break  # the generator is closed here: the turn saves what it has, then ends
        assert last_reply(agent, "t").response_metadata.get("interrupted") is True
        assert agent.chat("again", "t").reply == "next"


class Failing(BaseChatModel):
    @property
    def _llm_type(self) -> str:
        return "failing"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kw: Any) -> ChatResult:  # fmt: skip
        raise ValueError("the model broke")

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                **kw: Any) -> Iterator[ChatGenerationChunk]:  # fmt: skip
        raise ValueError("the model broke")


def test_a_failed_async_turn_is_rolled_back_like_a_sync_one(settings: Settings) -> None:
    with Agent(settings, model=Failing()) as agent:

        async def run() -> None:
            with pytest.raises(ValueError, match="the model broke"):
                await agent.achat("hello", "a")
            with pytest.raises(ValueError, match="the model broke"):
                _ = [e async for e in agent.astream_events("hello", "e")]

        asyncio.run(run())
        with pytest.raises(ValueError, match="the model broke"):
            agent.chat("hello", "s")
        for thread in ("a", "e", "s"):  # a new thread's failed first turn leaves no thread
            assert not thread_exists(agent.checkpointer, thread), thread


def test_astream_events_opens_a_persona_thread_with_its_greeting(settings: Settings) -> None:
    with Agent(settings, model=FakeListChatModel(responses=["Nice to meet you."])) as agent:

        async def run() -> list[dict[str, Any]]:
            return [e async for e in agent.astream_events("hi", "p", persona="Nora Quill")]

        events = asyncio.run(run())
        assert "".join(e["data"]["chunk"].text for e in events if e["event"] == "on_chat_model_stream") == (
            "Nice to meet you."
        )
        messages = agent.graph.get_state(agent.config("p")).values["messages"]
        assert [m.type for m in messages] == ["ai", "human", "ai"]  # the greeting first
        assert messages[0].text and messages[-1].text == "Nice to meet you."


def test_callbacks_run_on_the_iterating_thread_in_order_with_the_text(settings: Settings) -> None:
    script = [call("roll_dice", notation="d6"), AIMessage("Rolled it.")]
    agent = Agent(settings, model=ScriptedToolModel(script=script), tools=[roll_dice], approve_tools=["roll_dice"])
    seen: list[tuple[str, Any]] = []
    with agent:
        turn = agent.stream("roll", "t")
        turn.on_approval = lambda request: seen.append(("approve", threading.current_thread())) or True
        turn.on_tool_calls = lambda calls: seen.append(("calls", threading.current_thread()))
        text = "".join(turn)
    assert text == "Rolled it."
    assert seen == [("approve", threading.current_thread()), ("calls", threading.current_thread())]


def test_one_event_loop_thread_per_agent_closed_with_it(settings: Settings) -> None:
    def loops() -> int:
        return sum(t.name == "agentmm-turns" for t in threading.enumerate())

    before = loops()
    agent = Agent(settings, model=FakeListChatModel(responses=["one", "two", "three"]))
    agent.chat("a", "t")
    agent.chat("b", "t")
    asyncio.run(agent.achat("c", "t"))
    assert loops() == before + 1  # every turn, sync or async, on the agent's one loop
    agent.close()
    assert loops() == before


def test_a_turn_stream_runs_once(settings: Settings) -> None:
    with Agent(settings, model=FakeListChatModel(responses=["one"])) as agent:
        turn = agent.stream("hi")
        assert "".join(turn) == "one"
        with pytest.raises(RuntimeError, match="already run"):
            list(turn)


def test_astream_events_filters_what_it_hands_on_not_the_turn(settings: Settings) -> None:
    """The runner reads the graph's own stream events whatever the caller keeps: a filter that
    keeps only the model's events still gets a whole, saved turn."""
    with Agent(settings, model=FakeListChatModel(responses=["Just tokens."])) as agent:

        async def run() -> list[dict[str, Any]]:
            return [e async for e in agent.astream_events("hi", "f", include_types=["chat_model"])]

        events = asyncio.run(run())
        assert events and {e["event"] for e in events} <= {
            "on_chat_model_start", "on_chat_model_stream", "on_chat_model_end",
        }  # fmt: skip
        assert last_reply(agent, "f").text == "Just tokens."
