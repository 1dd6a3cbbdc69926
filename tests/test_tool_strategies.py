"""Tool-calling strategies (agentmm/tool_strategies.py): which one a model gets, how the native
one renders a conversation and reads the model's ``<tool_call>`` blocks, and that the bracket
workaround belongs to the constrained one only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from agentmm.llm import ChatLlamaCpp
from agentmm.tool_calling import CALL_MARK
from agentmm.tool_strategies import (
    CallScanner,
    ConstrainedToolCalling,
    NativeToolCalling,
    parse_call,
    template_supports_tools,
    tool_calling_for,
)
from agentmm.tools.builtin import roll_dice

QWEN_LIKE = "{%- if tools %}<tools>{{ tools }}</tools> <tool_call>{%- endif %}{{ messages }}"
DICE = convert_to_openai_tool(roll_dice)


def fake_loaded(template: str) -> Any:
    return SimpleNamespace(chat_template=template)


def test_auto_picks_native_only_where_the_template_renders_tools() -> None:
    assert isinstance(tool_calling_for("auto", fake_loaded(QWEN_LIKE), chat_format=None), NativeToolCalling)
    assert isinstance(tool_calling_for("auto", fake_loaded("{{ messages }}"), chat_format=None), ConstrainedToolCalling)
    # an explicit chat_format replaces the GGUF's template: not known to render tools
    assert not template_supports_tools(fake_loaded(QWEN_LIKE), "chatml")
    assert isinstance(tool_calling_for("native", fake_loaded(""), chat_format=None), NativeToolCalling)
    assert isinstance(tool_calling_for("constrained", fake_loaded(QWEN_LIKE), chat_format=None), ConstrainedToolCalling)
    with pytest.raises(ValueError, match="tool_calling"):
        tool_calling_for("grammar", fake_loaded(""), chat_format=None)  # type: ignore[arg-type]


@pytest.mark.e2e
def test_the_shipped_small_model_gets_the_constrained_strategy(shipped_model: Path) -> None:
    model = ChatLlamaCpp(model_path=str(shipped_model), n_ctx=2048)
    assert model.tool_strategy().name == "constrained"


def test_scanner_passes_words_and_holds_back_a_possible_tag() -> None:
    scanner = CallScanner()
    shown = [scanner.feed(piece) for piece in ["Rolling", " now <", "tool_", "call>\n", '{"name": "roll_dice", ']]
    shown.append(scanner.feed('"arguments": {"dice": "2d6"}}\n</tool_call>'))
    assert "".join(shown) == "Rolling now "
    assert shown[1] == " now "  # '<' might open the tag: held
    rest, calls = scanner.finish()
    assert rest == ""
    assert [(c["name"], json.loads(c["args"] or "")) for c in calls] == [("roll_dice", {"dice": "2d6"})]


def test_scanner_gives_back_a_held_tail_that_was_no_tag() -> None:
    scanner = CallScanner()
    assert scanner.feed("a < b") == "a < b"  # '< b' cannot begin the tag
    assert scanner.feed(" <to") == " "
    assert scanner.feed("y box") == "<toy box"
    assert scanner.finish() == ("", [])


def test_a_block_that_is_not_a_call_becomes_an_invalid_call() -> None:
    chunk = parse_call("{not json", 0)
    message = AIMessageChunk(content="", tool_call_chunks=[chunk])
    assert not message.tool_calls and message.invalid_tool_calls


def test_native_render_keeps_calls_and_results_for_the_template() -> None:
    messages = [
        SystemMessage("You are a game master."),
        HumanMessage("Roll 2d6."),
        AIMessage("", tool_calls=[{"name": "roll_dice", "args": {"dice": "2d6"}, "id": "c1"}]),
        ToolMessage("7", name="roll_dice", tool_call_id="c1"),
    ]
    rendered, images = NativeToolCalling().render(messages, [DICE])
    assert images == 0
    assert rendered[0] == {"role": "system", "content": "You are a game master."}  # no tools section: the template's
    call = rendered[2]["tool_calls"][0]
    assert call["function"] == {"name": "roll_dice", "arguments": {"dice": "2d6"}}  # an object: templates tojson it
    assert rendered[3] == {"role": "tool", "tool_call_id": "c1", "name": "roll_dice", "content": "7"}
    constrained, _ = ConstrainedToolCalling().render(messages, [DICE])
    assert constrained[2]["content"].startswith(CALL_MARK)  # the constrained form: calls as text


class FakeGeneration:
    """Streams canned replies and records each stream's extra parameters."""

    def __init__(self, *replies: list[str]) -> None:
        self.replies = list(replies)
        self.calls: list[dict[str, Any]] = []
        self.images: list[int] = []
        self.params: dict[str, Any] = {"stop": None, "max_tokens": 64}
        self.metadata: dict[str, Any] = {}
        self.finish_reason: str | None = None
        self.said = False
        self.loaded = SimpleNamespace(no_bracket_bias={7: -100.0}, no_call_bias={9: -100.0}, pieces=None)

    def stream(self, rendered: list[dict[str, Any]], images: int = 0, **extra: Any) -> Iterator[AIMessageChunk]:
        self.calls.append(extra)
        self.images.append(images)
        pieces = self.replies.pop(0)
        self.said = any(p.strip() for p in pieces)
        self.finish_reason = "stop"
        for piece in pieces:
            yield AIMessageChunk(content=piece)


