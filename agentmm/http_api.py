"""``agentmm serve``: the agent behind an HTTP API (Starlette, run by uvicorn).

Every worker process holds one agent (``open_agent()``, made by the CLI: this module sits under
``agentmm/`` and names no graph class, as the terminal chat does not). Workers keep nothing of a
thread between requests: threads live in the configured saver (Postgres for a fleet), memory in
the configured store, so any worker can answer any thread. A turn on a thread that is already
answering (in this worker or another) is refused with 409, never interleaved.

Routes (JSON in and out; errors are ``{"error": "<one line>"}`` with a status code: 400 a bad request,
413 a body over ``MAX_BODY_BYTES`` (refused unread), 404 an unknown thread, memory or persona, 409
a busy thread, 503 what the worker depends on (its model, a database, the data dir, the memory
store) missing or failing):

- ``POST /chat`` ``{"message", "thread_id"?, "persona"?, "greeting"?, "stream"?}``: one turn. The
  answer is the turn as ``agentmm chat --json`` prints it; with ``"stream": true`` (or ``Accept:
  text/event-stream``) server-sent events instead: ``token`` (data: a JSON string) as the reply
  is generated, then ``done`` (data: that same turn object), or ``error`` (data: ``{"error",
  "status"}``) if the turn fails after it started. A client that goes away stops the reply.
- ``GET /threads``, ``GET /threads/{id}``, ``DELETE /threads/{id}``: as ``agentmm threads
  list/show/delete --json``.
- ``GET /memories?persona=&user=&limit=``, ``GET /memories/search?q=&persona=&user=&k=``,
  ``POST /memories`` ``{"text", "persona"?, "user"?, "shared"?}``, ``DELETE /memories/{id}?persona=&user=``:
  as ``agentmm memory list/search/add/forget --json``.
- ``GET /personas``, ``GET /personas/{name}`` (the rest of the path): as ``agentmm personas
  list/show --json``. A route that names a persona re-reads the personas folder when it changed.
- ``GET /health`` (the process answers) and ``GET /ready`` (503 until the agent is open and its
  model and stores answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agentmm.errors import AgentmmError, ThreadNotFoundError
from agentmm.thread_lock import ThreadInUseError

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.store.base import BaseStore
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from agentmm.personas import PersonaRegistry
    from agentmm.settings import Settings


class ServedTurn(Protocol):
    """One turn as the API plays it (``Agent.stream``'s ``TurnStream``)."""

    def astream(self) -> AsyncIterator[str]: ...

    async def achat(self) -> Any: ...

    @property
    def result(self) -> Any: ...


class ServedAgent(Protocol):
    """What the API needs of an agent (``agentmm.graphs.agent.Agent`` satisfies it)."""

    settings: Settings

    @property
    def checkpointer(self) -> BaseCheckpointSaver: ...

    @property
    def store(self) -> BaseStore | None: ...

    @property
    def personas(self) -> PersonaRegistry: ...

    def check_model(self) -> Any: ...

    def warm_up(self) -> None: ...

    def close(self) -> None: ...

    def stream(self, text: str, thread_id: str | None = None, *, persona: str | None = None,
               greeting: int = 0) -> ServedTurn: ...  # fmt: skip


class BadRequestError(AgentmmError):
    """A request the API cannot take (not JSON, a field of the wrong type)."""


class BodyTooLargeError(BadRequestError):
    """A request body over ``MAX_BODY_BYTES`` (413): refused before or while it is read, not parsed."""


class ClientGoneError(AgentmmError):
    """The client of a JSON (not streamed) turn went away before its reply: the turn was stopped."""


# The largest request body read: a message is text (attachments are paths, not uploads), and a
# few MB is far more than any model's context holds, so a larger body is refused with 413 before
# it fills the worker's memory (a 60 MB body was read and parsed whole, ~700 MB, to say 400).
MAX_BODY_BYTES = 4 * 1024 * 1024

# How often a JSON turn looks whether its client is still there.
_DISCONNECT_POLL_S = 0.25


# A thread a client names itself must be reachable at /threads/{id}: no "/", no control
# characters, nothing a URL path normalises away ("..").
NEW_THREAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")


def status_of(exc: BaseException) -> int:
    """The HTTP status of an agentmm error: 409 a busy thread, 404 something unknown, 503 what the
    worker depends on failing (its model or model server, a database, the data dir, the memory
    store), 499 a client that went away, 400 the rest."""
    from agentmm.errors import DataDirError, ModelError, ModelServerError
    from agentmm.memory.errors import StoreDamagedError, StoreInUseError, StoreUnreachableError
    from agentmm.memory.manage import MemoryNotFoundError
    from agentmm.personas import PersonaNotFoundError
    from agentmm.postgres import DatabaseError

    if isinstance(exc, ThreadInUseError):
        return 409
    if isinstance(exc, (ThreadNotFoundError, MemoryNotFoundError, PersonaNotFoundError)):
        return 404
    if isinstance(exc, ClientGoneError):
        return 499  # nginx's "client closed request": nobody reads it
    if isinstance(exc, BodyTooLargeError):
        return 413
    # What the worker depends on, not the request: its model, its databases, its data dir.
    unavailable = (ModelServerError, ModelError, DatabaseError, DataDirError, StoreUnreachableError, StoreInUseError,
                   StoreDamagedError)  # fmt: skip
    if isinstance(exc, unavailable):
        return 503
    return 400


def make_app(open_agent: Callable[[], ServedAgent]) -> Starlette:
    """The ASGI app; ``open_agent`` is called once per worker, at startup (its agent is closed at
    shutdown)."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    holder: dict[str, Any] = {"agent": None, "ready": False, "error": None}

    async def warm(agent: ServedAgent) -> None:
        try:
            await asyncio.to_thread(_warm, agent)
            holder["ready"] = True
        except AgentmmError as exc:  # not ready, and /ready says why; /health still answers
            holder["error"] = exc.for_http()
        except Exception as exc:  # a bug: /ready says it too, rather than "starting" for ever
            holder["error"] = f"{type(exc).__name__}: {exc}"
            raise

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        agent = await asyncio.to_thread(open_agent)
        holder["agent"] = agent
        # The worker answers /health at once and /ready once the model and stores are open: a
        # model may take a while to load, and a load balancer should wait for ready, not health.
        warming = asyncio.create_task(warm(agent))
        try:
            yield
        finally:
            await asyncio.gather(warming, return_exceptions=True)
            await asyncio.to_thread(agent.close)

    def agent_of() -> ServedAgent:
        if holder["agent"] is None:
            raise AgentmmError("the agent is not open yet")
        return holder["agent"]  # type: ignore[no-any-return]

    api = _Routes(agent_of)
    routes = [
        Route("/health", lambda request: _json({"ok": True, "pid": os.getpid()})),
        Route("/ready", lambda request: _ready(holder)),
        Route("/chat", api.chat, methods=["POST"]),
        Route("/threads", api.threads),
        Route("/threads/{thread_id}", api.thread, methods=["GET", "DELETE"]),
        Route("/memories", api.memories, methods=["GET", "POST"]),
        Route("/memories/search", api.memory_search),
        Route("/memories/{memory_id}", api.memory_forget, methods=["DELETE"]),
        Route("/personas", api.personas),
        Route("/personas/{name:path}", api.persona),  # the rest of the path: a name may hold "/"
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 (a method the route does not take), as JSON
    like every other error, instead of text/plain."""
    status = getattr(exc, "status_code", 500)
    return _json({"error": f"{getattr(exc, 'detail', '')}: {request.method} {request.url.path}"}, status=status)


def _warm(agent: ServedAgent) -> None:
    """Open what a turn needs (model, saver, store) before the worker says it is ready."""
    agent.check_model()  # a model that would crash this CPU is a NativeCrashError here, not a dead worker
    agent.warm_up()  # builds the graph: opens the saver and the store too


class _Routes:
    def __init__(self, agent_of: Callable[[], ServedAgent]) -> None:
        self.agent_of = agent_of
        self._folder_seen: object = _UNSEEN  # the personas folder as the registry last read it
        self._folder_lock = threading.Lock()

    def _registry(self) -> PersonaRegistry:
        """The agent's registry, read again when the personas folder changed since (a persona
        imported, edited or removed while the server runs): one listing of the folder per call,
        cheap next to a turn, where a restart was the only way to see a new persona."""
        registry = self.agent_of().personas
        state = _folder_state(registry.user_dir)
        with self._folder_lock:
            if state != self._folder_seen:
                registry.reload()
                self._folder_seen = state
        return registry

    async def chat(self, request: Request) -> Response:
        return await _guarded(self._chat, request)

    async def _chat(self, request: Request) -> Response:
        from agentmm.threads import thread_exists

        body = await _body(request)
        message = _field(body, "message", str, required=True)
        thread_id = _field(body, "thread_id", str)
        persona = _field(body, "persona", str)
        greeting = _field(body, "greeting", int) or 0
        wants_events = bool(_field(body, "stream", bool)) or "text/event-stream" in request.headers.get("accept", "")
        agent = self.agent_of()
        await asyncio.to_thread(self._registry)  # a persona imported since the server started is played
        begun = thread_id is not None and await asyncio.to_thread(thread_exists, agent.checkpointer, thread_id)
        if thread_id is not None and not begun and not NEW_THREAD_ID.fullmatch(thread_id):
            raise BadRequestError(f"thread_id {thread_id!r} cannot name a new thread: use up to 128 letters, "
                                  "digits and . _ : @ -, starting with a letter or digit")  # fmt: skip
        if greeting and begun:  # as `chat --greeting` says: it was taken and ignored
            raise BadRequestError(f"greeting opens a new thread; thread {thread_id} has begun (leave thread_id out)")
        if greeting and persona is None and not agent.settings.persona:
            raise BadRequestError('greeting picks a persona\'s greeting: add "persona"')
        turn = agent.stream(message, thread_id, persona=persona, greeting=greeting)
        if not wants_events:
            return _json((await _unless_gone(request, turn.achat())).to_json())
        return await _event_stream(turn)

    async def threads(self, request: Request) -> Response:
        return await _guarded(self._threads, request)

    async def _threads(self, request: Request) -> Response:
        from agentmm.threads import list_threads

        agent = self.agent_of()
        found = await asyncio.to_thread(list_threads, agent.checkpointer)
        return _json({"threads": [t.to_dict() for t in found]})

    async def thread(self, request: Request) -> Response:
        return await _guarded(self._thread, request)

    async def _thread(self, request: Request) -> Response:
        from agentmm.threads import delete_thread, thread_dict

        agent = self.agent_of()
        thread_id = request.path_params["thread_id"]
        if request.method == "DELETE":
            await asyncio.to_thread(delete_thread, agent.checkpointer, thread_id)
            return _json({"deleted": thread_id})
        return _json(await asyncio.to_thread(thread_dict, agent.checkpointer, thread_id))

    async def memories(self, request: Request) -> Response:
        return await _guarded(self._memories, request)

    async def _memories(self, request: Request) -> Response:
        from agentmm.memory.manage import add_memory, list_memories

        store = self._store()
        if request.method == "POST":
            body = await _body(request)
            text = _field(body, "text", str, required=True)
            user = _field(body, "user", str) or self.agent_of().settings.user_id
            persona, shared = _field(body, "persona", str), bool(_field(body, "shared", bool))
            if persona is not None:  # the persona's own name, as its turns recall by: "nora quill" is Nora Quill
                persona = self._registry().get(persona).name
            settings = self.agent_of().settings
            cap = settings.memory_max_tokens  # a long text in pieces, as memory add stores it
            row = await asyncio.to_thread(add_memory, store, user, persona, text, shared=shared,
                                          speaker=settings.user_name, max_tokens=cap)  # fmt: skip
            return _json(row, status=201)
        query = request.query_params
        limit = _int_param("limit", query.get("limit"), 50)
        rows = await asyncio.to_thread(list_memories, store, self._user(query), self._persona_named(query), limit)
        return _json({"memories": rows})

    async def memory_search(self, request: Request) -> Response:
        return await _guarded(self._memory_search, request)

    async def _memory_search(self, request: Request) -> Response:
        from agentmm.memory.conversation import recall
        from agentmm.memory.manage import user_scopes

        store, query = self._store(), request.query_params
        text = query.get("q")
        if not text:
            raise BadRequestError("q (the text to search for) is required")
        k = _int_param("k", query.get("k"), 10)

        def search() -> list[dict[str, Any]]:
            user, persona = self._user(query), self._persona_named(query)
            if persona is not None and (registry := self._registry()).find(persona) is None:
                _known_scope(store, user, persona, registry)  # a deleted persona's memories can still be searched
            scopes = user_scopes(store, user, persona)
            settings = self.agent_of().settings
            found = recall(store, scopes, text, k=k, min_similarity=0.0, now=datetime.now(UTC),
                           by_date=settings.memory_by_date, rerank=settings.memory_rerank)  # fmt: skip
            return [r.as_trace() for r in found]

        return _json({"results": await asyncio.to_thread(search)})

    async def memory_forget(self, request: Request) -> Response:
        return await _guarded(self._memory_forget, request)

    async def _memory_forget(self, request: Request) -> Response:
        from agentmm.memory.manage import forget

        store, query = self._store(), request.query_params
        memory_id = request.path_params["memory_id"]
        row = await asyncio.to_thread(forget, store, self._user(query), self._persona_named(query), memory_id)
        return _json({**row, "forgotten": row})  # as `memory forget --json` says it; its own keys kept as before

    async def personas(self, request: Request) -> Response:
        return await _guarded(self._personas, request)

    async def _personas(self, request: Request) -> Response:
        from agentmm.personas import persona_summary

        registry = await asyncio.to_thread(self._registry)
        found = await asyncio.to_thread(lambda: [persona_summary(p) for p in registry])
        return _json({"personas": found, "problems": registry.problems})

    async def persona(self, request: Request) -> Response:
        return await _guarded(self._persona, request)

    async def _persona(self, request: Request) -> Response:
        registry = await asyncio.to_thread(self._registry)
        persona = registry.get(request.path_params["name"])
        return _json(persona.model_dump(mode="json", exclude={"card", "image"}))

    def _store(self) -> BaseStore:
        store = self.agent_of().store
        if store is None:
            raise BadRequestError("long-term memory is off (memory = false)")
        return store

    def _user(self, query: Any) -> str:
        return str(query.get("user") or self.agent_of().settings.user_id)

    def _persona_named(self, query: Any) -> str | None:
        return self._registry().known_as(query.get("persona"))


def _known_scope(store: BaseStore, user: str, persona: str, registry: PersonaRegistry) -> None:
    """Refuse (404, as ``POST /memories`` does) a persona no registry knows and no memory is
    kept under: a search there is a typo, not an empty result."""
    from agentmm.memory.conversation import scope

    if not store.list_namespaces(prefix=scope(user, persona), limit=1):
        registry.get(persona)  # its PersonaNotFoundError, with close names


_UNSEEN = object()


def _folder_state(folder: Path | None) -> object:
    """What changes when a persona file in ``folder`` is added, removed, renamed or rewritten:
    each entry's name, size and modification time (an edit in place leaves the folder's own
    mtime alone)."""
    if folder is None:
        return None
    try:
        with os.scandir(folder) as entries:
            return sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in entries)
    except FileNotFoundError:
        return ()
    except OSError as exc:  # the reload says what is wrong with the folder, in /personas' problems
        return ("error", str(exc))


