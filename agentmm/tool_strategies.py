"""How a reply calls tools, chosen per model: constrained two steps, or the model's own template.

- ``ConstrainedToolCalling``: the two grammar-constrained steps of ``agentmm.tool_calling``
  (which tool, then its arguments), calls and results written into the conversation as text
  any template renders. Made for small models that never call a tool when merely shown one;
  with it comes the bracket workaround (a reply stops at ``[calling `` / ``[name result:``, and
  one that was only that is written again with bracket tokens banned), which only a model
  imitating that text form needs.
- ``NativeToolCalling``: the model's own chat template renders the tools, the calls and the
  ``tool`` results (e.g. Qwen2.5's ``<tools>``, ``<tool_call>``, ``<tool_response>``); the
  model decides and writes a call in one free generation, which is parsed from its
  ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` blocks. A forced tool (a name as
  ``tool_choice``) is llama-cpp-python's own: the arguments constrained by the schema's grammar.

``tool_calling_for`` picks: ``"constrained"``, ``"native"``, or ``"auto"`` (see there for what
it picks and the measurement behind it, BENCHMARKS.md "Tool-calling strategies").
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any, Literal, Protocol

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage, convert_to_openai_messages
from langchain_core.messages.tool import ToolCallChunk, tool_call_chunk

from agentmm.errors import UnsupportedContentError
from agentmm.llama_generation import Generation
from agentmm.llama_images import llama_messages, with_image_parts, without_images
from agentmm.llama_runtime import LoadedModel, vocab_pieces
from agentmm.tool_calling import (
    NO_TOOL,
    arguments_call,
    arguments_grammar,
    call_prompt,
    decision_grammar,
    decision_prompt,
    last_user_text,
    new_call_id,
    pending_tools,
    reply_stops,
    tool_name,
    tool_parameters,
)

ToolCallingSetting = Literal["auto", "constrained", "native"]
MAX_CALL_TOKENS = 256
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"


class ToolCalling(Protocol):
    """A way of calling tools: how messages are rendered for the model, and how one reply
    (text or tool calls) is made from them."""

    name: str

    def render(self, messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]]) -> tuple[list[dict], int]:
        """The messages as llama-cpp-python takes them, and how many images they hold."""
        ...

    def reply(
        self, gen: Generation, messages: list[BaseMessage], rendered: list[dict[str, Any]], images: int,
        tools: list[dict[str, Any]], choice: str,
    ) -> Iterator[AIMessageChunk]:  # fmt: skip
        """Stream the reply: words, or the tool calls it makes."""
        ...


def template_supports_tools(loaded: LoadedModel, chat_format: str | None) -> bool:
    """Whether the model's own chat template renders tools (it reads a ``tools`` variable and
    shows a call's form). An explicit ``chat_format`` replaces the GGUF's template with one of
    llama-cpp-python's, which is not known to, so it counts as no."""
    template = loaded.chat_template
    return chat_format is None and "tools" in template and "tool_call" in template


def tool_calling_for(
    setting: ToolCallingSetting, loaded: LoadedModel, *, chat_format: str | None, constrain: bool = True
) -> ToolCalling:
    """The strategy for this model. ``"auto"``: native where the template supports tools,
    else constrained. Measured on Qwen2.5-Coder-0.5B (BENCHMARKS.md "Tool-calling
    strategies"), native chose the right tool (or none) more often, 22 vs 18 of 32, with right
    arguments 14 vs 12 of 24, where constrained never chose none; constrained stays for
    templates without tools, where it is what makes a small model call at all."""
    if setting == "native" or (setting == "auto" and template_supports_tools(loaded, chat_format)):
        return NativeToolCalling()
    if setting not in ("auto", "constrained", "native"):
        raise ValueError(f"tool_calling must be auto, constrained or native, not {setting!r}")
    return ConstrainedToolCalling(constrain=constrain)


