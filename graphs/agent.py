"""``Agent``: the turn graph with its model, checkpointer and settings, behind three calls.

``chat`` runs one turn and returns a ``TurnResult``; ``stream`` yields the reply as it is
generated (and ``.result`` afterwards); ``achat``/``astream`` are the async twins. Threads are
LangGraph threads: pass a ``thread_id`` to continue one.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore

from agentmm.errors import NothingToUndoError, RuntimeClosedError, SettingsError
from agentmm.exchange import SUMMARY_RECORD
from agentmm.graphs.chat import build_graph, model_and_tools, not_settings, persona_model
from agentmm.graphs.thread_edit import UndoneTurn, last_exchange, take_out
from agentmm.graphs.turn import Timings, TurnResult, TurnStream, Usage, checked_thread_id  # noqa: F401  (re-exported)
from agentmm.memory.conversation import forget_turn
from agentmm.personas import PersonaRegistry
from agentmm.runtime import Runtime
from agentmm.settings import Settings, load_settings
from agentmm.state import TurnContext
from agentmm.thread_lock import turn_on
from agentmm.threads import (
    async_checkpointer,
    close_saver,
    open_saver,
    settle_thread,
    thread_exists,
)

if TYPE_CHECKING:
    from agentmm.native_probe import NativeCheck


class Agent:
    """A chat agent over a LangGraph turn graph.

    With no arguments it runs the configured GGUF model (``Settings.model``), keeps threads in
    the data dir and, unless ``settings.memory`` is off, long-term memory in a Chroma store
    there. ``model`` is either a chat model to use (any ``BaseChatModel`` instance) or the
    model setting itself (a ``.gguf`` path as ``str`` or ``Path``, a shipped model's name such
    as ``"smollm2"``, or a hub id): ``Agent(model="m.gguf")`` is ``Agent(load_settings(model=
    "m.gguf"))``, resolved when the model is first needed. Pass ``checkpointer`` (any saver) or
    ``store`` (any ``BaseStore``) to replace one; keyword ``overrides`` are settings
    (``Agent(n_ctx=2048)``), checked as a flag is. ``tools`` are the tools the model may call; by
    default those named in ``settings.tools``, found among the built-ins, ``agentmm.tools``
    plugins and ``settings.tools_dir``.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        model: BaseChatModel | str | os.PathLike[str] | None = None,
        checkpointer: BaseCheckpointSaver | None = None,
        store: BaseStore | None = None,
        tools: Sequence[BaseTool | str] | None = None,
        **overrides: Any,
    ) -> None:
        model, tools, named = model_and_tools(model, tools)
        overrides.update(named)
        if settings is not None and not isinstance(settings, Settings):
            raise SettingsError(not_settings(settings))
        self.settings = settings.updated(**overrides) if settings is not None else load_settings(**overrides)
        # The model this agent was set up with, before a played persona's own took its place.
        self.configured_model = self.settings.model
        self._model = model
        self._checkpointer = checkpointer
        self._graph: CompiledStateGraph | None = None
        self._personas: PersonaRegistry | None = None
        self._store = store
        self._given_tools = [t for t in tools if isinstance(t, BaseTool)] if tools is not None else None
        self._tools: list[BaseTool] | None = None
        self._lock = threading.Lock()
        # What this agent opens (models, embedder, store, indexes) lives here and is closed by
        # ``close``; what the caller passed in is never registered, so never closed by it.
        self.runtime = Runtime("agent")

    @property
    def model(self) -> BaseChatModel:
        """The chat model: the one passed in, else the configured one: on the model server when
        ``settings.model_url`` is set (``agentmm.model_server``), else the GGUF, loaded into this
        agent's runtime (freed by ``close``)."""
        self._check_open()
        if self._model is None:
            from agentmm.model_server import chat_model

            self._model = self.runtime.get(
                "chat model", lambda: chat_model(self.settings, runtime=self.runtime), close=_close_model
            )
        return self._model

    def use_persona_model(self, persona: str | None) -> str | None:
        """Before anything is loaded: run on the played persona's own model (its ``model =``)
        instead of the configured one, unless a model was given for this run or passed in.
        The model now set, or None where the agent keeps its own."""
        if self._model is not None or self._graph is not None or not persona:
            return None
        wanted = persona_model(self.settings, self.personas.find(persona))
        if wanted is None or wanted == self.settings.model:
            return None
        self.settings = self.settings.updated(origin="persona", model=wanted)
        return wanted

    @property
    def model_name(self) -> str:
        name = getattr(self.model, "model_name", None) or getattr(self.model, "model", None)
        return str(name or type(self.model).__name__)

    @property
    def checkpointer(self) -> BaseCheckpointSaver:
        """The saver passed in, else the configured one (Postgres by ``checkpointer_url``, else
        the SQLite file in the data dir), opened in this agent's runtime, closed by ``close``."""
        self._check_open()
        if self._checkpointer is None:
            self._checkpointer = self.runtime.get("checkpointer", lambda: open_saver(self.settings), close=close_saver)
        return self._checkpointer

    @property
    def store(self) -> BaseStore | None:
        """Long-term memory (None when ``settings.memory`` is off and none was given): the store
        passed in, else the configured one, opened with its embedder in this agent's runtime."""
        self._check_open()
        if self._store is None and self.settings.memory:
            from agentmm.memory import open_store

            self._store = open_store(self.settings, runtime=self.runtime)
        return self._store

    def check_model(self, *, fresh: bool = False) -> NativeCheck | None:
        """Prove the chat model runs on this machine before the first turn: the built-in model
        answers one token in a child process (cached per build, model and CPU), so a native crash
        is a ``NativeCrashError`` here rather than a dead process mid-chat. None for other models."""
        check = getattr(self.model, "native_check", None)
        return check(fresh=fresh) if check is not None else None

    def warm_up(self) -> None:
        """Build the graph and load the chat model and the embedder now (e.g. on a background
        thread while the user types), so the first turn does not wait for them."""
        graph = self.graph
        load = getattr(self.model, "load", None)
        if load is not None:
            load()
        embeddings = getattr(self.store, "embeddings", None)
        if embeddings is not None and hasattr(embeddings, "load"):
            embeddings.load()
        del graph

    def close(self) -> None:
        """Close what this agent opened, newest first: the memory store (its Chroma client and
        the data dir's lock), the embedder, the loaded chat model, the thread database. What the
        caller passed in (a model, store or checkpointer) is theirs and stays usable. The agent
        is then closed for good: using it is a ``RuntimeClosedError``. Closing twice is a no-op."""
        self.runtime.close()

    def _check_open(self) -> None:
        if self.runtime.closed:
            raise RuntimeClosedError("this agent is closed: make a new Agent to go on")

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def personas(self) -> PersonaRegistry:
        """Built-ins, ``agentmm.personas`` entry points and ``settings.personas_dir``."""
        self._check_open()
        if self._personas is None:
            self._personas = PersonaRegistry(self.settings.personas_dir)
        return self._personas

    @property
    def tools(self) -> list[BaseTool]:
        """The tools this agent's model may call (an unknown name in settings is an error). Tools
        that name a factory (the built-in perception tools, given or named in settings) are built
        by it over this agent's settings and runtime (``agentmm.plugins.build_tools``): they use
        this agent's data dir and models, and what they open is closed by ``close``."""
        if self._tools is None:
            from agentmm.plugins import build_tools, enabled_tools

            if self._given_tools is not None:
                self._tools = build_tools(self._given_tools, self.settings, self.runtime)
            else:
                self._tools = enabled_tools(self.settings, self.runtime)
        return self._tools

    @staticmethod
    def attachment_kind(path: str | Path) -> str:
        """What an attachment really is by its bytes (``"image"``, ``"audio"``, ...), for a UI that
        checks a file when it is attached; a missing, empty or unreadable file is a typed error."""
        from agentmm.tools.media import sniff

        return sniff(path).kind

    @property
    def graph(self) -> CompiledStateGraph:
        with self._lock:
            if self._graph is None:
                self._graph = build_graph(self.settings, model=self.model, checkpointer=self.checkpointer,
                                          store=self.store, tools=self.tools, personas=self.personas,
                                          runtime=self.runtime)  # fmt: skip
        return self._graph

    def chat(
        self,
        text: str,
        thread_id: str | None = None,
        *,
        persona: str | None = None,
        greeting: int = 0,
        attachments: Sequence[str | Path] = (),
    ) -> TurnResult:
        """Run one turn and return its reply, usage, timings and trace.

        ``persona`` switches the thread to that persona (a new thread opens with greeting
        number ``greeting``); a new thread without one plays ``settings.persona`` if set.
        """
        turn = self.stream(text, thread_id, persona=persona, greeting=greeting, attachments=attachments)
        for _ in turn:
            pass
        return turn.result

    def stream(
        self,
        text: str,
        thread_id: str | None = None,
        *,
        persona: str | None = None,
        greeting: int = 0,
        attachments: Sequence[str | Path] = (),
    ) -> TurnStream:
        """One turn, yielding the reply's text as it is generated (``graphs/turn.py``)."""
        return TurnStream(self, text, thread_id, persona=persona, greeting=greeting, attachments=attachments)

    async def achat(
        self,
        text: str,
        thread_id: str | None = None,
        *,
        persona: str | None = None,
        greeting: int = 0,
        attachments: Sequence[str | Path] = (),
        on_approval: Callable[[dict[str, Any]], Any] | None = None,
    ) -> TurnResult:
        """``chat`` from a coroutine. Cancelling the task stops generation after the current
        token, frees the model, and keeps the partial reply, marked interrupted, before the
        ``CancelledError`` goes on. ``on_approval`` (may be async) answers tool approvals."""
        turn = self.stream(text, thread_id, persona=persona, greeting=greeting, attachments=attachments)
        turn.on_approval = on_approval
        return await turn.achat()

    async def astream(
        self,
        text: str,
        thread_id: str | None = None,
        *,
        persona: str | None = None,
        greeting: int = 0,
        attachments: Sequence[str | Path] = (),
        on_approval: Callable[[dict[str, Any]], Any] | None = None,
    ) -> AsyncIterator[str]:
        """Async twin of ``stream``: yields text chunks; cancelling or closing the iteration
        stops the reply as ``achat`` says. Leave it early inside ``contextlib.aclosing``:
        Python closes an async generator left by ``break`` only when it is collected, and the
        turn holds its thread until then."""
        turn = self.stream(text, thread_id, persona=persona, greeting=greeting, attachments=attachments)
        turn.on_approval = on_approval
        async with contextlib.aclosing(turn.astream()) as chunks:
            async for chunk in chunks:
                yield chunk

    async def astream_events(
        self,
        text: str,
        thread_id: str | None = None,
        *,
        persona: str | None = None,
        attachments: Sequence[str | Path] = (),
        on_approval: Callable[[dict[str, Any]], Any] | None = None,
        **filters: Any,
    ) -> AsyncIterator[Any]:
        """LangChain's event stream of one turn (``version="v2"``): model tokens
        (``on_chat_model_stream``), node starts and ends and tool runs (``on_tool_start``,
        ``on_tool_end``), for a web app to show as they happen. (The tool node's own progress
        dicts, ``tool_start``/``tool_end`` with the call's id and status, are LangGraph's
        ``stream_mode="custom"``, not events here: ``graph.stream(..., stream_mode="custom")``.) The turn is the
        same as ``achat``'s (greeting, approvals through ``on_approval``, rollback of a failed
        run); ``filters`` are ``astream_events``' ``include_``/``exclude_`` names, types, tags."""
        turn = self.stream(text, thread_id, persona=persona, attachments=attachments)
        turn.on_approval = on_approval
        async with contextlib.aclosing(turn.aevents(**filters)) as events:
            async for event in events:
                yield event

    @contextlib.asynccontextmanager
    async def async_graph(self) -> AsyncIterator[CompiledStateGraph]:
        """The turn graph for async LangGraph calls (``astream``, ``astream_events``, ``aget_state``)
        in the running event loop: over this agent's SQLite threads it checkpoints through
        LangGraph's ``AsyncSqliteSaver`` on the same file (``async_checkpointer``), closed on exit."""
        async with async_checkpointer(self.checkpointer) as saver:
            yield self.graph if saver is self.checkpointer else self.graph.copy(update={"checkpointer": saver})

    def config(self, thread_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id}}

    def undo(self, thread_id: str) -> UndoneTurn:
        """Take the thread's last exchange back out: the user's last message and everything after
        it (the reply, tool calls and their results), and the memories that turn wrote, so it is
        neither in later prompts nor recalled. The thread's greeting and persona stay; ``/why``
        explains the reply before it again. Returns what was taken out (``text``,
        ``attachments``: enough to send it again). ``ThreadNotFoundError`` for an unknown thread,
        ``NothingToUndoError`` for one with no message. The edit is a new checkpoint: LangGraph's
        history keeps the old ones."""
        with turn_on(self.checkpointer, checked_thread_id(thread_id)):
            self._settle(thread_id)
            exchange = last_exchange(self.graph, thread_id)
            if exchange is None:
                raise NothingToUndoError(f"nothing to undo in thread {thread_id}: it has no message yet")
            take_out(self.graph, exchange)
            forgotten = forget_turn(self.store, thread_id, exchange.turn) if self.store is not None else []
        return UndoneTurn(text=exchange.text, attachments=list(exchange.attachments), persona=exchange.persona,
                          turn=exchange.turn, messages_removed=exchange.messages,
                          memories_forgotten=forgotten)  # fmt: skip

    def retry(self, thread_id: str, *, seed: int | None = None) -> TurnStream:
        """Answer the thread's last message again: a ``TurnStream`` (iterate it as ``stream``'s)
        whose turn takes the last exchange out and sends the same message, with the same
        attachments, as the same turn; what that turn remembered is replaced once the new reply
        is saved. Nothing changes until it is iterated, and a retry that fails leaves the thread
        as it was. ``seed`` samples the new reply; by default a fresh one when the model samples
        with a fixed seed (``settings.seed``), so it does not write the same reply again.
        ``ThreadNotFoundError`` / ``NothingToUndoError`` as ``undo``."""
        with turn_on(self.checkpointer, checked_thread_id(thread_id)):
            paused = self._settle(thread_id)
            exchange = last_exchange(self.graph, thread_id)
        if exchange is None:
            raise NothingToUndoError(f"nothing to retry in thread {thread_id}: it has no message yet")
        if seed is None and getattr(self.model, "seed", None) is not None:
            seed = random.randrange(2**31)
        # A turn paused for a tool approval is rolled back when the next turn starts: its message
        # is then simply sent again, with nothing else to take out.
        turn = TurnStream(self, exchange.text, thread_id, attachments=exchange.attachments, retry=not paused,
                          seed=seed)  # fmt: skip
        turn.summary_before = {key: exchange.before.get(key, empty) for key, empty in SUMMARY_RECORD.items()}
        return turn

    def _settle(self, thread_id: str) -> bool:
        """Settle a turn a dead process left unfinished (``settle_thread``) before the thread's
        last exchange is read; a turn paused for a tool approval is left as it is, since it is
        that last exchange. True when the thread is paused so."""
        if thread_exists(self.checkpointer, thread_id) and self.graph.get_state(self.config(thread_id)).interrupts:
            return True
        settle_thread(self.graph, thread_id, context=self._settle_context())
        return False

    def _settle_context(self) -> TurnContext:
        """The context a turn a dead process left unfinished is finished with: this agent's
        user, none of a new turn's input."""
        settings = self.settings
        return TurnContext(user_name=settings.user_name, user_id=settings.user_id,
                           shared_memory=settings.shared_memory)  # fmt: skip


def _close_model(model: BaseChatModel) -> None:
    """Close what a chat model the agent made holds of its own (a model server's HTTP client);
    the GGUF model's memory is its runtime's, the agent's, closed with it."""
    close = getattr(model, "close", None)
    if close is not None:
        close()
