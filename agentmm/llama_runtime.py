"""The llama.cpp runtime under ``ChatLlamaCpp``: loading GGUF models into a ``Runtime``.

A loaded ``Llama`` belongs to the ``agentmm.runtime.Runtime`` it was loaded into (an Agent's,
or a ``ChatLlamaCpp``'s private one): one per model file and context settings there, shared by
every model object of that runtime (and by their copies and tool bindings), so llama.cpp's
prefix KV cache is hit from one turn to the next; closing the runtime frees it. Two runtimes
never share one, so two agents with different settings cannot see each other's KV cache. Its
lock lets one generation run at a time (``generated_apart`` says how it is held). A model no
runtime closes is freed when its ``LoadedModel`` is collected, or at exit (``weakref.finalize``:
llama-cpp-python's own finaliser fails noisily during interpreter shutdown).

Loading also: checks the file first (``check_model_file``: typed errors before llama.cpp
opens it), resolves GPU layers, takes the CPU-buffer choice (``agentmm.cpu_buffers``, proven
by ``agentmm.native_probe``), loads the image projector when there is one, and routes
llama.cpp's log through a callback instead of llama-cpp-python's process-wide redirect of
stdout/stderr (``_quiet_without_redirecting`` says why).

Module-level state, and why it is not a cache: llama.cpp has one log callback per process (a C
global, ``llama_log_set``), so the callback (``_LOG_STATE``), who asked for its lines and the
errors it saw (``_LOG_ERRORS``, read by ``last_error`` right after a failing call) are
process-wide facts, kept where that one callback can reach them. A log line does not say which
model wrote it, so llama.cpp logs while any open model was loaded ``verbose`` (``_VERBOSE``),
and while a load asks for it, on the loading thread (``_LOADING``). It was the last load's
``verbose`` that decided: a quiet caption model loaded for a picture silenced the logs of a
chat model loaded with ``verbose = true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from agentmm.cpu_buffers import buffered_llama_class
from agentmm.errors import CorruptModelError
from agentmm.llama_images import vision_handler_class
from agentmm.runtime import Runtime

if TYPE_CHECKING:
    import llama_cpp

    from agentmm.character_guard import GuardTokens
    from agentmm.gguf import GGUFInfo

T = TypeVar("T")

GpuLayers = int | Literal["auto"]


@dataclass
class CallStats:
    """What the last generation cost: filled in by the tracking ``Llama`` subclass."""

    prompt_tokens: int = 0
    reused_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class LoadedModel:
    """One loaded ``Llama`` and what is kept with it: its lock (one generation at a time), its
    usage counters and per-vocabulary caches the tool-calling strategies fill."""

    llama: llama_cpp.Llama
    lock: threading.Lock
    stats: CallStats
    gpu_layers: int
    pieces: list[bytes] | None = None
    start_bias: dict[tuple[str, ...], dict[int, float]] = field(default_factory=dict)
    no_bracket_bias: dict[int, float] | None = None
    no_call_bias: dict[int, float] | None = None
    end_tokens: list[int] | None = None  # ``agentmm.words_first``, found on first use
    guard_tokens: GuardTokens | None = None  # ``agentmm.character_guard``, built on first use
    # The multimodal chat handler over the image projector, when the model has one.
    vision: Any = None
    # The GGUF template's formatter, for replies begun with given words (``agentmm.reply_start``).
    chat_formatter: Any = None

    def __post_init__(self) -> None:
        # Freed when this object goes, or at exit while the interpreter is whole, whichever is
        # first; ``close`` frees it at once. Closing a Llama twice is harmless.
        self._finalizer = weakref.finalize(self, _free, self.llama, self.lock)

    @property
    def chat_template(self) -> str:
        """The GGUF's own chat template ('' when it has none)."""
        return str(self.llama.metadata.get("tokenizer.chat_template", ""))

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Free the model's memory now, under its lock (a generation running finishes first)."""
        with self.lock:
            self._finalizer.detach()
            _VERBOSE.discard(self.llama)
            self.llama.close()