class ConstrainedToolCalling:
    """Steps 1 and 2 of ``agentmm.tool_calling``, and the bracket workaround of its replies."""

    name = "constrained"

    # Arguments are the model's most likely ones, not sampled at the reply's temperature: on the
    # shipped 135M model 4 of 10 dice requests got the dice asked for this way, 1 of 10 at 0.8
    # ("98d20-314" for "roll 1d12"; BENCHMARKS.md, benchmarks/tools.py). Off only to measure it.
    greedy_arguments = True

    def __init__(self, *, constrain: bool = True) -> None:
        # Off only to measure what the grammars are worth (benchmarks/tools.py).
        self.constrain = constrain

    def render(self, messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]]) -> tuple[list[dict], int]:
        return llama_messages(messages, tools)

    def reply(
        self, gen: Generation, messages: list[BaseMessage], rendered: list[dict[str, Any]], images: int,
        tools: list[dict[str, Any]], choice: str,
    ) -> Iterator[AIMessageChunk]:  # fmt: skip
        gen.metadata["tool_calling"] = self.name
        call = None
        if tools and choice != "none":
            # The tool steps are text questions about the conversation: no pictures needed.
            text_only = without_images(rendered) if images else rendered
            call = self.call_tool(gen, messages, text_only, tools, choice)
        if call is not None:
            yield AIMessageChunk(content="", tool_call_chunks=[call])  # finish reason: call_tool's
            return
        stops = reply_stops(gen.params.get("stop"), tools) if tools else gen.params.get("stop")
        yield from gen.stream(rendered, images, stop=stops)
        if tools and not images and not gen.said:
            # It stopped at once: at a call or a result of its own making, or it ended (the 135M
            # model after a tool's error). Write the reply again with no token that opens a
            # bracket, and no end before a word (the prefix is cached).
            yield from gen.stream(rendered, 0, stop=stops, logit_bias=no_bracket_bias(gen.loaded), words_first=True)

    def call_tool(
        self, gen: Generation, messages: list[BaseMessage], rendered: list[dict[str, Any]],
        tools: list[dict[str, Any]], choice: str,
    ) -> ToolCallChunk | None:  # fmt: skip
        """Which tool, then its arguments: the call, or None when the model decides no tool
        is needed."""
        by_name = {tool_name(t): t for t in tools}
        name = choice if choice in by_name else None
        if name is None:
            allow_none = choice == "auto"
            if allow_none:
                tools = pending_tools(messages, tools)
                if not tools:
                    return None
                by_name = {tool_name(t): t for t in tools}
            question = {"role": "user", "content": decision_prompt(last_user_text(messages))}
            choices = [*by_name, NO_TOOL] if allow_none else list(by_name)
            if self.constrain:
                answer = self.choose(gen, [*rendered, question], choices)
            else:
                answer = gen.complete([*rendered, question], max_tokens=16, greedy=True)
            name = next((n for n in by_name if n == answer.strip() or n in answer), None)
            gen.metadata["tool_decision"] = name or NO_TOOL
            if name is None:
                return None
        tool = by_name[name]
        request = {"role": "user", "content": call_prompt(tool, last_user_text(messages))}
        grammar = grammar_for(json.dumps(tool_parameters(tool), sort_keys=True)) if self.constrain else None
        # The arguments have a budget of their own, not the reply's max_tokens: a reply kept to
        # a few words (--max-tokens 5) cut every call short.
        arguments = gen.complete([*rendered, request], grammar, max_tokens=MAX_CALL_TOKENS,
                                 greedy=self.greedy_arguments)  # fmt: skip
        if not self.constrain:
            gen.finish_reason = "tool_calls"
            return tool_call_chunk(name=name, args=arguments.strip(), id=new_call_id(), index=0)
        call, cut = arguments_call(name, arguments)
        # Ran out of tokens (the budget, or the context's end): said by the reply's finish
        # reason, which the tools node gives as why the call is malformed.
        gen.finish_reason = "length" if cut else "tool_calls"
        return call

    @staticmethod
    def choose(gen: Generation, messages: list[dict[str, Any]], choices: list[str]) -> str:
        """The model's greedy pick among ``choices``, as a grammar allowing only them would
        give, but cheaper: a GBNF grammar is checked against all ~49k tokens at every step
        (~70 ms a token here), while raising the logits of the choices' first tokens by the
        same amount keeps their order and puts them above every other token. The raised tokens
        are every token that can begin a choice (as the grammar allows), so the first step is
        the grammar's own. One token decides, unless choices share it; then the grammar
        finishes the pick among those.
        """
        piece = gen.complete(messages, max_tokens=1, greedy=True, logit_bias=start_bias(gen.loaded, choices))
        matches = [name for name in choices if piece and name.startswith(piece)]
        if len(matches) == 1:
            return matches[0]
        return gen.complete(
            messages, decision_grammar(matches or choices, allow_none=False), max_tokens=16, greedy=True
        )


