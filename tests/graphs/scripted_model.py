"""A scripted chat model that calls tools: the graph's tool loop run without a real model.

langchain-core's fake chat models cannot bind tools or stream tool calls; this one replays
its script (each reply may carry tool calls or malformed ones) and records what it was bound
with and the prompts it saw.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import Field


class ScriptedToolModel(BaseChatModel):
    script: list[AIMessage]
    repeat_last: bool = False
    prompts: list[list[BaseMessage]] = Field(default_factory=list)
    bindings: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-tools"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Runnable:
        names = [getattr(t, "name", None) or t["function"]["name"] for t in tools]
        self.bindings.append({"tools": names, "tool_choice": tool_choice})
        return self.bind(tool_choice=tool_choice, **kwargs)

    def _next(self, messages: list[BaseMessage]) -> AIMessage:
        self.prompts.append(list(messages))
        if len(self.script) == 1 and self.repeat_last:
            return self.script[0]
        return self.script.pop(0)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._next(messages))])

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        reply = self._next(messages)
        calls = [
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
            for i, c in enumerate(reply.tool_calls)
        ]
        calls += [
            tool_call_chunk(name=b.get("name"), args=b.get("args"), id=b.get("id"), index=len(calls) + i)
            for i, b in enumerate(reply.invalid_tool_calls)
        ]
        words = reply.text.split(" ") if reply.text else []
        for i, word in enumerate(words):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word if i == 0 else " " + word))
        if calls:
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=calls))


def call(name: str, call_id: str = "call_1", **args: Any) -> AIMessage:
    """A scripted reply that calls ``name`` with ``args``."""
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])