EXIT_WAIT_S = 5.0


def _free(llama: llama_cpp.Llama, lock: threading.Lock) -> None:
    """Free a model nobody closed (collected, or at exit): under its lock, as ``close`` does, since
    freeing it under a generation thread still making tokens crashes llama.cpp (SIGSEGV). A
    generation that does not let go within ``EXIT_WAIT_S`` keeps the model: the process is going,
    and the OS frees its memory."""
    if lock.acquire(timeout=EXIT_WAIT_S):
        try:
            llama.close()
        finally:
            lock.release()


def gpu_offload_available() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def resolve_gpu_layers(setting: GpuLayers) -> int:
    """'auto' -> -1 (every layer) where llama.cpp was built with GPU offload, else 0."""
    if setting == "auto":
        return -1 if gpu_offload_available() else 0
    return int(setting)


def _tracking_llama_class() -> type[llama_cpp.Llama]:
    """A ``Llama`` that records, per call, prompt size, prefix-cache reuse and tokens generated.

    ``Llama.generate`` is where llama-cpp-python matches the new prompt against the tokens
    already in the KV cache; wrapping it is the one place to see the reuse.
    """
    import llama_cpp

    class TrackingLlama(buffered_llama_class()):  # type: ignore[misc,valid-type]
        stats: CallStats

        def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:
            stats = self.stats
            stats.prompt_tokens = len(tokens)
            prefix = self.longest_token_prefix(self._input_ids.tolist(), tokens) if self.n_tokens else 0
            stats.reused_tokens = min(prefix, max(len(tokens) - 1, 0))
            stats.completion_tokens = 0
            vocab = self._model.vocab
            for token in super().generate(tokens, *args, **kwargs):
                if not llama_cpp.llama_vocab_is_eog(vocab, token):
                    stats.completion_tokens += 1
                yield token

    return TrackingLlama


class _NoRedirect:
    """Stands in for llama-cpp-python's ``suppress_stdout_stderr``: does nothing."""

    def __init__(self, disable: bool = True) -> None:
        pass

    def __enter__(self) -> _NoRedirect:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_LOG_STATE: dict[str, Any] = {}
_LOG_ERRORS: deque[str] = deque(maxlen=8)
_VERBOSE: weakref.WeakSet[Any] = weakref.WeakSet()  # the open Llamas loaded verbose
_LOADING = threading.local()  # .verbose: the load running on this thread asked for logs
_GGML_LOG_LEVEL_ERROR = 4


def _quiet_without_redirecting() -> None:
    """Keep llama.cpp quiet without touching the process's stdout and stderr.

    llama-cpp-python silences a model load by pointing ``sys.stdout``/``sys.stderr`` and file
    descriptors 1 and 2 at /dev/null: for the whole process, not just the loading thread. The
    chat loads its model on a background thread while the main thread prints its header and
    starts the line editor; what the main thread wrote then was lost, and the line editor,
    created in that window, kept writing to /dev/null for good (an empty terminal). So the
    redirect is switched off and llama.cpp's log callback decides instead: silent unless a
    model asked for its logs (``_logs_wanted``).
    """
    import llama_cpp
    import llama_cpp._internals
    import llama_cpp.llama

    if "callback" not in _LOG_STATE:

        @llama_cpp.llama_log_callback
        def log(level: int, text: bytes, user_data: Any) -> None:
            line = text.decode("utf-8", "replace")
            if level == _GGML_LOG_LEVEL_ERROR and line.strip():
                _LOG_ERRORS.append(line.strip())
            if _logs_wanted():
                sys.stderr.write(line)

        _LOG_STATE["callback"] = log  # kept alive: llama.cpp holds only a pointer to it
        llama_cpp.llama_log_set(log, None)
        try:  # libmtmd (image projectors) logs through its own hook
            import llama_cpp.mtmd_cpp

            llama_cpp.mtmd_cpp.mtmd_log_set(log, None)
            llama_cpp.mtmd_cpp.mtmd_helper_log_set(log, None)
        except (ImportError, AttributeError, OSError, TypeError):  # built without libmtmd
            pass
        llama_cpp.llama.suppress_stdout_stderr = _NoRedirect  # type: ignore[attr-defined,misc]
        llama_cpp._internals.suppress_stdout_stderr = _NoRedirect  # type: ignore[attr-defined,misc]
        import llama_cpp.llama_chat_format  # the multimodal handlers redirect the same way

        llama_cpp.llama_chat_format.suppress_stdout_stderr = _NoRedirect  # type: ignore[attr-defined,misc]


