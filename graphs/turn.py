"""One turn of an ``Agent``, run in one place: the coroutine over ``graph.astream`` that every
turn goes through, and ``TurnStream``, the handle the sync and async calls drive it with.

What a turn does lives once, in ``TurnStream._turn``: the input checks (at construction, so
a bad message or persona fails before anything runs), settling a turn a dead process left
half-done (``settle_thread``), the cross-process thread lock (``turn_on``), the persona and
its greeting (the run's ``TurnContext``), approvals (an interrupt is asked through
``on_approval`` and resumed with ``Command(resume=...)``), ``on_observations`` and
``on_tool_calls``, the retry's seed, cancellation, the rollback of a run that failed
(``_discard_failed_run``) and the ``TurnResult`` (trace, timings).

Where it runs: on the agent's own event loop thread (``TurnLoop``: one per agent, opened in
its ``Runtime`` and closed by ``Agent.close``), with the graph checkpointing through an async
saver opened once on that loop (LangGraph's ``AsyncSqliteSaver`` on the agent's SQLite file,
``threads.async_checkpointer``; any other saver as it is). The caller, a thread iterating
``TurnStream`` or a coroutine in another loop, reads what the turn hands it from one queue:
reply text, callbacks to run (on the caller's side, in order with the text), approvals to
answer, the end. Text is handed over once per chunk, one thread hop.

Cancelling: ``cancel()`` (any thread), leaving the iteration early, Ctrl-C in the iterating
thread, or cancelling the task of ``achat``/``astream`` all set the run's cancel flag: the
generate node closes the model's stream after the current token (which frees the model, see
``ChatLlamaCpp._astream``), and the turn ends as the sync cancel always has: the partial reply
saved, marked interrupted (and remembered). The caller waits for that end, so the thread is
settled and the model free when the cancellation has gone through.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage
from langchain_core.runnables.utils import _RootEventFilter
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command
from pydantic import BaseModel, Field

from agentmm.errors import EmptyInputError, InputTooLongError, InvalidContextError, InvalidTextError
from agentmm.event_loop import LoopThread
from agentmm.exchange import SUMMARY_BEFORE_KEY
from agentmm.graphs.chat import played_in, reply_cut_for
from agentmm.graphs.thread_edit import restore
from agentmm.graphs.tool_calls import TOOL_THREADS_KEY
from agentmm.notes_sent import notes_as_sent
from agentmm.personas import greeting as opening_greeting
from agentmm.reply_cut import ReplyCutFilter
from agentmm.state import TurnContext
from agentmm.thread_lock import turn_on
from agentmm.threads import (
    DURABILITY,
    async_checkpointer,
    new_thread_id,
    settle_thread,
    sync_to_disk,
    thread_exists,
)

if TYPE_CHECKING:
    from agentmm.graphs.agent import Agent
    from agentmm.personas import PersonaRegistry

RUN_KEY = "agentmm_run"
_MODES = ["messages", "values", "updates"]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Timings(BaseModel):
    ttft_s: float = 0.0
    total_s: float = 0.0


class TurnResult(BaseModel):
    """One turn's outcome; ``to_json()`` is the CLI's ``--json`` contract."""

    reply: str
    thread_id: str
    model: str
    usage: Usage = Field(default_factory=Usage)
    timings: Timings = Field(default_factory=Timings)
    trace: dict[str, Any] = Field(default_factory=dict)
    interrupted: bool = False
    # The turn's intent ("" unless the ``intent`` setting is on) and whether the reply was said
    # out of character (an ``ooc`` turn).
    intent: str = ""
    out_of_character: bool = False

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class TurnLoop:
    """An agent's event loop thread, and its turn graph over an async saver opened on it."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.thread = LoopThread("agentmm-turns")
        self._graph: CompiledStateGraph | None = None
        self._saver: contextlib.AsyncExitStack | None = None
        self._opening = asyncio.Lock()

    async def graph(self) -> CompiledStateGraph:
        """The agent's graph checkpointing through an async saver (opened on first use, on this
        loop; the sync graph and this one share the thread database)."""
        async with self._opening:
            if self._graph is None:
                graph = await asyncio.to_thread(lambda: self.agent.graph)  # may build it
                stack = contextlib.AsyncExitStack()
                # Commits without waiting for the disk: each turn flushes its own once, at its end.
                saver = await stack.enter_async_context(async_checkpointer(graph.checkpointer, wait_for_disk=False))
                self._saver = stack
                self._graph = graph if saver is graph.checkpointer else graph.copy(update={"checkpointer": saver})
            return self._graph

    def close(self) -> None:
        """Close the async saver on the loop (a turn still running is cancelled first), then
        the loop."""
        if self._saver is not None and not self.thread.loop.is_closed():
            with contextlib.suppress(Exception):
                self.thread.run(self._saver.aclose())
        self.thread.close()