class NativeToolCalling:
    """The model's own chat template calls tools; its ``<tool_call>`` blocks are parsed.

    ``tool_choice="any"`` (some tool, the model's pick) has no form in a chat template: it
    goes through the constrained steps' decision and call, rendered as this strategy renders.
    """

    name = "native"

    def render(self, messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]]) -> tuple[list[dict], int]:
        try:
            rendered = [_native_message(message) for message in messages]
        except ValueError as exc:  # langchain-core's converter: e.g. an image given by file id
            raise UnsupportedContentError(f"the chat model cannot take this message content: {exc}") from exc
        return with_image_parts(rendered)

    def reply(
        self, gen: Generation, messages: list[BaseMessage], rendered: list[dict[str, Any]], images: int,
        tools: list[dict[str, Any]], choice: str,
    ) -> Iterator[AIMessageChunk]:  # fmt: skip
        gen.metadata["tool_calling"] = self.name
        if not tools:
            yield from gen.stream(rendered, images)
            return
        if choice == "none" and not images:
            # The tools stay in the prompt as on the turns that may call them (the template puts
            # them at its head: dropping them would change the prefix, and the next turn with
            # tools would prefill the whole prompt again); the call itself is kept out.
            yield from gen.stream(rendered, 0, tools=tools, tool_choice="none", stop=_with(gen.params.get("stop"),
                                  CALL_OPEN), logit_bias=no_call_bias(gen.loaded))  # fmt: skip
            return
        if choice == "none" or (images and choice == "auto"):
            # The multimodal handler renders no tools, and here the call and the reply are one
            # generation: a message with pictures is answered in words, seeing them.
            yield from gen.stream(rendered, images)
            return
        if images:  # a call is required: made on the text
            rendered = without_images(rendered)
        if choice == "any":
            call = ConstrainedToolCalling().call_tool(gen, messages, rendered, tools, choice)
            if call is not None:
                yield AIMessageChunk(content="", tool_call_chunks=[call])  # finish reason: call_tool's
            return
        if choice != "auto":  # one named tool: llama-cpp-python constrains its arguments
            # Held to the end (a call is not shown as it comes), its budget its own as in
            # call_tool; llama-cpp-python's stream of a forced call never says it was cut, so
            # the arguments' JSON does.
            forced = {"type": "function", "function": {"name": choice}}
            streamed = gen.stream(rendered, 0, tools=tools, tool_choice=forced, max_tokens=MAX_CALL_TOKENS)
            arguments = "".join(c.get("args") or "" for chunk in streamed for c in chunk.tool_call_chunks)
            call, cut = arguments_call(choice, arguments)
            gen.finish_reason = "length" if cut else "tool_calls"
            yield AIMessageChunk(content="", tool_call_chunks=[call])
            return
        scanner = CallScanner()
        for chunk in gen.stream(rendered, 0, tools=tools, tool_choice="auto"):
            text = scanner.feed(chunk.text)
            if text:
                yield AIMessageChunk(content=text)
        rest, calls = scanner.finish()
        if rest:
            yield AIMessageChunk(content=rest)
        if calls:
            gen.finish_reason = "tool_calls"
            yield AIMessageChunk(content="", tool_call_chunks=calls)


class CallScanner:
    """Splits a streamed reply into its words and the calls it makes.

    A call is a ``<tool_call>`` block, as the template asks; words before the first one are
    passed on as they come, less a tail that may be the start of the tag. Small models also
    answer with the call's JSON alone, bare or in a code fence (Qwen2.5-Coder-0.5B: most of its
    calls), so a reply that *begins* like that is held to its end and read as a call when it is
    one (``{"name": ..., "arguments": ...}``), else given back as words.
    """

    def __init__(self) -> None:
        self.held = ""
        self.calling = False  # a <tool_call> tag was seen
        self.bare = False  # the reply began like a JSON object or a code fence
        self.started = False  # words have been passed on

    def feed(self, text: str) -> str:
        """The words that can be shown now."""
        self.held += text
        if self.calling or self.bare:
            return ""
        if not self.started:
            lead = self.held.lstrip()
            if not lead:
                return ""
            if lead.startswith(("{", "```")) or "```".startswith(lead):
                self.bare = True
                return ""
            self.started = True
        at = self.held.find(CALL_OPEN)
        if at >= 0:
            self.calling = True
            out, self.held = self.held[:at], self.held[at:]
            return out
        keep = next((n for n in range(min(len(CALL_OPEN) - 1, len(self.held)), 0, -1)
                     if CALL_OPEN.startswith(self.held[-n:])), 0)  # fmt: skip
        out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return out

    def finish(self) -> tuple[str, list[ToolCallChunk]]:
        """The words still held, and the calls the reply made."""
        if self.bare and CALL_OPEN not in self.held:
            call = bare_call(self.held)
            return ("", [call]) if call is not None else (self.held, [])
        if not (self.calling or self.bare):
            return self.held, []
        words, _, calls_text = self.held.partition(CALL_OPEN)  # words: only a fence's opening when bare
        blocks = calls_text.split(CALL_OPEN)
        calls = [parse_call(block.split(CALL_CLOSE)[0].strip(), i) for i, block in enumerate(blocks)]
        return ("" if self.bare else words), calls


