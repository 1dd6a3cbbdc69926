"""The turn's tool calls: which tools a thread may use, and the node that runs the calls.

Safety is decided here, not by the model: a call runs only if the tool was enabled when the
graph was built (the user's settings) *and* the thread's persona allows it (its
``allowed_tools``; a thread without a persona may use every enabled tool). Neither card nor
message text can enable a tool. A tool marked ``requires_approval`` (in its metadata, or in
``approve``) pauses the turn with LangGraph's ``interrupt``; the run resumes with
``Command(resume=True|False)``. Errors, timeouts and huge outputs come back to the model as a
tool message, and the conversation goes on.

Why not LangGraph's ``ToolNode`` as the node: the allow-list, the approvals (all asked before
any call runs, so a resumed node never runs a tool twice) and the timeout wrap each call. Each
call that passes them runs *through* a ``ToolNode`` (``ToolBox.node``), invoked with this node's
config: so a tool gets exactly what LangGraph injects (``runtime: ToolRuntime`` with the run's
state, ``TurnContext``, store, config and stream writer; ``InjectedState``, ``InjectedStore``),
and what a model writes into an injected parameter is dropped, as under ``ToolNode``.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Collection, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph._internal._constants import CONFIG_KEY_RUNTIME
from langgraph.config import get_stream_writer
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from agentmm.personas import PersonaRegistry
from agentmm.plugins import needs_approval
from agentmm.state import ChatState, TurnContext, run_context, trace_step
from agentmm.tool_calling import tools_section

# How often a running tool call looks at the turn's cancel flag.
_CANCEL_POLL_S = 0.05
# Calls given up on (timed out, or the turn stopped) whose tool still runs. Process-wide, as the
# fact is: the tool runs on a thread of LangGraph's ToolNode pool, which Python joins at exit.
_ABANDONED: weakref.WeakSet[threading.Thread] = weakref.WeakSet()

MAX_OUTPUT_CHARS = 2000
CHARS_PER_TOKEN = 3  # a cautious average for English text and JSON
CALL_PROMPT_TOKENS = 96
TRACE_OUTPUT_CHARS = 500
APPROVAL = "tool_approval"
# In a run's configurable: run async-only tools on threads of their own, as in a sync run. An
# Agent's turns set it: they run on the agent's own loop, which no app object is bound to, and
# there a tool that blocks (time.sleep, requests) would stop the loop, its timeout and Ctrl-C.
TOOL_THREADS_KEY = "agentmm_tool_threads"


class ToolBox:
    """The tools enabled for this graph, narrowed per thread by its persona."""

    def __init__(
        self,
        tools: Sequence[BaseTool],
        personas: Callable[[], PersonaRegistry],
        *,
        approve: Collection[str] = (),
        timeout_s: float = 30.0,
        max_rounds: int = 3,
        max_output_chars: int = MAX_OUTPUT_CHARS,
    ) -> None:
        self.tools = {tool.name: tool for tool in tools}
        # Runs one allowed call with LangGraph's injection; any error becomes the tool's answer.
        self.node = ToolNode(list(self.tools.values()), handle_tool_errors=_error_text)
        self.personas = personas
        self.approve = set(approve)
        self.timeout_s = timeout_s
        self.max_rounds = max_rounds
        self.max_output_chars = max_output_chars

    def offered(self, state: ChatState) -> list[BaseTool]:
        """The tools this thread may call now."""
        name = state.get("persona")
        if not name or not self.tools:
            return list(self.tools.values())
        allowed = set(self.personas().get(name).allowed_tools)
        return [tool for tool in self.tools.values() if tool.name in allowed]

    def reserve_tokens(self, state: ChatState, count: Callable[[str], int]) -> int:
        """Context to keep free for the tools this turn: their list in the system message, the
        decision and call prompts, and one call's result. Later rounds of the same turn use
        what the reply does not."""
        offered = self.offered(state)
        if not offered:
            return 0
        section = tools_section([convert_to_openai_tool(tool) for tool in offered])
        return count(section) + CALL_PROMPT_TOKENS + self.max_output_chars // CHARS_PER_TOKEN

    def needs_approval(self, tool: BaseTool) -> bool:
        return needs_approval(tool, self.approve)


def rounds_this_turn(messages: Sequence[BaseMessage]) -> int:
    """How many times the model has called tools since the user's last message."""
    rounds = 0
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, AIMessage) and (message.tool_calls or message.invalid_tool_calls):
            rounds += 1
    return rounds


