"""Tool calls on a model server that has no tool calling of its own: agentmm's two constrained
steps (``agentmm.tool_calling``: which tool, then its arguments), each constrained by the
server's JSON-schema support instead of a local grammar.

llama-cpp-python's server answers ``tool_choice="auto"`` in plain text with a GGUF's own chat
template (its tool calling needs ``--chat_format chatml-function-calling``, which a 135M model
does not use: ``MODELS.md``), so an agent there would never call a tool. The steps ask two narrow
questions instead, each answer constrained to a JSON schema:

1. **decide**: the conversation (calls and results as text, the tools listed in the system
   message, as ``render_messages`` renders them), then ``decision_prompt``; the answer is
   ``{"tool": NAME}``, NAME one of the tools or ``none`` (greedy).
2. **call**: the conversation, then ``call_prompt``; the answer is constrained by the tool's own
   arguments schema.

The steps are a generator of ``Ask`` requests (``tool_call_steps``), run by ``run_steps`` around
the chat model's own request, so the steps know nothing of HTTP and the model nothing of them.

``RESPONSE_FORMATS`` are the two ways servers take a schema: OpenAI's ``json_schema`` (vLLM,
llama.cpp's server, Ollama, OpenAI) and ``json_object`` with a ``schema`` (llama-cpp-python's
server, llama.cpp's); ``ChatModelServer`` tries them in order and keeps the first one its server
accepts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, convert_to_messages
from langchain_core.messages.tool import ToolCallChunk, tool_call_chunk

from agentmm.tool_calling import (
    NO_TOOL,
    call_prompt,
    decision_prompt,
    last_user_text,
    new_call_id,
    pending_tools,
    render_messages,
    tool_name,
    tool_parameters,
)

MAX_CALL_TOKENS = 256
MAX_DECISION_TOKENS = 32  # {"tool": "a_long_tool_name"} with room to spare


def json_schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def json_object_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_object", "schema": schema}


RESPONSE_FORMATS: tuple[Callable[[dict[str, Any]], dict[str, Any]], ...] = (json_schema_format, json_object_format)


@dataclass(frozen=True)
class Ask:
    """One constrained question to the server: ``messages``, answered as JSON under ``schema``."""

    messages: list[BaseMessage]
    schema: dict[str, Any]
    max_tokens: int
    greedy: bool


@dataclass
class Decided:
    """What the steps found: the call (None: no tool) and the tool the decision named."""

    call: ToolCallChunk | None
    decision: str | None = None


Steps = Generator[Ask, str, Decided]


def decision_schema(choices: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"tool": {"type": "string", "enum": list(choices)}},
        "required": ["tool"],
        "additionalProperties": False,
    }


def text_only(messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]]) -> list[BaseMessage]:
    """The conversation as the steps show it: calls and results as text, the tools in the system
    message, pictures left out (a question about which tool needs none)."""
    rendered = []
    for message in render_messages(messages, tools):
        content = message.get("content")
        if isinstance(content, list):
            message = {**message, "content": "".join(p.get("text", "") for p in content if p.get("type") == "text")}
        rendered.append(message)
    return convert_to_messages(rendered)


def tool_call_steps(
    messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]], choice: str, *, max_tokens: int | None
) -> Steps:
    """The two steps, as requests for a driver to answer: which tool (unless ``choice`` names
    one), then its arguments. ``choice``: ``"auto"`` (maybe none; each tool once per user
    message, see ``pending_tools``), ``"any"`` (some tool) or a tool's name."""
    by_name = {tool_name(tool): tool for tool in tools}
    shown = text_only(messages, tools)
    said = last_user_text(messages)
    name = choice if choice in by_name else None
    decision = None
    if name is None:
        allow_none = choice == "auto"
        if allow_none:
            by_name = {tool_name(tool): tool for tool in pending_tools(messages, tools)}
            if not by_name:
                return Decided(None)
        choices = [*by_name, NO_TOOL] if allow_none else list(by_name)
        answer = yield Ask([*shown, HumanMessage(decision_prompt(said))], decision_schema(choices),
                           MAX_DECISION_TOKENS, greedy=True)  # fmt: skip
        decision = picked(answer, choices)
        name = decision if decision in by_name else None
        if name is None:
            return Decided(None, decision or NO_TOOL)
    tool = by_name[name]
    budget = min(max_tokens or MAX_CALL_TOKENS, MAX_CALL_TOKENS)
    arguments = yield Ask([*shown, HumanMessage(call_prompt(tool, said))], tool_parameters(tool), budget, greedy=False)
    return Decided(tool_call_chunk(name=name, args=arguments.strip(), id=new_call_id(), index=0), decision or name)


def picked(answer: str, choices: Sequence[str]) -> str | None:
    """The choice in a decision's JSON answer (a server that ignored the schema may answer a
    bare name: taken when it is one of the choices), None when there is none."""
    try:
        found = json.loads(answer)
    except ValueError:
        found = answer.strip().strip('"')
    if isinstance(found, dict):
        found = found.get("tool")
    return found if isinstance(found, str) and found in choices else None


def run_steps(steps: Steps, answer: Callable[[Ask], str]) -> Decided:
    """Run ``steps`` to the end, each request answered by ``answer``."""
    try:
        request = next(steps)
        while True:
            request = steps.send(answer(request))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