def turn_loop(agent: Agent) -> TurnLoop:
    """The agent's ``TurnLoop``, started on first use in its runtime (closed with it)."""
    return agent.runtime.get("turn loop", lambda: TurnLoop(agent), close=TurnLoop.close)


@dataclass
class _Report:
    """A callback for the caller to run, in order with the reply's text."""

    kind: str  # "observations" | "tool_calls"
    payload: list[dict[str, Any]]


@dataclass
class _Ask:
    """A tool call waiting for the caller's yes or no; ``reply`` answers it (from any thread)."""

    request: dict[str, Any]
    answer: asyncio.Future[bool]
    loop: LoopThread

    def reply(self, allowed: bool) -> None:
        def settle() -> None:
            if not self.answer.done():
                self.answer.set_result(allowed)

        self.loop.call_soon(settle)


@dataclass
class _Event:
    """One LangChain stream event, for ``astream_events``."""

    event: dict[str, Any]


@dataclass
class _End:
    error: BaseException | None = None


class TurnStream:
    """One turn: iterate it for the reply's text (``result`` once it is exhausted), or drive
    it from a coroutine (``achat``, ``astream``, ``aevents``). Nothing runs until then.

    ``cancel()`` (from any thread, e.g. a Ctrl-C handler) stops generation after the current
    token; the partial reply is kept in the thread, marked interrupted. The callbacks run on
    the caller's side: the iterating thread, or the awaiting loop (where they may be coroutines).
    """

    def __init__(
        self, agent: Agent, text: str, thread_id: str | None = None, *, persona: str | None = None,
        greeting: int = 0, attachments: Sequence[str | Path] = (), retry: bool = False, seed: int | None = None,
    ) -> None:  # fmt: skip
        if text is not None and not isinstance(text, str):
            raise InvalidContextError(f"the message must be text (str), not {type(text).__name__}")
        if not (text and text.strip()) and not attachments:
            raise EmptyInputError("nothing to say: the message is empty")
        InvalidTextError.check(text, "the message")
        _check_size(text, agent.settings.n_ctx)
        self.agent = agent
        self.text = text
        self.thread_id = (checked_thread_id(thread_id) if thread_id is not None else "") or new_thread_id()
        settings = agent.settings
        # Made with the arguments as given first, which it checks (a persona of 5, one path given
        # as the attachments), then playing the persona the turn switches the thread to.
        self.context = TurnContext(
            user_name=settings.user_name, persona=persona, greeting=greeting, user_id=settings.user_id,
            shared_memory=settings.shared_memory, attachments=attachments, retry=retry, seed=seed,  # type: ignore[arg-type]
        )  # fmt: skip
        self.context.persona = _persona(agent, self.thread_id, persona, greeting)
        self._result: TurnResult | None = None
        self._asked: _Ask | None = None
        self._started = 0.0
        self.run_id = uuid.uuid4().hex  # tags the run's checkpoints (see _discard_failed_run)
        # A retry's: the rolling summary as the exchange's run found it (``exchange.summary_put_back``).
        self.summary_before: dict[str, Any] | None = None
        # Called with the turn's observations once perception is done, before the reply starts.
        self.on_observations: Callable[[list[dict[str, Any]]], Any] | None = None
        # Called with each round of tool calls once they have run (trace entries: name, args,
        # status, output...), so a chat can show what a tool found before the reply goes on.
        self.on_tool_calls: Callable[[list[dict[str, Any]]], Any] | None = None
        self._calls_reported = 0
        # Observations held until compose has run: it may cut a voice note to fit (the message,
        # one note or several joined, or the observations part a note sent with text is a line
        # of), and the chat should show what the model got (``notes_as_sent``).
        self._held: list[dict[str, Any]] | None = None
        # Asked when a tool needs the user's OK ({"tool", "args", "id"}); True runs the call.
        # Without it such calls are denied, and the model hears so.
        self.on_approval: Callable[[dict[str, Any]], Any] | None = None

    def cancel(self) -> None:
        self.context.cancel.set()
        asked = self._asked
        if asked is not None:
            asked.reply(False)

    @property
    def result(self) -> TurnResult:
        if self._result is None:
            raise RuntimeError("the turn has not finished: iterate the stream first")
        return self._result

    # -- the caller's side: a thread, or a coroutine in any loop ----------------------------

    def __iter__(self) -> Iterator[str]:
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._start(items.put)
        ended = False
        try:
            while True:
                item = items.get()
                if isinstance(item, str):
                    yield item
                elif isinstance(item, _End):
                    ended = True
                    if item.error is not None:
                        raise item.error
                    return
                else:
                    self._serve(item)
        finally:
            if not ended:  # left early (a break, Ctrl-C): the turn saves what it has, then ends
                self.cancel()
                while not isinstance(item := items.get(), _End):
                    if isinstance(item, _Ask):
                        item.reply(False)

    async def achat(self) -> TurnResult:
        """Run the turn from a coroutine; its result."""
        async with contextlib.aclosing(self._items()) as items:
            async for _ in items:
                pass
        return self.result

    async def astream(self) -> AsyncIterator[str]:
        """The reply's text as it comes, from a coroutine."""
        async with contextlib.aclosing(self._items()) as items:
            async for item in items:
                if isinstance(item, str):
                    yield item

    async def aevents(self, **filters: Any) -> AsyncIterator[dict[str, Any]]:
        """LangChain's ``astream_events`` (v2) of the turn's runs; ``filters`` are its
        ``include_``/``exclude_`` names, types and tags."""
        keep = _RootEventFilter(**filters)
        async with contextlib.aclosing(self._items(keep)) as items:
            async for item in items:
                if isinstance(item, _Event):
                    yield item.event

    async def _items(self, events: _RootEventFilter | None = None) -> AsyncIterator[str | _Event]:
        caller = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                caller.call_soon_threadsafe(items.put_nowait, item)

        self._start(put, events)
        ended = False
        try:
            while True:
                item = await items.get()
                if isinstance(item, _End):
                    ended = True
                    if item.error is not None:
                        raise item.error
                    return
                if isinstance(item, (_Report, _Ask)):
                    await self._aserve(item)
                else:
                    yield item
        finally:
            if not ended:  # cancelled or closed early: wait, without blocking, for the saved end
                self.cancel()
                while not isinstance(item := await items.get(), _End):
                    if isinstance(item, _Ask):
                        item.reply(False)

    def _start(self, put: Callable[[Any], None], events: _RootEventFilter | None = None) -> None:
        if self._started:
            raise RuntimeError("this turn has already run: start another with agent.stream()")
        self._started = time.perf_counter()
        turn_loop(self.agent).thread.submit(self._run(put, events))

    def _serve(self, item: _Report | _Ask) -> None:
        if isinstance(item, _Ask):
            allowed = self.on_approval is not None and not self.context.cancel.is_set()
            item.reply(bool(allowed and self.on_approval(item.request)))  # type: ignore[misc]
            return
        callback = self.on_observations if item.kind == "observations" else self.on_tool_calls
        if callback is not None:
            callback(item.payload)

    async def _aserve(self, item: _Report | _Ask) -> None:
        if isinstance(item, _Ask):
            allowed = False
            if self.on_approval is not None and not self.context.cancel.is_set():
                allowed = self.on_approval(item.request)
                allowed = await allowed if inspect.isawaitable(allowed) else allowed
            item.reply(bool(allowed))
            return
        callback = self.on_observations if item.kind == "observations" else self.on_tool_calls
        if callback is not None and inspect.isawaitable(done := callback(item.payload)):
            await done

    # -- the turn itself, on the agent's loop ---------------------------------------------

    async def _run(self, put: Callable[[Any], None], events: _RootEventFilter | None) -> None:
        try:
            await self._turn(put, events)
        except BaseException as exc:  # the caller raises it
            put(_End(exc))
            if not isinstance(exc, Exception):
                raise
        else:
            put(_End())

    async def _turn(self, put: Callable[[Any], None], events: _RootEventFilter | None) -> None:
        agent = self.agent
        graph = await turn_loop(agent).graph()
        # Another turn on this thread at the same time (this agent's, or another process's)
        # would be lost under this one, or interleave with it: refused.
        with turn_on(agent.checkpointer, self.thread_id):
            # A turn a killed process left half done is rolled back or finished first.
            await asyncio.to_thread(settle_thread, agent.graph, self.thread_id, context=agent._settle_context())
            try:
                await self._stream(graph, put, events)
            except Exception:
                if self._held is not None:  # compose failed: what was perceived is still said, as heard
                    put(_Report("observations", self._held))
                    self._held = None
                await asyncio.to_thread(self._discard_failed_run)
                raise

    async def _stream(self, graph: CompiledStateGraph, put: Callable[[Any], None],
                      events: _RootEventFilter | None) -> None:  # fmt: skip
        first: float | None = None
        final: dict[str, Any] = {}
        config = {**self.agent.config(self.thread_id), "metadata": {RUN_KEY: self.run_id}}
        config["configurable"] = {**config["configurable"], TOOL_THREADS_KEY: True}
        if self.summary_before is not None:  # a retry: the summary its exchange's run started with
            config["configurable"] = {**config["configurable"], SUMMARY_BEFORE_KEY: self.summary_before}
        run_input: Any = {"input": self.text}
        shown: ReplyCutFilter | None = None
        while run_input is not None:
            asked: Any = None
            async with contextlib.aclosing(self._parts(graph, run_input, config, put, events)) as parts:
                async for mode, payload in parts:
                    if mode == "values":
                        final = payload
                    elif mode == "updates":
                        asked = self._on_update(payload, put) or asked
                    else:
                        chunk, meta = payload
                        # A chunk of a streamed reply, or the whole of one from a model that
                        # does not stream (LangGraph sends each message once, by its id).
                        generated = meta.get("langgraph_node") == "generate" and isinstance(chunk, AIMessage)
                        if generated and chunk.text:
                            if shown is None:  # the state before generate says who is played, in character or not
                                cut = reply_cut_for(self.context.user_name, played_in(final), self._personas)
                                shown = ReplyCutFilter(cut)
                            if text := shown.feed(str(chunk.id), chunk.text):
                                first = first or time.perf_counter()
                                put(text)
            if shown is not None and (text := shown.flush()):
                first = first or time.perf_counter()
                put(text)
            # A tool call waits for the user's yes or no: ask, then resume the same run.
            run_input = Command(resume=await self._approve(asked, put)) if asked is not None else None
        await asyncio.to_thread(sync_to_disk, self.agent.checkpointer)  # the whole turn, before it returns
        self._result = self._build_result(final, first, time.perf_counter() - self._started)

    def _personas(self) -> PersonaRegistry:
        return self.agent.personas

    async def _parts(
        self, graph: CompiledStateGraph, run_input: Any, config: dict[str, Any], put: Callable[[Any], None],
        events: _RootEventFilter | None,
    ) -> AsyncIterator[tuple[str, Any]]:  # fmt: skip
        """The run's ``(mode, payload)`` parts; for ``aevents`` read off the graph's own stream
        events (its root ``on_chain_stream``), every event the caller's filters keep handed on."""
        options: dict[str, Any] = {"context": self.context, "stream_mode": _MODES, "durability": DURABILITY}
        if events is None:
            async for part in graph.astream(run_input, config, **options):
                yield part
            return
        async for event in graph.astream_events(run_input, config, version="v2", **options):
            if event["event"] == "on_chain_stream" and not event.get("parent_ids"):
                yield event["data"]["chunk"]
            if events.include_event(event, event["event"][3:].rsplit("_", 1)[0]):  # type: ignore[arg-type]
                put(_Event(dict(event)))

    def _on_update(self, payload: dict[str, Any], put: Callable[[Any], None]) -> Any:
        """Report perception and tool calls; return the approval asked for, if the run paused for one."""
        perceived = (payload.get("perceive") or {}).get("observations")
        if perceived is not None and self.on_observations is not None:
            if any(o.get("as_message") or o.get("kind") == "audio" for o in perceived):  # compose may cut them
                self._held = perceived
            else:
                put(_Report("observations", perceived))
        if "compose" in payload and self._held is not None:
            held, self._held = self._held, None
            put(_Report("observations", notes_as_sent(held, payload["compose"] or {})))
        calls = ((payload.get("tools") or {}).get("trace") or {}).get("tool_calls") or []
        if len(calls) > self._calls_reported:
            new, self._calls_reported = calls[self._calls_reported :], len(calls)
            if self.on_tool_calls is not None:
                put(_Report("tool_calls", new))
        paused = payload.get("__interrupt__")
        return paused[0].value if paused else None

    async def _approve(self, request: dict[str, Any], put: Callable[[Any], None]) -> bool:
        if self.on_approval is None or self.context.cancel.is_set():
            return False
        asked = _Ask(request, asyncio.get_running_loop().create_future(), turn_loop(self.agent).thread)
        self._asked = asked
        put(asked)
        try:
            return await asked.answer
        finally:
            self._asked = None

    def _discard_failed_run(self) -> None:
        """A turn that failed after ingest (a message too long for the context, a model that
        would not load) must not leave its message in the thread, unanswered, to ride along
        in every later prompt, nor a retry the exchange it took out: the checkpoint the run
        started from becomes the thread's newest again (found through the run's first
        checkpoint, so the normal path reads nothing). A new thread's failed first turn leaves
        no thread."""
        graph = self.agent.graph
        config = self.agent.config(self.thread_id)
        for snapshot in graph.get_state_history(config):
            metadata = snapshot.metadata or {}
            if metadata.get(RUN_KEY) == self.run_id and metadata.get("source") == "input":
                before = snapshot.parent_config
                break
        else:
            return  # nothing of this run was saved
        if before is None or not graph.get_state(before).values.get("messages"):
            self.agent.checkpointer.delete_thread(self.thread_id)
            return
        restore(graph, before)

    def _build_result(self, final: dict[str, Any], first: float | None, total: float) -> TurnResult:
        reply = final["messages"][-1]
        assert isinstance(reply, AIMessage)
        trace = dict(final.get("trace", {}))
        usage = trace.get("usage", {})
        ttft = (first - self._started) if first is not None else total
        timings = {**trace.get("timings", {}), "ttft_s": round(ttft, 4), "total_s": round(total, 4)}
        trace["timings"] = timings
        return TurnResult(
            reply=reply.text,
            thread_id=self.thread_id,
            model=self.agent.model_name,
            usage=Usage(**usage),
            timings=Timings(ttft_s=timings["ttft_s"], total_s=timings["total_s"]),
            trace=trace,
            interrupted=bool(reply.response_metadata.get("interrupted")),
            intent=str(final.get("intent") or ""),
            out_of_character=bool(reply.response_metadata.get("ooc")),
        )


