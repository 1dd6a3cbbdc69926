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

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, convert_to_messages
from langchain_core.messages.tool import ToolCallChunk

from agentmm.errors import ModelServerError
from agentmm.llama_images import without_images
from agentmm.tool_calling import (
    NO_TOOL,
    arguments_call,
    call_prompt,
    decision_prompt,
    last_user_text,
    pending_tools,
    render_messages,
    reply_stops,
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
    return convert_to_messages(without_images(render_messages(messages, tools)))


def tool_call_steps(messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]], choice: str) -> Steps:
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
    # The arguments' budget is their own, not the reply's max_tokens (which cut every call of a
    # short reply); arguments that are still no whole object (cut, or a server that ignored the
    # schema) make an invalid call, never run (agentmm.tool_calling.arguments_call).
    arguments = yield Ask([*shown, HumanMessage(call_prompt(tool, said))], tool_parameters(tool), MAX_CALL_TOKENS,
                          greedy=False)  # fmt: skip
    return Decided(arguments_call(name, arguments)[0], decision or name)


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


def no_schema_support(model_url: str) -> str:
    return (
        f"the model server at {model_url} took no JSON-schema response_format, which the constrained tool "
        "calls need: set tool_calling = 'native' if the server calls tools itself"
    )


def _format_refused(exc: BaseException) -> bool:
    """Whether the server refused the request's ``response_format`` (400 or 422; llama-cpp-python's
    server answers its validation error with 500 naming the field), so another form may do."""
    import openai

    if not isinstance(exc, openai.APIStatusError):
        return False
    return exc.status_code in (400, 422) or (exc.status_code == 500 and "response_format" in str(exc.message))


def _no_usage() -> dict[str, int]:
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}


def _answer_text(response: Any, usage: dict[str, int]) -> str:
    """A non-streamed completion's text; its token counts added to ``usage``."""
    counted = getattr(response, "usage", None)
    if counted is not None:
        usage["input_tokens"] += int(counted.prompt_tokens or 0)
        usage["output_tokens"] += int(counted.completion_tokens or 0)
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    return str(response.choices[0].message.content or "")


def _call_chunk(decided: Decided, usage: dict[str, int]) -> Any:
    """The reply that is a tool call, as the one chunk of its stream."""
    from langchain_core.messages import AIMessageChunk
    from langchain_core.outputs import ChatGenerationChunk

    metadata = {"finish_reason": "tool_calls", "tool_calling": "constrained", "tool_decision": decided.decision}
    message = AIMessageChunk(content="", tool_call_chunks=[decided.call], usage_metadata=usage,  # type: ignore[arg-type,list-item]
                             response_metadata=metadata, chunk_position="last")  # fmt: skip
    return ChatGenerationChunk(message=message, generation_info={"finish_reason": "tool_calls"})


def _decision_chunk(decided: Decided, usage: dict[str, int]) -> Any:
    """The head of a text reply the constrained steps decided on: what the decision cost and said."""
    from langchain_core.messages import AIMessageChunk
    from langchain_core.outputs import ChatGenerationChunk

    metadata = {"tool_calling": "constrained", "tool_decision": decided.decision}
    return ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=usage, response_metadata=metadata))  # type: ignore[arg-type]


def _text_reply(messages: list[Any], tools: list[dict[str, Any]], stop: list[str] | None) -> tuple[list[Any], Any]:
    """A text reply's messages when tools are bound (earlier calls and results as text, the tools
    listed in the system message, as the steps saw them; pictures kept) and its stop sequences
    (the start of a call or a result: only the steps call tools)."""
    if not tools:
        return messages, stop
    return convert_to_messages(render_messages(messages, tools)), reply_stops(stop, tools)