async def _event_stream(turn: ServedTurn) -> Response:
    """The turn as server-sent events. Its first piece is awaited before the response starts, so
    a refused turn (a busy thread: 409, a bad persona: 404) is a plain JSON error, not a stream."""
    from sse_starlette import EventSourceResponse

    chunks = turn.astream()
    try:
        first: str | None = await anext(chunks)
    except StopAsyncIteration:
        first = None

    async def events() -> AsyncIterator[dict[str, str]]:
        async with contextlib.aclosing(chunks):
            try:
                if first is not None:
                    yield {"event": "token", "data": json.dumps(first, ensure_ascii=False)}
                async for piece in chunks:
                    yield {"event": "token", "data": json.dumps(piece, ensure_ascii=False)}
            except AgentmmError as exc:
                yield {"event": "error", "data": json.dumps({"error": exc.for_http(), "status": status_of(exc)})}
                return
        yield {"event": "done", "data": json.dumps(turn.result.to_json(), ensure_ascii=False)}

    return EventSourceResponse(events(), ping=15)


async def _unless_gone(request: Request, answer: Any) -> Any:
    """``answer`` (a turn's ``achat()``) awaited, or cancelled as soon as the client goes away:
    the turn then ends as a stopped one does (partial reply kept, marked interrupted) and the
    thread is free for the next request, not held for the whole reply nobody will read."""
    task = asyncio.ensure_future(answer)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise ClientGoneError("the client went away; the reply was stopped")
        return task.result()
    finally:
        if not task.done():
            task.cancel()


