"""Tool calling for small local models: decide with a grammar, then call with a JSON schema.

A 135M model given tools in its prompt and free to answer (``tool_choice="auto"``) almost
never calls one (0 of 40 tries here, ``MODELS.md``). Asked a narrow question instead, it does
well: *which tool answers the last message, or none?*, answered under a grammar that allows
only the tool names and ``none``. So the constrained strategy (``agentmm.tool_strategies``) calls
tools in two constrained steps:

1. **decide**: the conversation, then one more user message listing the tools and asking
   which one answers; the reply is constrained to a name or ``none`` (greedy; one token
   usually decides, see ``ConstrainedToolCalling.choose``).
2. **call**: the conversation, then a message naming the chosen tool and its arguments'
   JSON schema; the reply is constrained by a grammar built from that schema, so it is
   always well-formed JSON of the right shape.

Both steps only *append* to the conversation, so llama.cpp's prefix cache reuses the whole
conversation; a turn that needs no tool costs one short constrained call more. The reply that
follows a tool call sees the call and its result as plain text, which every chat template can
render (many GGUF templates have no ``tool`` role).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage, convert_to_openai_messages
from langchain_core.messages.tool import ToolCallChunk, tool_call_chunk

NO_TOOL = "none"
MAX_QUOTE = 500
# How an earlier call and its result read in the conversation. A small model answering after a
# tool result tends to write one more such line itself: a call nobody runs, or a result nobody
# got, with made-up file paths (3 and 2 of 8 image-search replies of the shipped 135M model),
# so a reply stops where one would begin. Calls are made only through the tool step.
CALL_MARK = "[calling "


def result_mark(name: str) -> str:
    return f"[{bare_result_mark(name)}"


def reply_stops(stop: Sequence[str] | None, tools: Sequence[dict[str, Any]]) -> list[str]:
    """The stop sequences of a text reply when ``tools`` are bound: the caller's, and the start
    of a call or of a result as the conversation renders them. A result is also stopped at
    without its bracket: kept from opening one, the 135M model wrote "- find_photos result: 1.
    /photos/2024/be…" (a result nobody got); the bracketed form, earlier, still cuts first."""
    names = [*(tool_name(t) for t in tools), "tool"]
    return [*(stop or []), CALL_MARK, *(result_mark(name) for name in names), *(bare_result_mark(n) for n in names)]


def bare_result_mark(name: str) -> str:
    return f"{name} result:"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:16]}"


def arguments_call(name: str, arguments: str, index: int = 0) -> tuple[ToolCallChunk, bool]:
    """The call to ``name`` whose arguments a constrained step wrote, and whether they were cut
    off. Written under the schema's grammar, they are one whole JSON object when the generation
    ended by itself; one that ran out of tokens is not, and LangChain reads a broken object
    leniently (``{"x`` as ``{}``, ``{"x": "hel`` as ``{"x": "hel"}``), so the tool ran with
    arguments the model never finished. A cut call keeps its text as a JSON string, which
    LangChain reports as an invalid call: the tools node answers it ``malformed`` and runs nothing."""
    text = arguments.strip()
    try:  # not strict: a raw newline in a string value is whole (LangChain reads it so too)
        whole = isinstance(json.loads(text, strict=False), dict)
    except ValueError:
        whole = False
    args = text if whole else json.dumps(text)
    return tool_call_chunk(name=name, args=args, id=new_call_id(), index=index), not whole


def normalized_choice(tool_choice: str | dict[str, Any] | bool | None, names: Sequence[str]) -> str:
    """``tool_choice`` in any of LangChain's forms as one of ``"auto"`` (the model decides, maybe
    no tool), ``"any"`` (some tool), ``"none"`` or a bound tool's name; ValueError for a name
    that is not bound."""
    choice: Any = tool_choice
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name") or choice.get("name")
    if choice in ("any", "required", True):
        choice = names[0] if len(names) == 1 else "any"
    elif choice in (None, False, "auto"):
        choice = "none" if choice is False else "auto"
    if choice not in ("auto", "any", "none", *names):
        raise ValueError(f"tool_choice {tool_choice!r} names no bound tool (bound: {', '.join(names)})")
    return str(choice)


def tool_name(tool: dict[str, Any]) -> str:
    return str(tool["function"]["name"])