def _logs_wanted() -> bool:
    return bool(_VERBOSE) or getattr(_LOADING, "verbose", False)


def check_model_file(model_path: str, n_ctx: int, layers: int, *, info: GGUFInfo | None = None) -> GGUFInfo:
    """What can be told from the file before llama.cpp opens it: a damaged GGUF, or a model that
    cannot fit in free memory (typed errors, before any load or probe). ``info``: its header as
    already read (``ChatLlamaCpp.gguf_info``), else it is read here."""
    from agentmm.gguf import read_gguf
    from agentmm.models import check_fits_in_memory

    info = info if info is not None else read_gguf(Path(model_path))
    if layers == 0:
        check_fits_in_memory(info, n_ctx)
    return info


def load_model(
    model_path: str, *, n_ctx: int, n_gpu_layers: GpuLayers, n_threads: int | None, n_batch: int,
    chat_format: str | None, verbose: bool, mmproj_path: str | None = None, extra_buffers: bool = True,
    runtime: Runtime | None = None, info: GGUFInfo | None = None,
) -> LoadedModel:  # fmt: skip
    """The loaded model for these settings in ``runtime`` (loaded there on first call, then
    shared; closed with the runtime). Without a runtime a new one is loaded each call and the
    caller owns it (``LoadedModel.close``).

    With ``mmproj_path`` the image projector is loaded too, at once, so a projector that does
    not fit the model fails here, in one line, rather than on the first picture.
    ``extra_buffers`` is llama.cpp's ``use_extra_bufts`` (``agentmm.cpu_buffers`` decides it).
    ``info``: the file's GGUF header as already read (else it is read before the load).
    """
    layers = resolve_gpu_layers(n_gpu_layers)
    mmproj = str(Path(mmproj_path).resolve()) if mmproj_path else None

    def open_() -> LoadedModel:
        return _load(model_path, n_ctx=n_ctx, layers=layers, n_threads=n_threads, n_batch=n_batch,
                     chat_format=chat_format, verbose=verbose, mmproj=mmproj, extra_buffers=extra_buffers,
                     info=info)  # fmt: skip

    if runtime is None:
        return open_()
    key = ("llama", str(Path(model_path).resolve()), n_ctx, layers, n_threads, n_batch, chat_format, mmproj,
           extra_buffers)  # fmt: skip
    return runtime.get(key, open_, close=LoadedModel.close)


def _load(
    model_path: str, *, n_ctx: int, layers: int, n_threads: int | None, n_batch: int, chat_format: str | None,
    verbose: bool, mmproj: str | None, extra_buffers: bool, info: GGUFInfo | None = None,
) -> LoadedModel:  # fmt: skip
    info = check_model_file(model_path, n_ctx, layers, info=info)
    llama_class = _tracking_llama_class()
    _quiet_without_redirecting()
    _LOADING.verbose = verbose
    try:
        try:
            llama = llama_class(
                model_path=str(model_path), n_ctx=n_ctx, n_gpu_layers=layers, n_threads=n_threads,
                n_batch=n_batch, chat_format=chat_format, verbose=verbose, extra_buffers=extra_buffers,
            )  # fmt: skip
        except ValueError as exc:
            raise CorruptModelError(f"llama.cpp cannot load {model_path}: {exc}") from exc
        llama.stats = CallStats()
        try:
            vision = _load_vision(llama, model_path, mmproj, use_gpu=layers != 0) if mmproj else None
        except BaseException:
            llama.close()
            raise
        if verbose:
            _VERBOSE.add(llama)
    finally:
        _LOADING.verbose = False
    offloaded = min(layers if layers >= 0 else 1 << 30, (info.block_count or 0) + 1)
    return LoadedModel(llama, threading.Lock(), llama.stats, offloaded, vision=vision)