def joined(chunks: Iterator[AIMessageChunk]) -> AIMessageChunk:
    out = AIMessageChunk(content="")
    for chunk in chunks:
        out += chunk
    return out


def test_native_reply_reads_the_call_and_shows_the_template_the_tools() -> None:
    gen = FakeGeneration(["<tool", '_call>\n{"name": "roll_dice", "arguments": {"dice": "1d20"}}\n</tool_call>'])
    messages = [HumanMessage("Roll a d20.")]
    rendered, _ = NativeToolCalling().render(messages, [DICE])
    reply = joined(NativeToolCalling().reply(gen, messages, rendered, 0, [DICE], "auto"))  # type: ignore[arg-type]
    assert reply.text == ""
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("roll_dice", {"dice": "1d20"})]
    assert gen.finish_reason == "tool_calls"
    assert gen.calls[0]["tools"] == [DICE] and "stop" not in gen.calls[0]  # no bracket stops


def test_native_reply_in_words_has_no_bracket_workaround() -> None:
    gen = FakeGeneration(["[roll_dice result: 7]"])
    messages = [HumanMessage("Hello.")]
    reply = joined(NativeToolCalling().reply(gen, messages, [], 0, [DICE], "auto"))  # type: ignore[arg-type]
    assert reply.text == "[roll_dice result: 7]" and not reply.tool_calls
    assert len(gen.calls) == 1 and "logit_bias" not in gen.calls[0]


def test_constrained_reply_stops_at_brackets_and_retries_without_them() -> None:
    gen = FakeGeneration([""], ["The die shows 7."])
    messages = [HumanMessage("What did I roll?"), AIMessage("x"), ToolMessage("7", name="roll_dice", tool_call_id="c")]
    strategy = ConstrainedToolCalling()
    reply = joined(strategy.reply(gen, messages, [], 0, [DICE], "none"))  # type: ignore[arg-type]
    assert reply.text == "The die shows 7."
    assert CALL_MARK in gen.calls[0]["stop"]
    # A made-up result is cut with or without its bracket ("- find_photos result: 1. /photos/...").
    assert {"[roll_dice result:", "roll_dice result:"} <= set(gen.calls[0]["stop"])
    assert gen.calls[1]["logit_bias"] == {7: -100.0}
    assert gen.calls[1]["words_first"] is True  # the 135M model after a tool's error ended again at once


@pytest.mark.parametrize(
    "reply",
    [
        '{"name": "roll_dice", "arguments": {"notation": "2d6"}}',
        '```json\n{\n  "name": "roll_dice",\n  "arguments": {\n    "notation": "2d6"\n  }\n}\n```',
        '\n<tool_call>\n{"name": "roll_dice", "arguments": {"notation": "2d6"}}\n</tool_call>',
    ],
)
def test_a_reply_that_is_only_the_call_is_read_as_the_call(reply: str) -> None:
    scanner = CallScanner()
    shown = "".join(scanner.feed(reply[i : i + 3]) for i in range(0, len(reply), 3))
    rest, calls = scanner.finish()
    assert shown.strip() == "" and rest == ""
    assert [(c["name"], json.loads(c["args"] or "")) for c in calls] == [("roll_dice", {"notation": "2d6"})]


def test_a_reply_that_begins_like_json_but_is_no_call_is_given_back_as_words() -> None:
    scanner = CallScanner()
    assert scanner.feed('{"mood": "grim"} says the sign.') == ""
    assert scanner.finish() == ('{"mood": "grim"} says the sign.', [])