def tool_parameters(tool: dict[str, Any]) -> dict[str, Any]:
    return tool["function"].get("parameters") or {"type": "object", "properties": {}}


def tools_section(tools: Sequence[dict[str, Any]]) -> str:
    """The tools, one line each, for the end of the system message.

    There they are stable across turns (llama.cpp's prefix cache keeps them), the reply sees
    what its tools do, and the question of step 1 stays a few tokens long.
    """
    lines = [f"- {tool_name(t)}: {_first_line(t['function'].get('description', ''))}" for t in tools]
    return "Tools you can call:\n" + "\n".join(lines)


def decision_prompt(message: str) -> str:
    """The question of step 1: which tool (if any) the user's last message asks for.

    The answer's form is left to the constraint (tool names, and ``none`` where allowed). The
    message is quoted again right before the question: with the tools in the system message,
    the 135M model chose right for 23 of 32 labelled messages this way, 16 without the quote
    (two system prompts, with and without an earlier exchange, eight messages), and every
    wrong pick was "none" for a dice request. Short, too: it is the decision's whole cost.
    """
    return f'Message: "{_quote(message)}"\nTool for this message:'


def decision_grammar(names: Sequence[str], allow_none: bool = True) -> str:
    """A GBNF grammar whose only sentences are the tool names (and ``none``)."""
    choices = [*names, NO_TOOL] if allow_none else list(names)
    return "root ::= " + " | ".join(json.dumps(name) for name in choices) + "\n"


def call_prompt(tool: dict[str, Any], message: str) -> str:
    """The request of step 2: the chosen tool, its arguments' schema, the message again."""
    function = tool["function"]
    return (
        f"Tool {function['name']}: {_first_line(function.get('description', ''))}\n"
        f"Arguments schema: {json.dumps(tool_parameters(tool))}\n"
        f'Message: "{_quote(message)}"\nArguments for this message, as JSON:'
    )


def arguments_grammar(tool: dict[str, Any]) -> str:
    """A GBNF grammar for the tool's arguments (llama.cpp's own JSON-schema converter)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return json_schema_to_gbnf(json.dumps(tool_parameters(tool)))


def check_schema(tool: dict[str, Any]) -> None:
    """Raise ValueError when llama.cpp cannot turn the tool's schema into a grammar."""
    try:
        arguments_grammar(tool)
    except Exception as exc:  # the converter raises assorted errors on schemas it can't express
        raise ValueError(f"tool {tool_name(tool)!r} has a schema llama.cpp cannot constrain: {exc}") from exc


def render_messages(messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """OpenAI-style messages any chat template renders: tool calls and results as text, and
    the ``tools`` (when bound) listed at the end of the system message."""
    rendered: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, AIMessage) and (message.tool_calls or message.invalid_tool_calls):
            rendered.append({"role": "assistant", "content": _calls_text(message)})
        elif isinstance(message, ToolMessage):
            rendered.append({"role": "user", "content": f"{result_mark(message.name or 'tool')} {message.text}]"})
        else:
            rendered.extend(convert_to_openai_messages([message]))  # type: ignore[arg-type]
    if tools:
        section = tools_section(tools)
        if rendered and rendered[0]["role"] == "system":
            rendered[0] = {**rendered[0], "content": f"{rendered[0]['content']}\n\n{section}"}
        else:
            rendered.insert(0, {"role": "system", "content": section})
    return rendered


def _calls_text(message: AIMessage) -> str:
    parts = [message.text] if message.text else []
    for call in message.tool_calls:
        parts.append(f"{CALL_MARK}{call['name']} {json.dumps(call['args'])}]")
    for bad in message.invalid_tool_calls:
        parts.append(f"{CALL_MARK}{bad.get('name') or 'a tool'} {bad.get('args') or ''}]")
    return "\n".join(parts)


def _quote(message: str) -> str:
    return message if len(message) <= MAX_QUOTE else message[:MAX_QUOTE] + "..."


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def pending_tools(messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tools not yet called since the user's last message.

    A small model asked again after a tool answered picks the same tool again; offering each
    tool once per user message ends the loop with an answer instead of at the loop limit.
    """
    called: set[str] = set()
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, ToolMessage) and message.name:
            called.add(message.name)
    return [tool for tool in tools if tool_name(tool) not in called]


def last_user_text(messages: Sequence[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.text
    return ""