def last_error(exc: Exception) -> str:
    """llama.cpp's last logged error (it says why; the Python exception rarely does), on one line."""
    text = _LOG_ERRORS[-1] if _LOG_ERRORS else str(exc)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _load_vision(llama: llama_cpp.Llama, model_path: str, mmproj: str, *, use_gpu: bool) -> Any:
    """The multimodal chat handler over ``mmproj``, its projector loaded against ``llama``."""
    from agentmm.gguf import read_gguf

    name = Path(mmproj).name
    info = read_gguf(Path(mmproj))
    if info.architecture != "clip":
        raise CorruptModelError(f"{name} is not an image projector (mmproj) GGUF: it is a {info.architecture} model")
    clear_errors()
    try:
        handler = vision_handler_class()(clip_model_path=mmproj, verbose=llama.verbose, use_gpu=use_gpu)
        init = getattr(handler, "_init_mtmd_context", None)
        if init is not None:
            init(llama)
    except (ValueError, RuntimeError, OSError) as exc:
        why = last_error(exc)
        model = Path(model_path).name
        raise CorruptModelError(f"llama.cpp cannot use {name} as the image projector of {model}: {why}") from exc
    return handler


def vocab_pieces(loaded: LoadedModel) -> list[bytes]:
    """Each token's text, by id (read once per loaded model, ~0.1 s)."""
    if loaded.pieces is None:
        model = loaded.llama._model
        loaded.pieces = [model.token_to_piece(i).rstrip(b"\x00") for i in range(loaded.llama.n_vocab())]
    return loaded.pieces


def add_stats(total: CallStats, call: CallStats) -> None:
    """Usage over the generations of one reply (a tool decision, a call, the answer): prompt
    size and reuse of the last, tokens generated by all."""
    total.prompt_tokens, total.reused_tokens = call.prompt_tokens, call.reused_tokens
    total.completion_tokens += call.completion_tokens


def clear_errors() -> None:
    """Forget llama.cpp's logged errors, so the next ``last_error`` is about the next call."""
    _LOG_ERRORS.clear()


def _produce_apart(
    lock: threading.Lock, produce: Callable[[], Iterator[T]], put: Callable[[tuple[str, Any]], None]
) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """Start ``produce()`` under ``lock`` on a thread of its own, handing each item to ``put`` as
    ``("item", x)``, then an ``("error", exc)`` if it raised, then ``("done", None)``; the
    thread, the event that asks it to stop after the item it is making, and the one it sets once
    it holds the lock (so a stop that finds it unset knows the producer will never start)."""
    stop = threading.Event()
    started = threading.Event()

    def work() -> None:
        try:
            with lock:
                started.set()
                if stop.is_set():
                    return
                chunks = produce()
                try:
                    for chunk in chunks:
                        put(("item", chunk))
                        if stop.is_set():
                            break
                finally:
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()  # stops llama-cpp-python's own stream now, under the lock
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))
        finally:
            put(("done", None))

    producer = threading.Thread(target=work, name="llama-generate", daemon=True)
    producer.start()
    return producer, stop, started


def generated_apart(lock: threading.Lock, produce: Callable[[], Iterator[T]]) -> Iterator[T]:
    """Run ``produce()`` under ``lock`` on a thread of its own, and yield what it yields.

    The model lock guards llama.cpp's one context: it must be held while tokens are made, but
    not while the *caller* runs between two chunks. Held across a ``yield``, as a generator
    holding it would, a consumer that stops iterating without closing the stream (or takes
    minutes over each chunk) keeps every other turn waiting on the model, forever if it never
    lets go of the generator. So generation runs on its own thread into an unbounded queue: the
    lock is held for as long as making the tokens takes (bounded by ``max_tokens``), whatever
    the consumer does. Closing this generator (``close()``, garbage collection, an exception
    in the consumer) asks the producer to stop after the chunk it is making, and waits for that
    when it has begun, so the model is free when ``close()`` returns. Errors raised while
    producing (typed ones included) are raised here, in the consumer. ``agenerated_apart`` is
    the async twin.
    """
    items: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    producer, stop, started = _produce_apart(lock, produce, items.put)
    try:
        while True:
            kind, value = items.get()
            if kind == "error":
                raise value
            if kind == "done":
                return
            yield value
    finally:
        stop.set()
        if started.is_set():
            producer.join()