class ArgumentsGeneration(FakeGeneration):
    """A model writing ``arguments`` for a call, two characters a token, cut at ``max_tokens``
    as llama.cpp cuts it."""

    def __init__(self, arguments: str, max_tokens: int) -> None:
        super().__init__()
        self.arguments = arguments
        self.params["max_tokens"] = max_tokens
        self.budgets: list[int] = []

    def complete(self, messages: list[dict[str, Any]], grammar: str | None = None, *, max_tokens: int,
                 greedy: bool = False, **extra: Any) -> str:  # fmt: skip
        self.budgets.append(max_tokens)
        return self.arguments[: 2 * max_tokens]

    def stream(self, rendered: list[dict[str, Any]], images: int = 0, **extra: Any) -> Iterator[AIMessageChunk]:
        """A forced native call: the arguments in pieces, cut at ``max_tokens`` (the reply's
        unless the call gives its own)."""
        self.calls.append(extra)
        text = self.arguments[: 2 * extra.get("max_tokens", self.params["max_tokens"])]
        for at in range(0, len(text), 4):
            piece = text[at : at + 4]
            yield AIMessageChunk(content="", tool_call_chunks=[{"name": "roll_dice" if at == 0 else None,
                                 "args": piece, "id": "c1" if at == 0 else None, "index": 0}])  # fmt: skip
        self.finish_reason = "tool_calls"  # as llama-cpp-python says, cut or not


@pytest.mark.parametrize("strategy", [ConstrainedToolCalling(), NativeToolCalling()], ids=["constrained", "native"])
def test_a_short_reply_budget_does_not_cut_the_call(strategy: Any) -> None:
    """--max-tokens 5 cut the arguments at 5 tokens, '{"notati', which LangChain read as {} and
    the tool ran with: the arguments have a budget of their own."""
    gen = ArgumentsGeneration('{"notation": "2d6"}', max_tokens=5)
    reply = joined(strategy.reply(gen, [HumanMessage("Roll 2d6.")], [], 0, [DICE], "roll_dice"))
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("roll_dice", {"notation": "2d6"})]
    assert gen.finish_reason == "tool_calls"


@pytest.mark.parametrize("strategy", [ConstrainedToolCalling(), NativeToolCalling()], ids=["constrained", "native"])
def test_a_call_cut_off_by_its_budget_is_invalid_and_says_so(strategy: Any) -> None:
    """A call longer than its budget is an invalid call (the tools node answers it ``malformed``,
    never runs it) and the reply's finish reason is ``length``; LangChain completed the broken
    object leniently, and the tool ran with arguments the model never finished."""
    arguments = '{"notation": "' + "1d6+" * 200 + '1"}'
    gen = ArgumentsGeneration(arguments, max_tokens=512)
    reply = joined(strategy.reply(gen, [HumanMessage("Roll.")], [], 0, [DICE], "roll_dice"))
    assert reply.tool_calls == []
    (bad,) = reply.invalid_tool_calls
    assert bad["name"] == "roll_dice" and arguments.startswith(json.loads(bad["args"] or ""))
    assert gen.finish_reason == "length"


def test_native_reply_to_pictures_sees_them_instead_of_calling() -> None:
    gen = FakeGeneration(["A red door."])
    picture = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    rendered = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, picture]}]
    reply = joined(NativeToolCalling().reply(gen, [HumanMessage("What is this?")], rendered, 1, [DICE], "auto"))  # type: ignore[arg-type]
    assert reply.text == "A red door."
    assert gen.calls == [{}] and gen.images == [1]  # the images went to the stream, no tools


def test_native_reply_without_a_call_keeps_the_tools_in_the_prompt() -> None:
    """tool_choice="none" (an intent that is no tool's, or the last round): the template still
    renders the tools, so the prompt's prefix (and the KV cache) is that of the turns that may
    call them; the call token is banned and stops the reply if it comes anyway."""
    gen = FakeGeneration(["Evening."])
    reply = joined(NativeToolCalling().reply(gen, [HumanMessage("Hi.")], [], 0, [DICE], "none"))  # type: ignore[arg-type]
    assert reply.text == "Evening." and not reply.tool_calls
    (call,) = gen.calls
    assert call["tools"] == [DICE] and call["tool_choice"] == "none"
    assert call["logit_bias"] == {9: -100.0} and call["stop"] == ["<tool_call>"]