def bare_call(text: str) -> ToolCallChunk | None:
    """A reply that is only a call's JSON object (maybe in a code fence), as a call; else None."""
    body = text.strip()
    if body.startswith("```"):
        body = body[3:].removesuffix("```").strip()
        first, _, rest = body.partition("\n")
        if first.strip().isalpha():  # the fence's language tag
            body = rest
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("name"), str) and ({"arguments", "parameters"} & data.keys()):
        return parse_call(json.dumps(data), 0)
    return None


def parse_call(body: str, index: int) -> ToolCallChunk:
    """One ``<tool_call>`` block as a call chunk. What is not a call stays one, with no name
    and its text as a JSON string for arguments (LangChain would read a broken object
    leniently, as ``{}``), so LangChain reports it as an invalid call instead of words."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return tool_call_chunk(name=None, args=json.dumps(body), id=new_call_id(), index=index)
    arguments = data.get("arguments", data.get("parameters", {}))
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return tool_call_chunk(name=data["name"], args=args, id=new_call_id(), index=index)


def _native_message(message: BaseMessage) -> dict[str, Any]:
    """One message as an OpenAI-style dict the model's template renders natively: an
    assistant's calls with their arguments as objects (templates ``tojson`` them), a tool's
    result as a ``tool`` message of plain text."""
    if isinstance(message, ToolMessage):
        return {"role": "tool", "tool_call_id": message.tool_call_id, "name": message.name, "content": message.text}
    if isinstance(message, AIMessage) and (message.tool_calls or message.invalid_tool_calls):
        calls = [
            {"id": c.get("id") or new_call_id(), "type": "function",
             "function": {"name": c["name"], "arguments": c["args"]}}
            for c in message.tool_calls
        ]  # fmt: skip
        calls += [
            {"id": c.get("id") or new_call_id(), "type": "function",
             "function": {"name": c.get("name") or "tool", "arguments": c.get("args") or ""}}
            for c in message.invalid_tool_calls
        ]  # fmt: skip
        return {"role": "assistant", "content": message.text, "tool_calls": calls}
    return convert_to_openai_messages([message])[0]  # type: ignore[index]


@lru_cache(maxsize=64)
def grammar_for(parameters_json: str) -> str:
    """The arguments grammar of a tool's parameter schema (a pure function, memoised)."""
    return arguments_grammar({"function": {"parameters": json.loads(parameters_json)}})


def start_bias(loaded: LoadedModel, choices: Sequence[str]) -> dict[int, float]:
    """+100 for every token that can begin one of ``choices`` (cached per model and choices)."""
    key = tuple(choices)
    bias = loaded.start_bias.get(key)
    if bias is None:
        wanted = [name.encode() for name in choices]
        starts = [
            i for i, piece in enumerate(vocab_pieces(loaded)) if piece and any(w.startswith(piece) for w in wanted)
        ]
        bias = loaded.start_bias[key] = dict.fromkeys(starts, 100.0)
    return bias


def no_call_bias(loaded: LoadedModel) -> dict[int, float]:
    """-100 for the token that opens a native tool call (``<tool_call>``), where the vocabulary
    has one (cached per model)."""
    if loaded.no_call_bias is None:
        opening = [i for i, piece in enumerate(vocab_pieces(loaded)) if piece == CALL_OPEN.encode()]
        loaded.no_call_bias = dict.fromkeys(opening, -100.0)
    return loaded.no_call_bias


def _with(stops: Any, stop: str) -> list[str]:
    """``stops`` (None, one string or a list) with ``stop`` added."""
    given = [stops] if isinstance(stops, str) else list(stops or [])
    return given if stop in given else [*given, stop]


def no_bracket_bias(loaded: LoadedModel) -> dict[int, float]:
    """-100 for every token whose text opens a bracket (cached per model)."""
    if loaded.no_bracket_bias is None:
        opening = [i for i, piece in enumerate(vocab_pieces(loaded)) if piece.lstrip().startswith(b"[")]
        loaded.no_bracket_bias = dict.fromkeys(opening, -100.0)
    return loaded.no_bracket_bias
