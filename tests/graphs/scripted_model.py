"""A scripted chat model that calls tools: the graph's tool loop run without a real model.

langchain-core's fake chat models cannot bind tools or stream tool calls; this one replays
its script (each reply may carry tool calls or malformed ones) and records what it was bound
with and the prompts it saw. Like a real model's ``bind_tools`` it turns each tool into the
OpenAI function schema a model is shown, and refuses one that is not well formed, so a graph
test fails if a tool's schema is broken.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

# OpenAI's rule for function names, which llama.cpp's and most servers' tool calling follow.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ScriptedToolModel(BaseChatModel):
    script: list[AIMessage]
    repeat_last: bool = False
    prompts: list[list[BaseMessage]] = Field(default_factory=list)
    bindings: list[dict[str, Any]] = Field(default_factory=list)
    # The function schemas of each binding, as a model is shown them (``convert_to_openai_tool``).
    schemas: list[list[dict[str, Any]]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-tools"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Runnable:
        schemas = [convert_to_openai_tool(t) for t in tools]
        for schema in schemas:
            check_tool_schema(schema)
        self.bindings.append({"tools": [s["function"]["name"] for s in schemas], "tool_choice": tool_choice})
        self.schemas.append(schemas)
        return self.bind(tools=schemas, tool_choice=tool_choice, **kwargs)

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
        if reply.usage_metadata:  # last, as a real model reports it
            yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=reply.usage_metadata))
        if reply.response_metadata:  # the finish reason ("length": a call cut off), last too
            yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=reply.response_metadata))


def call(name: str, call_id: str = "call_1", **args: Any) -> AIMessage:
    """A scripted reply that calls ``name`` with ``args``."""
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])


class MalformedToolSchema(ValueError):
    """A tool whose schema a chat model could not be shown as it is."""


def check_tool_schema(schema: dict[str, Any]) -> None:
    """Raise ``MalformedToolSchema`` unless ``schema`` is a function a model can call: a valid
    name, a description, and parameters that are a JSON Schema object whose required
    arguments are among its properties."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    function = schema.get("function") or {}
    name = function.get("name")
    if schema.get("type") != "function" or not isinstance(name, str) or not TOOL_NAME.match(name):
        raise MalformedToolSchema(f"not a function with a valid name: {schema!r}")
    if not str(function.get("description") or "").strip():
        raise MalformedToolSchema(f"{name}: no description, so the model cannot know when to call it")
    parameters = function.get("parameters")
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        raise MalformedToolSchema(f"{name}: parameters are not a JSON Schema: {exc.message}") from exc
    if parameters.get("type") != "object" or not isinstance(parameters.get("properties", {}), dict):
        raise MalformedToolSchema(f"{name}: parameters must be an object schema, not {parameters!r}")
    missing = set(parameters.get("required", [])) - set(parameters.get("properties", {}))
    if missing:
        raise MalformedToolSchema(f"{name}: required arguments {sorted(missing)} are not among its properties")
