"""``ChatLlamaCpp``: a LangChain chat model over llama-cpp-python, thin on purpose.

llama-cpp-python does the templating (the GGUF's own chat template), grammars, JSON-schema
constrained output and multimodal handlers; this class adapts it to ``BaseChatModel``
(streaming, usage metadata, ``bind_tools``). The rest is in modules of its own:

- ``agentmm.llama_runtime``: loading models into a ``Runtime`` (one per file and context
  settings there, so the prefix KV cache carries over turns), GPU layers, llama.cpp's log,
  the model lock;
- ``agentmm.llama_images``: image blocks and the multimodal handler;
- ``agentmm.llama_generation``: one reply's llama.cpp calls, usage summed;
- ``agentmm.tool_strategies``: how a reply calls tools, per model (``tool_calling``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import (
    LangSmithParams,
    agenerate_from_stream,
    generate_from_stream,
)
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, PrivateAttr

from agentmm.cpu_buffers import CpuExtraBuffers, choose_extra_buffers, cpu_flags
from agentmm.errors import UnsupportedContentError
from agentmm.llama_generation import Generation
from agentmm.llama_images import llama_messages, without_images
from agentmm.llama_images import vision_handler_class as _vision_handler_class
from agentmm.llama_runtime import (
    CallStats,
    GpuLayers,
    LoadedModel,
    agenerated_batches,
    check_model_file,
    generated_apart,
    load_model,
    resolve_gpu_layers,
)
from agentmm.runtime import Runtime
from agentmm.tool_calling import normalized_choice, tool_name
from agentmm.tool_strategies import ToolCalling, ToolCallingSetting, tool_calling_for

if TYPE_CHECKING:
    from agentmm.gguf import GGUFInfo
    from agentmm.native_probe import NativeCheck
    from agentmm.settings import Settings

# Names other modules and tests import from here.
__all__ = [
    "CallStats", "ChatLlamaCpp", "GpuLayers", "LoadedModel", "_vision_handler_class", "llama_messages",
    "load_model", "resolve_gpu_layers", "without_images",
]  # fmt: skip


class ChatLlamaCpp(BaseChatModel):
    """A local GGUF chat model run by llama.cpp. Nothing loads until the first call.

    The loaded model lives in ``runtime`` (an ``agentmm.runtime.Runtime``: the Agent passes its
    own, which frees it on ``Agent.close``); made without one, the model owns a private runtime,
    freed by ``close()``. Copies (``model_copy``) and tool bindings share the runtime, hence the
    loaded model and its prefix KV cache.

    Example:
        .. code-block:: python

            with ChatLlamaCpp(model_path="model.gguf", n_ctx=4096) as model:
                for chunk in model.stream("Hello"):
                    print(chunk.content, end="")
    """

    model_path: str = Field(description="Path of the .gguf file.")
    model_name: str | None = Field(None, description="Name to report (default: the file's stem).")
    n_ctx: int = 4096
    n_gpu_layers: GpuLayers = "auto"
    n_threads: int | None = None
    n_batch: int = 512
    chat_format: str | None = Field(None, description="llama-cpp-python chat format; default: the GGUF's template.")
    mmproj_path: str | None = Field(
        None, description="The model's image projector (mmproj .gguf): with it, user messages may hold images."
    )
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    max_tokens: int | None = 512
    stop: list[str] | None = None
    seed: int | None = None
    streaming: bool = False
    cpu_extra_buffers: CpuExtraBuffers = Field(
        "auto", description="llama.cpp's extra CPU buffer types (repacked weights): 'auto' (off with AMX), True, False."
    )
    probe_dir: str | None = Field(
        None,
        description="Where native-probe verdicts are cached. Set, the first load proves the model answers one token "
        "in a child process (a native crash becomes NativeCrashError); None: no probe, the CPU's flags decide.",
    )
    tool_calling: ToolCallingSetting = Field(
        "auto",
        description="How tools are called: 'constrained' (two grammar-constrained steps, for small models), "
        "'native' (the chat template's own tool calls) or 'auto' (see agentmm.tool_strategies).",
    )
    constrain_tool_calls: bool = Field(
        True, description="Constrain tool choice and arguments with grammars (off only to measure the difference)."
    )
    verbose: bool = False
    stream_every_s: float = Field(
        0.02,
        description="In an async stream, text made after the first token reaches the event loop at most this often, "
        "what came meanwhile as one chunk (per-token work on the loop slowed decoding by ~5-8%); 0: every token.",
        ge=0.0,
    )
    # A call may pass ``stop_event=threading.Event()``: set, the reply ends after the current
    # token (how the turn graph stops a reply cancelled mid-way, see ``_reply``).
    accepts_stop_event: ClassVar[bool] = True
    # A call may pass ``character_guard=True``: while a persona is played, the reply cannot call
    # itself an AI or an assistant (``agentmm.character_guard``; the ``persona_guard`` setting).
    accepts_character_guard: ClassVar[bool] = True
    # A call may pass ``copy_limit=N``: the reply cannot repeat N tokens in a row from its prompt
    # or itself (``agentmm.copy_guard``; the ``persona_copy_limit`` setting).
    accepts_copy_limit: ClassVar[bool] = True
    # A call may pass ``reply_start="I'm Ilse Varga"``: a reply in words begins with these words
    # and the model goes on from them (``agentmm.reply_start``; the ``persona_identity_start``
    # setting); ``response_metadata["reply_start"]`` says when it did.
    accepts_reply_start: ClassVar[bool] = True

    _runtime: Runtime = PrivateAttr()
    _owns_runtime: bool = PrivateAttr(default=True)
    _loaded: LoadedModel | None = PrivateAttr(default=None)
    _native: NativeCheck | None = PrivateAttr(default=None)
    _native_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    # The model file's header as last read, under the file's (size, mtime, inode): see ``gguf_info``.
    _gguf: tuple[tuple[int, int, int], GGUFInfo] | None = PrivateAttr(default=None)

    def __init__(self, *, runtime: Runtime | None = None, **data: Any) -> None:
        super().__init__(**data)
        # Made here, not on first load, so that copies taken before the first call share it.
        self._runtime = (
            runtime
            if runtime is not None
            else Runtime(f"model {Path(self.model_path).name}", reopen_hint="make a new ChatLlamaCpp to go on")
        )
        self._owns_runtime = runtime is None

    @classmethod
    def from_settings(cls, settings: Settings, *, runtime: Runtime | None = None) -> ChatLlamaCpp:
        """Resolve ``settings.model`` (shipped, path or hub id) and configure from settings."""
        from agentmm.models import resolve_gguf, resolve_model

        resolved = resolve_model(settings.model, settings.models_dir, cache_dir=settings.cache_dir)
        mmproj = str(resolve_gguf(settings.mmproj, "mmproj", settings.models_dir)) if settings.mmproj else None
        model = cls(
            model_path=str(resolved.path), model_name=resolved.name, n_ctx=settings.n_ctx,
            n_gpu_layers=settings.n_gpu_layers, n_threads=settings.n_threads, n_batch=settings.n_batch,
            temperature=settings.temperature, top_p=settings.top_p, max_tokens=settings.max_tokens,
            seed=settings.seed, verbose=settings.verbose, mmproj_path=mmproj,
            cpu_extra_buffers=settings.cpu_extra_buffers, probe_dir=str(settings.cache_dir),
            tool_calling=settings.tool_calling, runtime=runtime,
        )  # fmt: skip
        model._keep_gguf(resolved.info)
        return model

    @property
    def _llm_type(self) -> str:
        return "llama-cpp"

    @property
    def display_name(self) -> str:
        return self.model_name or Path(self.model_path).stem

    @property
    def accepts_images(self) -> bool:
        """Whether user messages may hold images (the model has an image projector). The turn
        graph reads it to send pictures to the model instead of captioning them."""
        return self.mmproj_path is not None

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "n_ctx": self.n_ctx, "n_gpu_layers": self.n_gpu_layers,
                "mmproj_path": self.mmproj_path}  # fmt: skip

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="llama-cpp",
            ls_model_name=kwargs.get("model", self.display_name),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        if (max_tokens := kwargs.get("max_tokens", self.max_tokens)) is not None:
            params["ls_max_tokens"] = max_tokens
        if stop := stop or self.stop:
            params["ls_stop"] = stop
        return params

    # -- the loaded model ----------------------------------------------------------------

    def native_check(self, *, fresh: bool = False) -> NativeCheck:
        """Which CPU buffers this model loads with, proven by a cached one-token probe in a child
        process when ``probe_dir`` is set (``fresh`` probes again); ``NativeCrashError`` when the
        model would crash this process. ``doctor`` and the chat call it before the first turn."""
        from agentmm.native_probe import NativeCheck, ProbeCache, check_native

        with self._native_lock:
            if self._native is not None and not fresh:
                return self._native
            if self.probe_dir is None:
                self._native = NativeCheck(choose_extra_buffers(self.cpu_extra_buffers, cpu_flags()), [])
            else:
                layers = resolve_gpu_layers(self.n_gpu_layers)
                check_model_file(self.model_path, self.n_ctx, layers, info=self.gguf_info())  # no child for a bad file
                self._native = check_native(
                    Path(self.model_path), self.cpu_extra_buffers, cpu_flags(),
                    n_gpu_layers=layers, n_threads=self.n_threads,
                    cache=ProbeCache(Path(self.probe_dir)), fresh=fresh,
                )  # fmt: skip
            return self._native

    def gguf_info(self) -> GGUFInfo:
        """The model file's GGUF header, read again only when the file changed (its size, mtime
        or inode): a chat's start read it four times (resolving the model, the native check, the
        chat-template warning, the load), ~12 ms each. A file that cannot be read is the same
        typed error as before."""
        from agentmm.gguf import read_gguf

        path = Path(self.model_path)
        kept, stamp = self._gguf, _file_stamp(path)
        if kept is not None and stamp is not None and kept[0] == stamp:
            return kept[1]
        info = read_gguf(path)
        self._keep_gguf(info, stamp)
        return info

    def _keep_gguf(self, info: GGUFInfo, stamp: tuple[int, int, int] | None = None) -> None:
        stamp = stamp if stamp is not None else _file_stamp(Path(self.model_path))
        if stamp is not None and Path(info.path) == Path(self.model_path):
            self._gguf = (stamp, info)

    @property
    def runtime(self) -> Runtime:
        """Where the loaded model lives (shared with copies and bindings of this model)."""
        return self._runtime

    def load(self) -> LoadedModel:
        """Load (or find already loaded in its runtime) this model; errors are agentmm's typed
        ones, ``RuntimeClosedError`` once the runtime is closed."""
        loaded = self._loaded
        if loaded is None or loaded.closed:
            extra_buffers = self.native_check().choice.enabled
            loaded = self._loaded = load_model(
                self.model_path, n_ctx=self.n_ctx, n_gpu_layers=self.n_gpu_layers, n_threads=self.n_threads,
                n_batch=self.n_batch, chat_format=self.chat_format, verbose=self.verbose, mmproj_path=self.mmproj_path,
                extra_buffers=extra_buffers, runtime=self._runtime, info=self.gguf_info(),
            )  # fmt: skip
        return loaded

    def close(self) -> None:
        """Free the loaded model when this model owns its runtime (made without one); a runtime
        passed in is its owner's to close (an Agent's: ``Agent.close``). Closing twice is a no-op."""
        if self._owns_runtime:
            self._runtime.close()

    def __enter__(self) -> ChatLlamaCpp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cache_kept(self) -> contextlib.AbstractContextManager[None]:
        """A block whose generations leave the KV cache as they found it (``agentmm.llama_cache``):
        the rolling summary runs in one, so the next turn re-uses the chat's prompt head. Nothing
        to keep before the model is loaded."""
        from agentmm.llama_cache import cache_kept

        loaded = self._loaded
        return contextlib.nullcontext() if loaded is None or loaded.closed else cache_kept(loaded)

    @property
    def gpu_layers_in_use(self) -> int:
        return self.load().gpu_layers

    def get_token_ids(self, text: str) -> list[int]:
        return self.load().llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def get_num_tokens(self, text: str) -> int:
        return len(self.get_token_ids(text))

    # -- generation ----------------------------------------------------------------------

    def tool_strategy(self) -> ToolCalling:
        """How this model calls tools (``tool_calling``; ``"auto"`` reads the loaded model's
        chat template, see ``agentmm.tool_strategies.tool_calling_for``)."""
        return tool_calling_for(
            self.tool_calling, self.load(), chat_format=self.chat_format, constrain=self.constrain_tool_calls
        )

    def _call_params(self, stop: list[str] | None, **kwargs: Any) -> dict[str, Any]:
        params: dict[str, Any] = {
            "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k, "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty, "max_tokens": self.max_tokens, "seed": self.seed,
            "stop": stop if stop is not None else self.stop,
        }  # fmt: skip
        params.update(kwargs)
        return params

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop=stop, run_manager=run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop=stop, run_manager=run_manager, **kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Stream the reply. The model lock is held only while tokens are made, on a thread of
        its own (``generated_apart``): a caller slow between chunks, or one that drops the
        stream, never keeps another turn off the model; closing the stream stops generation."""
        lock, produce = self._reply(messages, stop, kwargs)
        for message in generated_apart(lock, produce):
            generation = ChatGenerationChunk(message=message)
            if run_manager is not None and message.chunk_position != "last":
                run_manager.on_llm_new_token(message.text, chunk=generation)
            yield generation

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """``_stream`` for an event loop (``astream``, the Agent's turns): loading and the prompt
        are prepared on a worker thread, tokens are awaited from the generation thread
        in batches (``agenerated_batches``, ``stream_every_s``), so the loop is never blocked nor
        woken for every token; cancelling the task or closing the stream stops generation after
        the current token and frees the model before it returns."""
        lock, produce = await asyncio.to_thread(self._reply, messages, stop, kwargs)
        async with contextlib.aclosing(agenerated_batches(lock, produce, self.stream_every_s)) as batches:
            async for batch in batches:
                for message in _merged(batch):
                    generation = ChatGenerationChunk(message=message)
                    if run_manager is not None and message.chunk_position != "last":
                        await run_manager.on_llm_new_token(message.text, chunk=generation)
                    yield generation

    def _reply(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[threading.Lock, Callable[[], Iterator[AIMessageChunk]]]:
        """What one reply needs before its first token (the model loaded, the prompt rendered by
        the tool-calling strategy): the model's lock and the function that makes the reply's
        chunks under it, its usage last. ``stop_event`` (a ``threading.Event`` in the call's
        kwargs, see ``accepts_stop_event``) ends the reply after the token being made when it is
        set: the stream then ends as a whole one does, its usage chunk last, and nothing is left
        to close."""
        kwargs = dict(kwargs)
        stop_event: threading.Event | None = kwargs.pop("stop_event", None)
        guarded = bool(kwargs.pop("character_guard", False))
        copy_limit = int(kwargs.pop("copy_limit", None) or 0)
        reply_start = str(kwargs.pop("reply_start", None) or "")
        tools: list[dict[str, Any]] = kwargs.pop("tools", None) or []
        choice = kwargs.pop("tool_choice", None) or "auto"
        if not self.accepts_images and llama_messages(messages)[1]:  # before any load
            raise UnsupportedContentError(
                f"{self.display_name} cannot see images: set mmproj to its image projector, or caption them first"
            )
        strategy = self.tool_strategy()
        rendered, images = strategy.render(messages, tools)
        loaded = self.load()
        if guarded or copy_limit:
            kwargs["logits_processor"] = reply_guards(loaded, character=guarded, copy_limit=copy_limit)
        gen = Generation(loaded, self._call_params(stop, **kwargs), model_name=self.display_name, n_ctx=self.n_ctx)
        gen.reply_start = reply_start

        def produce() -> Iterator[AIMessageChunk]:
            with contextlib.closing(strategy.reply(gen, messages, rendered, images, tools, choice)) as chunks:
                for chunk in chunks:
                    yield chunk
                    if stop_event is not None and stop_event.is_set():
                        break  # closes llama-cpp-python's stream: the lock is let go after this token
            yield gen.last_chunk()

        return loaded.lock, produce

    def choose(self, messages: Sequence[BaseMessage], choices: Sequence[str], *, tools: Sequence[Any] = ()) -> str:
        """The model's greedy pick among ``choices`` as the answer to ``messages``: the tool
        step's one constrained decision (``ConstrainedToolCalling.choose``), for any question
        with a closed set of answers (the turn's intent). ``tools`` are rendered as a reply
        offered them would render them, so the prompt shares the reply's prefix and the KV cache
        this fills is the one the reply starts from. Pictures are left out: a choice about the
        conversation needs none."""
        from agentmm.tool_strategies import ConstrainedToolCalling

        formatted = [convert_to_openai_tool(tool) for tool in tools]
        strategy = self.tool_strategy()
        rendered, images = strategy.render(messages, formatted)
        if images:
            rendered = without_images(rendered)
        params = self._call_params(None)
        if formatted and strategy.name == "native":  # the template renders them, as for a reply
            params.update(tools=formatted, tool_choice="none")
        loaded = self.load()
        gen = Generation(loaded, params, model_name=self.display_name, n_ctx=self.n_ctx)
        with loaded.lock:
            return ConstrainedToolCalling.choose(gen, rendered, list(choices))

    # -- tools ---------------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, BaseMessage]:
        """Bind tools (any form LangChain converts to an OpenAI tool schema).

        ``tool_choice``: ``"auto"`` (default: the model decides, maybe no tool), ``"any"``/
        ``"required"``/``True`` (some tool), a tool's name (that tool) or ``"none"``. How the call
        is made is ``tool_calling``'s strategy (``agentmm.tool_strategies``): constrained, a call
        is always well-formed, even from a 135M model.
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        choice = normalized_choice(tool_choice, [tool_name(tool) for tool in formatted])
        return super().bind(tools=formatted, tool_choice=choice, **kwargs)


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells a rewritten file from the one read: its size, mtime and inode (None: unreadable)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def reply_guards(loaded: LoadedModel, *, character: bool, copy_limit: int) -> Any:
    """A reply's ``logits_processor``: the character guard keeping a played character from calling
    itself an assistant (``agentmm.character_guard``; its tokens are found once per model) and
    the copy guard (``agentmm.copy_guard``), as asked."""
    from llama_cpp import LogitsProcessorList

    from agentmm.character_guard import CharacterGuard, GuardTokens
    from agentmm.copy_guard import CopyGuard

    processors: list[Any] = []
    if character:
        if loaded.guard_tokens is None:
            loaded.guard_tokens = GuardTokens.of(loaded.llama)
        processors.append(CharacterGuard(loaded.llama, loaded.guard_tokens))
    if copy_limit:
        processors.append(CopyGuard(loaded.llama, copy_limit))
    return LogitsProcessorList(processors)


def _merged(batch: list[AIMessageChunk]) -> list[AIMessageChunk]:
    """A batch of streamed chunks as one (LangChain's own addition: text joined, tool-call
    chunks merged by index), the reply's closing usage chunk kept apart after it."""
    last = [batch.pop()] if batch and batch[-1].chunk_position == "last" else []
    if len(batch) > 1:
        batch = [add_ai_message_chunks(batch[0], *batch[1:])]
    return batch + last
