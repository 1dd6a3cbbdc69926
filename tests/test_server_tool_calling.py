"""The constrained steps for a model server, driven by scripted answers (no server): what they
ask, under which schema, and what they make of the answers."""

from __future__ import annotations

import json

from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from agentmm.server_tool_calling import Ask, decision_schema, picked, run_steps, tool_call_steps
from agentmm.tools.builtin import calculate, roll_dice

TOOLS = [convert_to_openai_tool(t) for t in (roll_dice, calculate)]
CHAT = [SystemMessage("You are a game master."), HumanMessage("Roll 2d6 for my attack.")]


def scripted(*answers: str) -> tuple[list[Ask], object]:
    asked: list[Ask] = []
    replies = iter(answers)

    def answer(ask: Ask) -> str:
        asked.append(ask)
        return next(replies)

    return asked, answer


def test_auto_decides_then_calls_with_the_tools_own_schema() -> None:
    asked, answer = scripted('{"tool": "roll_dice"}', '{"notation": "2d6"}')
    decided = run_steps(tool_call_steps(CHAT, TOOLS, "auto"), answer)  # type: ignore[arg-type]
    assert decided.call is not None and decided.decision == "roll_dice"
    assert decided.call["name"] == "roll_dice" and json.loads(decided.call["args"]) == {"notation": "2d6"}
    decide, call = asked
    assert decide.schema == decision_schema(["roll_dice", "calculate", "none"]) and decide.greedy
    assert call.schema == TOOLS[0]["function"]["parameters"] and call.max_tokens == 256 and not call.greedy
    # Both questions follow the conversation, the tools listed in its system message.
    assert "roll_dice" in decide.messages[0].text and decide.messages[1].text == CHAT[1].text


def test_none_means_a_text_reply() -> None:
    asked, answer = scripted('{"tool": "none"}')
    decided = run_steps(tool_call_steps(CHAT, TOOLS, "auto"), answer)  # type: ignore[arg-type]
    assert decided.call is None and decided.decision == "none" and len(asked) == 1


def test_a_named_tool_is_not_decided_and_any_offers_no_none() -> None:
    asked, answer = scripted('{"expression": "2+2"}')
    decided = run_steps(tool_call_steps(CHAT, TOOLS, "calculate"), answer)  # type: ignore[arg-type]
    assert decided.call is not None and decided.call["name"] == "calculate" and len(asked) == 1
    asked, answer = scripted('{"tool": "calculate"}', '{"expression": "1"}')
    run_steps(tool_call_steps(CHAT, TOOLS, "any"), answer)  # type: ignore[arg-type]
    assert asked[0].schema["properties"]["tool"]["enum"] == ["roll_dice", "calculate"]


def test_arguments_that_are_no_whole_object_make_an_invalid_call_never_run() -> None:
    """A call cut off at its budget (or a server that ignored the schema) was read leniently by
    LangChain, '{"expression": "2+' as {"expression": "2+"}, and the tool ran with it."""
    for cut in ('{"expression": "2+', "{", "2+2"):
        _, answer = scripted(cut)
        decided = run_steps(tool_call_steps(CHAT, TOOLS, "calculate"), answer)  # type: ignore[arg-type]
        reply = AIMessageChunk(content="", tool_call_chunks=[decided.call])  # type: ignore[list-item]
        assert reply.tool_calls == [] and [c["name"] for c in reply.invalid_tool_calls] == ["calculate"]
        assert json.loads(reply.invalid_tool_calls[0]["args"]) == cut


def test_a_whole_object_with_a_raw_newline_in_a_string_is_a_whole_call() -> None:
    """A small model writes a line break inside a string value as it is; strict JSON refuses
    that, so a whole call was answered 'cut off at the token limit' and never run."""
    _, answer = scripted('{"expression": "2+\n2"}')
    decided = run_steps(tool_call_steps(CHAT, TOOLS, "calculate"), answer)  # type: ignore[arg-type]
    reply = AIMessageChunk(content="", tool_call_chunks=[decided.call])  # type: ignore[list-item]
    assert reply.invalid_tool_calls == [] and reply.tool_calls[0]["args"] == {"expression": "2+\n2"}


def test_each_tool_is_offered_once_per_user_message() -> None:
    called = AIMessage("", tool_calls=[{"name": "roll_dice", "args": {"notation": "2d6"}, "id": "c1"}])
    after = [*CHAT, called, ToolMessage("7", tool_call_id="c1", name="roll_dice")]
    asked, answer = scripted('{"tool": "none"}')
    run_steps(tool_call_steps(after, TOOLS, "auto"), answer)  # type: ignore[arg-type]
    assert asked[0].schema["properties"]["tool"]["enum"] == ["calculate", "none"]
    # The call and its result are in the question's conversation as text any template renders.
    assert "[calling roll_dice" in asked[0].messages[2].text and "[roll_dice result: 7]" in asked[0].messages[3].text
    both = [*after, AIMessage("", tool_calls=[{"name": "calculate", "args": {"expression": "1"}, "id": "c2"}]),
            ToolMessage("1", tool_call_id="c2", name="calculate")]  # fmt: skip
    asked, answer = scripted()
    assert run_steps(tool_call_steps(both, TOOLS, "auto"), answer).call is None  # type: ignore[arg-type]
    assert asked == []  # nothing left to offer: no question asked


def test_a_decision_is_read_leniently_but_only_among_the_choices() -> None:
    choices = ["roll_dice", "none"]
    assert picked('{"tool": "roll_dice"}', choices) == "roll_dice"
    assert picked('"roll_dice"', choices) == "roll_dice"  # a server that ignored the schema
    assert picked("roll_dice", choices) == "roll_dice"
    assert picked('{"tool": "calculate"}', choices) is None
    assert picked("{not json", choices) is None and picked("[1, 2]", choices) is None