async def _guarded(handler: Callable[[Request], Any], request: Request) -> Response:
    """``handler``'s response, or an agentmm error as ``{"error": ...}`` with its status."""
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except AgentmmError as exc:
        return _json({"error": exc.for_http()}, status=status_of(exc))


def _ready(holder: dict[str, Any]) -> Response:
    if holder["ready"]:
        return _json({"ready": True, "pid": os.getpid()})
    return _json({"ready": False, "error": holder["error"] or "starting"}, status=503)


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object, read no further than ``MAX_BODY_BYTES`` (by its Content-Length
    first, then as it comes, for a chunked body), each way it can be unreadable said in words."""
    raw = await _read_limited(request)
    if not raw.strip():
        raise BadRequestError("the request body is empty: send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"the request body is not UTF-8 text (byte {exc.start}): send a JSON object") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequestError(f"the request body is not JSON: {exc}") from exc
    except RecursionError as exc:  # [[[...]]] nested beyond Python's recursion limit
        raise BadRequestError("the request body is not JSON we can read: it is nested too deeply") from exc
    except ValueError as exc:  # an integer of more than 4,300 digits (Python's int limit)
        raise BadRequestError("the request body is not JSON we can read: a number in it is too long") from exc
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body


async def _read_limited(request: Request) -> bytes:
    """The body, or ``BodyTooLargeError`` as soon as it is known to be over ``MAX_BODY_BYTES``."""
    too_large = f"the request body is over {MAX_BODY_BYTES // (1024 * 1024)} MB"
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLargeError(f"{too_large} (Content-Length {int(declared)})")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLargeError(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def _field(body: dict[str, Any], name: str, kind: type, *, required: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequestError(f"{name} is required")
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        article = "an" if kind.__name__[0] in "aeiou" else "a"
        raise BadRequestError(f"{name} must be {article} {kind.__name__}")
    return value


def _int_param(name: str, value: str | None, default: int) -> int:
    """The query parameter ``name`` as a count, named in its error as the CLI names a flag."""
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequestError(f"{name} must be a whole number, not {value!r}") from None
    if number < 1:
        raise BadRequestError(f"{name} must be at least 1, not {value}")
    return number


def _json(data: Any, status: int = 200) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse(data, status_code=status)