class ServerToolCalling:
    """The tool-calling half of ``model_server.ChatModelServer`` (a mixin before ``ChatOpenAI``):
    ``bind_tools`` keeps agentmm's form and ``ChatOpenAI``'s side by side, and each request takes
    one by ``tool_strategy()``. It reads the model's ``tool_calling``, ``_tokenizer``, ``_format``,
    ``client`` and error helpers, which ``ChatModelServer`` defines."""

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        """Bind tools; how they are called is decided per request (``tool_strategy``). The
        native form is ``ChatOpenAI``'s own binding, kept beside agentmm's."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        from agentmm.tool_calling import normalized_choice, tool_name

        formatted = [convert_to_openai_tool(tool) for tool in tools]
        choice = normalized_choice(tool_choice, [tool_name(tool) for tool in formatted])
        native = super().bind_tools(formatted, tool_choice=tool_choice, **kwargs).kwargs  # type: ignore[attr-defined]
        return self.bind(agentmm_tools=formatted, agentmm_tool_choice=choice, agentmm_native=native)

    def tool_strategy(self) -> str:
        """``"native"`` or ``"constrained"``: ``tool_calling``, with ``"auto"`` decided by the
        server's kind (the tokenize endpoint it has, found once)."""
        if self.tool_calling != "auto":
            return self.tool_calling
        return "constrained" if self._server_kind() == "llama-cpp-python" else "native"

    def _server_kind(self) -> str | None:
        endpoint = self._error_free(lambda: self._tokenizer.endpoint)
        return endpoint.server if endpoint is not None else None

    def _tools_of(self, kwargs: dict[str, Any]) -> tuple[list[dict[str, Any]], str] | None:
        """The bound tools and choice when they are to be called by the constrained steps
        (taken out of ``kwargs``); None otherwise, ``kwargs`` then carrying the native form."""
        tools = kwargs.pop("agentmm_tools", None)
        choice = kwargs.pop("agentmm_tool_choice", "auto")
        native = kwargs.pop("agentmm_native", {})
        if tools is None:
            return None
        if self.tool_strategy() == "native":
            kwargs.update(native)
            return None
        return tools, choice

    async def _atools_of(self, kwargs: dict[str, Any]) -> tuple[list[dict[str, Any]], str] | None:
        """``_tools_of`` for an event loop: off the loop only when tools are bound (deciding the
        strategy may ask the server once); a turn without tools pays no thread hop."""
        if "agentmm_tools" not in kwargs:
            return None
        return await asyncio.to_thread(self._tools_of, kwargs)

    def _ask_payload(self, ask: Ask) -> dict[str, Any]:
        greedy = {"temperature": 0.0} if ask.greedy else {}
        payload = self._get_request_payload(ask.messages, stop=None, max_tokens=ask.max_tokens, **greedy)
        payload.pop("stream", None)
        payload.pop("stream_options", None)
        return payload

    def _formats(self) -> list[int]:
        """The response formats to try, the one that worked first; llama-cpp-python's server
        (which refuses OpenAI's ``json_schema`` with HTTP 422) starts with its own."""
        if self._format is not None:
            return [self._format]
        order = list(range(len(RESPONSE_FORMATS)))
        return order[::-1] if self._server_kind() == "llama-cpp-python" else order

    def _answer(self, ask: Ask, usage: dict[str, int]) -> str:
        """One constrained answer (not streamed); its tokens added to ``usage``."""
        payload = self._ask_payload(ask)
        for index in self._formats():
            payload["response_format"] = RESPONSE_FORMATS[index](ask.schema)
            try:
                response = self.client.create(**payload)
            except Exception as exc:
                if self._format is None and _format_refused(exc):
                    continue
                self._raise_typed(exc)
            self._format = index
            return _answer_text(response, usage)
        raise ModelServerError(no_schema_support(str(self.openai_api_base)))

    def _decide(self, messages: list[Any], found: tuple[list[dict[str, Any]], str],
                stop: list[str] | None) -> tuple[Any, list[Any] | None, Any]:  # fmt: skip
        """The constrained steps' outcome: the reply's head chunk (the tool call, or what the
        decision cost and said), then the text reply's messages and stop sequences (None
        when the head is the call). Blocking: the async stream runs it in a thread."""
        tools, choice = found
        usage = _no_usage()
        decided = Decided(None)
        if tools and choice != "none":
            steps = tool_call_steps(messages, tools, choice)
            decided = run_steps(steps, lambda ask: self._answer(ask, usage))
        if decided.call is not None:
            return _call_chunk(decided, usage), None, None
        reply, stops = _text_reply(messages, tools, stop)
        return _decision_chunk(decided, usage), reply, stops

    def _constrained_stream(self, messages: list[Any], found: tuple[list[dict[str, Any]], str],
                            stop: list[str] | None, run_manager: Any,
                            kwargs: dict[str, Any]) -> Iterator[Any]:  # fmt: skip
        head, reply, stops = self._decide(messages, found, stop)
        yield head
        if reply is not None:
            yield from self._stream(reply, stop=stops, run_manager=run_manager, **kwargs)

    async def _aconstrained_stream(self, messages: list[Any], found: tuple[list[dict[str, Any]], str],
                                   stop: list[str] | None, run_manager: Any,
                                   kwargs: dict[str, Any]) -> AsyncIterator[Any]:  # fmt: skip
        head, reply, stops = await asyncio.to_thread(self._decide, messages, found, stop)
        yield head
        if reply is not None:
            async for chunk in self._astream(reply, stop=stops, run_manager=run_manager, **kwargs):
                yield chunk