async def agenerated_apart(lock: threading.Lock, produce: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """``generated_apart`` for an event loop: each item as it comes (``agenerated_batches``,
    one item at a time). Cancelling the task that iterates it or closing it (``aclose``) asks
    the producer to stop after the item it is making, and waits, without blocking the loop,
    until it has let go of the model: the lock is free when the cancellation has gone through."""
    async with contextlib.aclosing(agenerated_batches(lock, produce)) as batches:
        async for batch in batches:
            for item in batch:
                yield item


async def agenerated_batches(
    lock: threading.Lock, produce: Callable[[], Iterator[T]], every: float = 0.0
) -> AsyncIterator[list[T]]:
    """Run ``produce()`` under ``lock`` on a thread of its own (as ``generated_apart``) and hand
    what it made to the loop in batches: everything made since the last one, at most one batch
    per ``every`` seconds after the first (which goes as soon as it is made).

    Why batches: each item that reaches the loop costs Python work there (LangChain's stream
    and callbacks, LangGraph's stream, the turn's queue), and that work takes the GIL from the
    producer's own Python between two llama.cpp calls: measured per token, it slowed decoding by
    ~5-8% on 2 cores. The producer's side costs one deque append per item, and one wake-up of
    the loop only when the loop is waiting for it (``_Handover``). Waiting for the next batch
    never blocks the loop; cancelling (``CancelledError`` at a wait) or closing this generator
    asks the producer to stop after the item it is making and waits, without blocking the
    loop, until it has let go of the model."""
    handover: _Handover[T] = _Handover(asyncio.get_running_loop())
    _producer, stop, started = _produce_apart(lock, produce, handover.put)
    done = False
    try:
        while not done:
            items: list[T] = []
            error: BaseException | None = None
            for kind, value in await handover.take():
                if kind == "item":
                    items.append(value)
                elif kind == "error":
                    error = value
                else:
                    done = True
            if items:
                yield items
            if error is not None:
                raise error
            if every and not done:  # gather the next batch, unless the producer ends first
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(handover.ended.wait(), every)
    finally:
        stop.set()
        if started.is_set():
            while not done:  # the producer's last word: the lock is released before it
                done = any(kind == "done" for kind, _ in await handover.take())


class _Handover(Generic[T]):
    """What a producer thread hands an event loop: appended under a mutex, and the loop woken
    (one ``call_soon_threadsafe``) only when it is waiting in ``take``, not once per item."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: deque[tuple[str, Any]] = deque()
        self.mutex = threading.Lock()
        self.waiter: asyncio.Future[None] | None = None
        self.ended = asyncio.Event()  # set once the producer's last word is in

    def put(self, item: tuple[str, Any]) -> None:
        """On the producer's thread."""
        with self.mutex:
            self.items.append(item)
            waiter, self.waiter = self.waiter, None
        last = item[0] != "item"
        if waiter is not None or last:
            with contextlib.suppress(RuntimeError):  # the loop closed under an abandoned stream
                self.loop.call_soon_threadsafe(self._wake, waiter, last)

    def _wake(self, waiter: asyncio.Future[None] | None, last: bool) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if last:
            self.ended.set()

    async def take(self) -> list[tuple[str, Any]]:
        """On the loop: everything put since the last take, waiting for at least one item."""
        while True:
            with self.mutex:
                if self.items:
                    taken = list(self.items)
                    self.items.clear()
                    return taken
                waiter = self.waiter = self.loop.create_future()
            await waiter
