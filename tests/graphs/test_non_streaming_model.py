"""A chat model that does not stream (only ``_generate``) answers a turn: LangChain hands its
whole message over once, an ``AIMessage`` rather than chunks, and the generate node takes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from agentmm.graphs.agent import Agent
from agentmm.settings import load_settings


class WholeReplyModel(BaseChatModel):
    @property
    def _llm_type(self) -> str:
        return "whole-reply"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:  # fmt: skip
        said = messages[-1].text
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=f"you said: {said}"))])


def test_a_model_without_streaming_answers_sync_and_async(tmp_path: Path) -> None:
    import asyncio

    with Agent(load_settings(data_dir=tmp_path, memory=False), model=WholeReplyModel()) as agent:
        first = agent.chat("hello")
        assert first.reply == "you said: hello"
        second = asyncio.run(agent.achat("again", first.thread_id))
        assert second.reply == "you said: again"


def test_its_whole_reply_is_streamed_once_sync_and_async(tmp_path: Path) -> None:
    """``for text in agent.stream(...)`` printed nothing for such a model: only chunks were
    passed on, and it makes none."""
    import asyncio

    async def gathered(agent: Agent, thread_id: str) -> list[str]:
        return [text async for text in agent.astream("again", thread_id)]

    with Agent(load_settings(data_dir=tmp_path, memory=False), model=WholeReplyModel()) as agent:
        turn = agent.stream("hello")
        assert list(turn) == ["you said: hello"] and turn.result.reply == "you said: hello"
        assert turn.result.timings.ttft_s <= turn.result.timings.total_s
        assert asyncio.run(gathered(agent, turn.result.thread_id)) == ["you said: again"]