def wants_tools(message: BaseMessage) -> bool:
    return (
        isinstance(message, AIMessage)
        and bool(message.tool_calls or message.invalid_tool_calls)
        and not (message.response_metadata.get("interrupted"))
    )


class RunTools:
    """Answer each of the last reply's tool calls with a tool message (and a trace entry).

    A sync run calls the node, an async one (``ainvoke``, ``astream``) its ``acall``: there an
    async-only tool runs on the run's own event loop, so it can await what the app made on it
    (its HTTP client, a database pool), and is cancelled at its timeout (which cannot fire while
    it blocks the loop). An Agent's runs keep such tools on threads (``TOOL_THREADS_KEY``)."""

    def __init__(self, toolbox: ToolBox) -> None:
        self.toolbox = toolbox

    def __call__(self, state: ChatState, config: RunnableConfig, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        round_ = _Round(self.toolbox, state, config, runtime)
        for call in round_.calls:
            tool, call = round_.begin(call)
            outcome = round_.refused(call, tool) or self._run(tool, call, round_.config, round_.cancel)  # type: ignore[arg-type]
            round_.end(call, outcome)
        return round_.update()

    async def acall(self, state: ChatState, config: RunnableConfig, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        round_ = _Round(self.toolbox, state, config, runtime)
        for call in round_.calls:
            tool, call = round_.begin(call)
            outcome = round_.refused(call, tool)
            on_loop = not round_.config.get("configurable", {}).get(TOOL_THREADS_KEY)
            if outcome is None and on_loop and _async_only(tool):  # type: ignore[arg-type]
                outcome = await self._arun(tool, call, round_.config, round_.cancel)  # type: ignore[arg-type]
            elif outcome is None:  # on a thread of its own, as in a sync run, the loop left free
                outcome = await asyncio.to_thread(self._run, tool, call, round_.config, round_.cancel)  # type: ignore[arg-type]
            round_.end(call, outcome)
        return round_.update()

    def _run(
        self, tool: BaseTool, call: dict[str, Any], config: RunnableConfig, cancel: threading.Event
    ) -> tuple[str, str]:
        """Run one call on its own daemon thread (a hung tool cannot hold the turn), abandoned
        after ``timeout_s`` or as soon as the turn is cancelled (Ctrl-C waited out the timeout)."""
        outcome: list[tuple[str, str]] = []
        context = contextvars.copy_context()  # the run's config and callbacks, as on the node's thread

        def work() -> None:
            try:
                outcome.append(context.run(_invoke, self.toolbox.node, tool, call, config))
            except BaseException as exc:  # sys.exit() in a tool is its failure, not a timeout
                outcome.append(("error", _failure_text(exc)))

        worker = threading.Thread(target=work, name=f"tool-{tool.name}", daemon=True)
        worker.start()
        deadline = time.monotonic() + self.toolbox.timeout_s
        while worker.is_alive() and not cancel.is_set() and (left := deadline - time.monotonic()) > 0:
            worker.join(min(left, _CANCEL_POLL_S))
        if outcome:
            return outcome[0]
        _ABANDONED.add(worker)
        return self._given_up(tool, cancel)

    async def _arun(
        self, tool: BaseTool, call: dict[str, Any], config: RunnableConfig, cancel: threading.Event
    ) -> tuple[str, str]:
        """Run an async-only tool's call as a task on this loop, cancelled after ``timeout_s``
        or as soon as the turn is."""
        task = asyncio.ensure_future(_ainvoke(self.toolbox.node, tool, call, config))
        deadline = time.monotonic() + self.toolbox.timeout_s
        try:
            while not task.done() and not cancel.is_set() and (left := deadline - time.monotonic()) > 0:
                await asyncio.wait({task}, timeout=min(left, _CANCEL_POLL_S))
        finally:
            if not task.done():
                task.cancel()  # the tool stops at its next await (also when this run is cancelled)
        if task.done() and not task.cancelled():
            error = task.exception()
            return ("error", _failure_text(error)) if error is not None else task.result()
        return self._given_up(tool, cancel)

    def _given_up(self, tool: BaseTool, cancel: threading.Event) -> tuple[str, str]:
        if cancel.is_set():
            return "cancelled", f"error: the user stopped the turn while {tool.name} ran; it was abandoned"
        return "timeout", f"error: {tool.name} did not finish within {self.toolbox.timeout_s:g} s and was abandoned"


class _Round:
    """One round of a turn's tool calls, kept apart from how each call runs (a thread in a
    sync run, the run's loop for an async tool): which may run, what they answered, the trace."""

    def __init__(
        self, toolbox: ToolBox, state: ChatState, config: RunnableConfig, runtime: Runtime[TurnContext]
    ) -> None:
        if not isinstance(runtime.context, TurnContext):  # none (the defaults), or an outer graph's dict
            runtime = runtime.override(context=run_context(runtime.context))
            config = {**config, "configurable": {**config.get("configurable", {}), CONFIG_KEY_RUNTIME: runtime}}
        self.toolbox = toolbox
        self.state = state
        self.config = config
        self.cancel = runtime.context.cancel
        self.request = state["messages"][-1]
        assert isinstance(self.request, AIMessage)
        self.calls = self.request.tool_calls
        self.offered = {tool.name: tool for tool in toolbox.offered(state)}
        # Ask every approval first: a resumed node re-runs from the top, and nothing has run yet.
        self.verdicts = {
            call["id"]: _approved(interrupt(approval_request(call)))
            for call in self.calls
            if call["name"] in self.offered and toolbox.needs_approval(self.offered[call["name"]])
        }
        self.messages: list[ToolMessage] = []
        self.entries: list[dict[str, Any]] = []
        self.progress = get_stream_writer()  # stream_mode="custom": a web app can show "rolling dice..."
        self.started = 0.0

    def begin(self, call: ToolCall) -> tuple[BaseTool | None, dict[str, Any]]:
        """The tool a call names (None when not offered) and the call, with an id."""
        self.started = time.perf_counter()
        call_id = call["id"] or f"call_{uuid.uuid4().hex[:16]}"
        self.progress({"type": "tool_start", "tool": call["name"], "args": call["args"], "id": call_id})
        return self.offered.get(call["name"]), {**call, "id": call_id, "asked_id": call["id"]}

    def refused(self, call: dict[str, Any], tool: BaseTool | None) -> tuple[str, str] | None:
        """Why the call does not run, as its (status, answer); None when it runs."""
        if tool is None:
            return "unavailable", f"error: no tool named {call['name']!r} is available here"
        if self.verdicts.get(call["asked_id"], True) is False:
            return "denied", "the user did not allow this call"
        if self.cancel.is_set():
            return "cancelled", "error: the user stopped the turn before this call ran"
        return None

    def end(self, call: dict[str, Any], outcome: tuple[str, str]) -> None:
        status, text = outcome[0], self._cap(outcome[1])
        self.messages.append(ToolMessage(text, tool_call_id=call["id"], name=call["name"],
                                         status="success" if status == "ok" else "error"))  # fmt: skip
        self.entries.append(_entry(call["name"], call["args"], call["id"], status, text, self.started))
        self.progress({"type": "tool_end", "tool": call["name"], "id": call["id"], "status": status})

    def update(self) -> dict[str, Any]:
        # A reply that ran out of tokens writing a call (the strategies keep a cut call's text
        # as invalid, never run) says so: "not valid JSON" read as the model's own mistake.
        cut = self.request.response_metadata.get("finish_reason") == "length"
        why = "cut off at the token limit" if cut else "arguments are not valid JSON"
        for bad in self.request.invalid_tool_calls:
            call_id = bad.get("id") or f"call_{uuid.uuid4().hex[:16]}"
            text = f"error: malformed tool call ({bad.get('error') or why}); try again"
            self.messages.append(ToolMessage(text, tool_call_id=call_id, name=bad.get("name") or "tool",
                                             status="error"))  # fmt: skip
            self.entries.append(_entry(bad.get("name") or "?", bad.get("args"), call_id, "malformed", text,
                                       time.perf_counter()))  # fmt: skip
        previous = (self.state.get("trace") or {}).get("tool_calls", [])
        trace = trace_step(self.state, "tools", tool_calls=[*previous, *self.entries])
        return {"messages": self.messages, "trace": trace}

    def _cap(self, text: str) -> str:
        limit = self.toolbox.max_output_chars
        if len(text) <= limit:
            return text
        return f"{text[:limit]}\n[output truncated: {len(text):,} characters, first {limit:,} shown]"


def tools_still_running() -> bool:
    """Whether a tool call this process gave up on is still running. Python would wait for it
    at exit (it runs on a non-daemon thread of LangGraph's ``ToolNode`` pool, which nothing can
    stop), so the CLI leaves with ``os._exit`` then, its output flushed and its stores closed."""
    return any(worker.is_alive() for worker in list(_ABANDONED))


def _invoke(node: ToolNode, tool: BaseTool, call: dict[str, Any], config: RunnableConfig) -> tuple[str, str]:
    """Run one call through LangGraph's ``ToolNode`` under this node's config: it reads the
    run's state, context and store from the config (as it does as a node of its own) and
    injects them into the parameters the tool declares for them."""
    try:
        if _async_only(tool):  # a sync run: the tool gets a loop of its own
            result = asyncio.run(node.ainvoke([_tool_call(call)], config))
        else:
            result = node.invoke([_tool_call(call)], config)
    except Exception as exc:  # a failure outside the tool itself (the injection): the model hears it
        return "error", _error_text(exc)
    return _answer(result)


async def _ainvoke(node: ToolNode, tool: BaseTool, call: dict[str, Any], config: RunnableConfig) -> tuple[str, str]:
    """``_invoke`` on the run's own event loop."""
    try:
        result = await node.ainvoke([_tool_call(call)], config)
    except Exception as exc:
        return "error", _error_text(exc)
    return _answer(result)


def _async_only(tool: BaseTool) -> bool:
    return getattr(tool, "func", True) is None and getattr(tool, "coroutine", None) is not None


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    return {"name": call["name"], "args": call["args"], "id": call["id"], "type": "tool_call"}


def _answer(result: Any) -> tuple[str, str]:
    """A ``ToolNode`` result as (status, text)."""
    answers = result.get("messages", []) if isinstance(result, dict) else result
    answer = answers[0] if isinstance(answers, list) and answers else answers
    if isinstance(answer, ToolMessage):
        return ("error" if answer.status == "error" else "ok"), _text(answer.content)
    return "ok", _text(answer)


def _error_text(exc: Exception) -> str:
    """A failed call's answer to the model (``ToolNode``'s ``handle_tool_errors``, which reads
    the annotation to know what it handles)."""
    return _failure_text(exc)


def _failure_text(exc: BaseException) -> str:
    return f"error: {type(exc).__name__}: {exc}"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part if isinstance(part, str) else str(part.get("text", part)) for part in content)
    return str(content)


def approval_request(call: ToolCall) -> dict[str, Any]:
    """What the turn asks the user (the interrupt's value): which tool, with what arguments."""
    return {"type": APPROVAL, "tool": call["name"], "args": call["args"], "id": call["id"]}


def _approved(answer: Any) -> bool:
    """A resume value as a yes or no: True, "y"/"yes", or {"approved": True}."""
    if isinstance(answer, dict):
        answer = answer.get("approved", False)
    if isinstance(answer, str):
        return answer.strip().lower() in {"y", "yes", "true", "allow", "approve"}
    return answer is True


def _entry(name: str, args: Any, call_id: str, status: str, text: str, started: float) -> dict[str, Any]:
    shown = text if len(text) <= TRACE_OUTPUT_CHARS else text[:TRACE_OUTPUT_CHARS] + "..."
    return {"name": name, "args": args, "id": call_id, "status": status, "output": shown,
            "duration_s": round(time.perf_counter() - started, 4)}  # fmt: skip