# No tokenizer packs more than this many characters into a token of ordinary text (English
# averages ~4); a message longer than this times n_ctx cannot fit, whatever the model.
MAX_CHARS_PER_TOKEN = 32


def _check_size(text: str, n_ctx: int) -> None:
    """Refuse a message far too long for the context before the turn starts: a 10 MB message was
    tokenized, refused by compose, and its checkpoints (written, then rolled back) left the thread
    database 84 MB bigger and the thread's time moved."""
    if len(text) > MAX_CHARS_PER_TOKEN * n_ctx:
        raise InputTooLongError(
            f"the message is {len(text):,} characters: too long for n_ctx={n_ctx}; shorten it or raise n_ctx"
        )


def checked_thread_id(thread_id: object) -> str:
    """``thread_id``, when it is text (5 or None was an AttributeError from the thread lock)."""
    if not isinstance(thread_id, str):
        raise InvalidContextError(f"a thread id is text (str), not {type(thread_id).__name__}")
    return thread_id


def _persona(agent: Agent, thread_id: str, persona: str | None, greeting: int) -> str | None:
    """The persona the turn switches the thread to (a new thread without one plays
    ``settings.persona``); a bad name or greeting fails here, before anything is saved."""
    default = agent.settings.persona
    # Only a persona needs to know whether the thread is new (for its greeting).
    new_thread = bool(persona or default) and not thread_exists(agent.checkpointer, thread_id)
    if persona is None and default and new_thread:
        persona = default
    if persona is None:
        return None
    chosen = agent.personas.get(persona)
    if new_thread:
        opening_greeting(chosen, greeting, agent.settings.user_name, seed=thread_id)
    return chosen.name
