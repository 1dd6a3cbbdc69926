"""``ChatLlamaCpp``: a LangChain chat model over llama-cpp-python, thin on purpose.

llama-cpp-python does the templating (the GGUF's own chat template), grammars, tool and
JSON-schema constrained output, and multimodal handlers; this class adapts it to
``BaseChatModel`` (streaming, usage metadata, ``bind_tools``) and keeps one loaded ``Llama``
per model file and context settings, shared by every turn, so llama.cpp's prefix KV cache is
hit from one turn to the next.

With an image projector (``mmproj_path``) the model also sees images: LangChain image blocks
(``{"type": "image", "base64": ...}`` or ``{"type": "image_url", ...}``) on user messages go to
llama-cpp-python's multimodal chat handler. Only calls that hold an image take that path (the
handler clears the KV cache on every call); text-only calls keep the prefix cache. Without a
projector an image is an ``UnsupportedContentError``: dropping it silently would let the model
answer about a picture it never saw.
"""

from __future__ import annotations

import atexit
import json
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import LangSmithParams, generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.messages.tool import ToolCallChunk, tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field, PrivateAttr

from agentmm.cpu_buffers import CpuExtraBuffers, buffered_llama_class, choose_extra_buffers, cpu_flags
from agentmm.errors import CorruptModelError, InputTooLongError, UnsupportedContentError
from agentmm.tool_calling import (
    NO_TOOL,
    arguments_grammar,
    call_prompt,
    decision_grammar,
    decision_prompt,
    last_user_text,
    pending_tools,
    render_messages,
    reply_stops,
    tool_name,
    tool_parameters,
)

if TYPE_CHECKING:
    import llama_cpp

    from agentmm.gguf import GGUFInfo
    from agentmm.native_probe import NativeCheck
    from agentmm.settings import Settings

GpuLayers = int | Literal["auto"]


@dataclass
class CallStats:
    """What the last generation cost: filled in by the tracking ``Llama`` subclass."""

    prompt_tokens: int = 0
    reused_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class LoadedModel:
    llama: llama_cpp.Llama
    lock: threading.Lock
    stats: CallStats
    gpu_layers: int
    pieces: list[bytes] | None = None
    start_bias: dict[tuple[str, ...], dict[int, float]] = field(default_factory=dict)
    no_bracket_bias: dict[int, float] | None = None
    # The multimodal chat handler over the image projector, when the model has one.
    vision: Any = None


_LOADED: dict[tuple[Any, ...], LoadedModel] = {}
_GRAMMARS: dict[str, str] = {}
MAX_CALL_TOKENS = 256
_LOAD_LOCK = threading.Lock()


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
_GGML_LOG_LEVEL_ERROR = 4


def _quiet_without_redirecting(verbose: bool) -> None:
    """Keep llama.cpp quiet without touching the process's stdout and stderr.

    llama-cpp-python silences a model load by pointing ``sys.stdout``/``sys.stderr`` and file
    descriptors 1 and 2 at /dev/null: for the whole process, not just the loading thread. The
    chat loads its model on a background thread while the main thread prints its header and
    starts the line editor; what the main thread wrote then was lost, and the line editor,
    created in that window, kept writing to /dev/null for good (an empty terminal). So the
    redirect is switched off and llama.cpp's log callback decides instead: silent unless
    ``verbose``.
    """
    import llama_cpp
    import llama_cpp._internals
    import llama_cpp.llama

    _LOG_STATE["verbose"] = verbose
    if "callback" not in _LOG_STATE:

        @llama_cpp.llama_log_callback
        def log(level: int, text: bytes, user_data: Any) -> None:
            line = text.decode("utf-8", "replace")
            if level == _GGML_LOG_LEVEL_ERROR and line.strip():
                _LOG_ERRORS.append(line.strip())
            if _LOG_STATE["verbose"]:
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


def check_model_file(model_path: str, n_ctx: int, layers: int) -> GGUFInfo:
    """What can be told from the file before llama.cpp opens it: a damaged GGUF, or a model that
    cannot fit in free memory (typed errors, before any load or probe)."""
    from agentmm.gguf import read_gguf
    from agentmm.models import check_fits_in_memory

    info = read_gguf(Path(model_path))
    if layers == 0:
        check_fits_in_memory(info, n_ctx)
    return info


def load_model(
    model_path: str, *, n_ctx: int, n_gpu_layers: GpuLayers, n_threads: int | None, n_batch: int,
    chat_format: str | None, verbose: bool, mmproj_path: str | None = None, extra_buffers: bool = True,
) -> LoadedModel:  # fmt: skip
    """The shared loaded model for these settings (loaded on first call, then reused).

    With ``mmproj_path`` the image projector is loaded too, at once, so a projector that does
    not fit the model fails here, in one line, rather than on the first picture.
    ``extra_buffers`` is llama.cpp's ``use_extra_bufts`` (``agentmm.cpu_buffers`` decides it).
    """
    layers = resolve_gpu_layers(n_gpu_layers)
    mmproj = str(Path(mmproj_path).resolve()) if mmproj_path else None
    key = (str(Path(model_path).resolve()), n_ctx, layers, n_threads, n_batch, chat_format, mmproj, extra_buffers)
    with _LOAD_LOCK:
        loaded = _LOADED.get(key)
        if loaded is not None:
            return loaded
        info = check_model_file(model_path, n_ctx, layers)
        llama_class = _tracking_llama_class()
        _quiet_without_redirecting(verbose)
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
        offloaded = min(layers if layers >= 0 else 1 << 30, (info.block_count or 0) + 1)
        loaded = _LOADED[key] = LoadedModel(llama, threading.Lock(), llama.stats, offloaded, vision=vision)
        return loaded


def _last_error(exc: Exception) -> str:
    """llama.cpp's last logged error (it says why; the Python exception rarely does), on one line."""
    text = _LOG_ERRORS[-1] if _LOG_ERRORS else str(exc)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _vision_handler_class() -> type[Any]:
    """llama-cpp-python's generic multimodal handler (libmtmd: any projector, the model's own
    chat template), or the LLaVA 1.5 one on releases without it.

    The mtmd handler puts a media marker where each image was but leaves the message content a
    list of parts, which templates written for plain string content (SmolLM2's, most text
    models') print as a Python list. Like llama.cpp's server, the subclass joins a message's
    parts into one string when all of them are text by then.
    """
    from llama_cpp import llama_chat_format

    base = getattr(llama_chat_format, "MTMDChatHandler", None)
    if base is None:
        return llama_chat_format.Llava15ChatHandler

    class FlatContentHandler(base):  # type: ignore[misc,valid-type]
        @classmethod
        def _convert_message_for_template(cls, message: Any, media_marker: str) -> dict[str, Any]:
            converted = super()._convert_message_for_template(message, media_marker)
            content = converted.get("content")
            if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                converted["content"] = "\n".join(str(p.get("text", "")) for p in content)
            return converted

    return FlatContentHandler


def _load_vision(llama: llama_cpp.Llama, model_path: str, mmproj: str, *, use_gpu: bool) -> Any:
    """The multimodal chat handler over ``mmproj``, its projector loaded against ``llama``."""
    from agentmm.gguf import read_gguf

    name = Path(mmproj).name
    info = read_gguf(Path(mmproj))
    if info.architecture != "clip":
        raise CorruptModelError(f"{name} is not an image projector (mmproj) GGUF: it is a {info.architecture} model")
    _LOG_ERRORS.clear()
    try:
        handler = _vision_handler_class()(clip_model_path=mmproj, verbose=llama.verbose, use_gpu=use_gpu)
        init = getattr(handler, "_init_mtmd_context", None)
        if init is not None:
            init(llama)
    except (ValueError, RuntimeError, OSError) as exc:
        why = _last_error(exc)
        model = Path(model_path).name
        raise CorruptModelError(f"llama.cpp cannot use {name} as the image projector of {model}: {why}") from exc
    return handler


def _vocab_pieces(loaded: LoadedModel) -> list[bytes]:
    """Each token's text, by id (read once per loaded model, ~0.1 s)."""
    if loaded.pieces is None:
        model = loaded.llama._model
        loaded.pieces = [model.token_to_piece(i).rstrip(b"\x00") for i in range(loaded.llama.n_vocab())]
    return loaded.pieces


def _start_bias(loaded: LoadedModel, choices: Sequence[str]) -> dict[int, float]:
    """+100 for every token that can begin one of ``choices`` (cached per set of choices)."""
    key = tuple(choices)
    bias = loaded.start_bias.get(key)
    if bias is None:
        wanted = [name.encode() for name in choices]
        pieces = _vocab_pieces(loaded)
        starts = [i for i, piece in enumerate(pieces) if piece and any(w.startswith(piece) for w in wanted)]
        bias = loaded.start_bias[key] = dict.fromkeys(starts, 100.0)
    return bias


def _no_bracket_bias(loaded: LoadedModel) -> dict[int, float]:
    """-100 for every token whose text opens a bracket (cached per model)."""
    if loaded.no_bracket_bias is None:
        opening = [i for i, piece in enumerate(_vocab_pieces(loaded)) if piece.lstrip().startswith(b"[")]
        loaded.no_bracket_bias = dict.fromkeys(opening, -100.0)
    return loaded.no_bracket_bias


def _add_stats(total: CallStats, call: CallStats) -> None:
    """Usage over the generations of one reply (a tool decision, a call, the answer): prompt
    size and reuse of the last, tokens generated by all."""
    total.prompt_tokens, total.reused_tokens = call.prompt_tokens, call.reused_tokens
    total.completion_tokens += call.completion_tokens


def unload_all() -> None:
    """Free every loaded model (at exit, and for tests and benchmarks that start cold)."""
    with _LOAD_LOCK:
        for loaded in _LOADED.values():
            loaded.llama.close()
        _LOADED.clear()


# Free models while the interpreter is whole: llama-cpp-python's finaliser fails noisily
# when it runs during shutdown, after the modules it needs are gone.
atexit.register(unload_all)


class ChatLlamaCpp(BaseChatModel):
    """A local GGUF chat model run by llama.cpp. Nothing loads until the first call.

    Example:
        .. code-block:: python

            model = ChatLlamaCpp(model_path="model.gguf", n_ctx=4096)
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
    constrain_tool_calls: bool = Field(
        True, description="Constrain tool choice and arguments with grammars (off only to measure the difference)."
    )
    verbose: bool = False

    _loaded: LoadedModel | None = PrivateAttr(default=None)
    _native: NativeCheck | None = PrivateAttr(default=None)
    _native_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings) -> ChatLlamaCpp:
        """Resolve ``settings.model`` (shipped, path or hub id) and configure from settings."""
        from agentmm.models import resolve_gguf, resolve_model

        resolved = resolve_model(settings.model, settings.models_dir)
        mmproj = str(resolve_gguf(settings.mmproj, "mmproj", settings.models_dir)) if settings.mmproj else None
        return cls(
            model_path=str(resolved.path), model_name=resolved.name, n_ctx=settings.n_ctx,
            n_gpu_layers=settings.n_gpu_layers, n_threads=settings.n_threads, n_batch=settings.n_batch,
            temperature=settings.temperature, top_p=settings.top_p, max_tokens=settings.max_tokens,
            seed=settings.seed, verbose=settings.verbose, mmproj_path=mmproj,
            cpu_extra_buffers=settings.cpu_extra_buffers, probe_dir=str(settings.cache_dir),
        )  # fmt: skip

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
                check_model_file(self.model_path, self.n_ctx, layers)  # no child for a file that cannot load
                self._native = check_native(
                    Path(self.model_path), self.cpu_extra_buffers, cpu_flags(),
                    n_gpu_layers=layers, n_threads=self.n_threads,
                    cache=ProbeCache(Path(self.probe_dir)), fresh=fresh,
                )  # fmt: skip
            return self._native

    def load(self) -> LoadedModel:
        """Load (or find already loaded) this model; errors are agentmm's typed ones."""
        if self._loaded is None:
            extra_buffers = self.native_check().choice.enabled
            self._loaded = load_model(
                self.model_path, n_ctx=self.n_ctx, n_gpu_layers=self.n_gpu_layers, n_threads=self.n_threads,
                n_batch=self.n_batch, chat_format=self.chat_format, verbose=self.verbose, mmproj_path=self.mmproj_path,
                extra_buffers=extra_buffers,
            )  # fmt: skip
        return self._loaded

    @property
    def gpu_layers_in_use(self) -> int:
        return self.load().gpu_layers

    def get_token_ids(self, text: str) -> list[int]:
        return self.load().llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def get_num_tokens(self, text: str) -> int:
        return len(self.get_token_ids(text))

    # -- generation ----------------------------------------------------------------------

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

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        tools: list[dict[str, Any]] = kwargs.pop("tools", None) or []
        choice = kwargs.pop("tool_choice", None) or "auto"
        rendered, images = llama_messages(messages, tools)
        if images and not self.accepts_images:
            raise UnsupportedContentError(
                f"{self.display_name} cannot see images: set mmproj to its image projector, or caption them first"
            )
        loaded = self.load()
        params = self._call_params(stop, **kwargs)
        finish_reason = None
        spent = CallStats()
        metadata: dict[str, Any] = {}
        with loaded.lock:
            call = None
            if tools and choice != "none":
                # The tool steps are text questions about the conversation: no pictures needed.
                text_only = without_images(rendered) if images else rendered
                call = self._call_tool(loaded, messages, text_only, tools, choice, params, spent, metadata)
            if call is not None:
                finish_reason = "tool_calls"
                yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[call]))
            else:
                outcome: dict[str, Any] = {}
                if tools:
                    params = {**params, "stop": reply_stops(params.get("stop"), tools)}
                yield from self._reply(loaded, rendered, params, images, spent, outcome, run_manager)
                if tools and not images and not outcome.get("said"):
                    # It stopped at once, at a call or a result of its own making: write the
                    # reply again with no token that opens a bracket (the prefix is cached).
                    retry = {**params, "logit_bias": _no_bracket_bias(loaded)}
                    yield from self._reply(loaded, rendered, retry, [], spent, outcome, run_manager)
                finish_reason = outcome.get("finish_reason")
        usage = {
            "input_tokens": spent.prompt_tokens,
            "output_tokens": spent.completion_tokens,
            "total_tokens": spent.prompt_tokens + spent.completion_tokens,
            "input_token_details": {"cache_read": spent.reused_tokens},
        }
        cache = {"prompt_tokens": spent.prompt_tokens, "reused_tokens": spent.reused_tokens}
        metadata.update(finish_reason=finish_reason, model_name=self.display_name, cache=cache)
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage,  # type: ignore[arg-type]
                response_metadata=metadata,
                chunk_position="last",
            )
        )

    def _reply(
        self, loaded: LoadedModel, rendered: list[dict[str, Any]], params: dict[str, Any], images: list[Any],
        spent: CallStats, outcome: dict[str, Any], run_manager: CallbackManagerForLLMRun | None,
    ) -> Iterator[ChatGenerationChunk]:  # fmt: skip
        """Stream one text reply; ``outcome`` gets its ``finish_reason`` and whether it ``said``
        anything."""
        started_calls: set[int] = set()
        if images:
            stream = self._see(loaded, rendered, params)
        else:
            stream = loaded.llama.create_chat_completion(messages=rendered, stream=True, **params)
        for chunk in stream:
            choice_ = chunk["choices"][0]
            outcome["finish_reason"] = choice_.get("finish_reason") or outcome.get("finish_reason")
            message = _delta_to_chunk(choice_.get("delta") or {}, started_calls)
            if message is None:
                continue
            outcome["said"] = outcome.get("said") or bool(message.text.strip()) or bool(message.tool_call_chunks)
            generation = ChatGenerationChunk(message=message)
            if run_manager is not None:
                run_manager.on_llm_new_token(message.text, chunk=generation)
            yield generation
        if images:
            # The handler cleared the KV cache and filled it with image embeddings that the
            # token list cannot describe: start the next call cold rather than let it "reuse"
            # them as if they were the tokens once at those positions.
            loaded.stats.reused_tokens = 0
            loaded.llama.reset()
        _add_stats(spent, loaded.stats)

    def _see(self, loaded: LoadedModel, rendered: list[dict[str, Any]], params: dict[str, Any]) -> Iterator[Any]:
        """Stream a reply to messages holding images, through the multimodal handler.

        The handler encodes the images and evaluates the whole prompt before it returns the
        stream, so what can go wrong with an image goes wrong here, as a typed error.
        """
        _LOG_ERRORS.clear()
        try:
            return iter(loaded.vision(llama=loaded.llama, messages=rendered, stream=True, **params))
        except ValueError as exc:
            loaded.llama.reset()
            if "exceeds n_ctx" in str(exc):
                raise InputTooLongError(
                    f"the message and its images do not fit in the context (n_ctx={self.n_ctx}): {exc}"
                ) from exc
            why = _last_error(exc)
            raise UnsupportedContentError(f"llama.cpp cannot read an image sent to {self.display_name}: {why}") from exc

    def _call_tool(
        self, loaded: LoadedModel, messages: list[BaseMessage], rendered: list[dict[str, Any]],
        tools: list[dict[str, Any]], choice: str, params: dict[str, Any], spent: CallStats, metadata: dict[str, Any],
    ) -> ToolCallChunk | None:  # fmt: skip
        """Steps 1 and 2 of ``agentmm.tool_calling``: which tool, then its arguments.

        Returns the call, or None when the model decides no tool is needed.
        """
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
            if self.constrain_tool_calls:
                answer = self._choose(loaded, [*rendered, question], choices, params, spent)
            else:
                answer = self._complete(loaded, [*rendered, question], None, params, spent, max_tokens=16, greedy=True)
            name = next((n for n in by_name if n == answer.strip() or n in answer), None)
            metadata["tool_decision"] = name or NO_TOOL
            if name is None:
                return None
        tool = by_name[name]
        request = {"role": "user", "content": call_prompt(tool, last_user_text(messages))}
        grammar = self._arguments_grammar(tool) if self.constrain_tool_calls else None
        budget = min(params.get("max_tokens") or MAX_CALL_TOKENS, MAX_CALL_TOKENS)
        arguments = self._complete(loaded, [*rendered, request], grammar, params, spent, max_tokens=budget)
        return tool_call_chunk(name=name, args=arguments.strip(), id=f"call_{uuid.uuid4().hex[:16]}", index=0)

    def _choose(
        self, loaded: LoadedModel, messages: list[dict[str, Any]], choices: list[str], params: dict[str, Any],
        spent: CallStats,
    ) -> str:  # fmt: skip
        """The model's greedy pick among ``choices``, as a grammar allowing only them would
        give, but cheaper: a GBNF grammar is checked against all ~49k tokens at every step
        (~70 ms a token here), while raising the logits of the choices' first tokens by the
        same amount keeps their order and puts them above every other token. The raised tokens
        are every token that can begin a choice (as the grammar allows), so the first step is
        the grammar's own. One token decides, unless choices share it; then the grammar
        finishes the pick among those.
        """
        llama = loaded.llama
        call = {**params, "max_tokens": 1, "stop": None, "temperature": 0.0, "logit_bias": _start_bias(loaded, choices)}
        result = llama.create_chat_completion(messages=messages, stream=False, **call)
        _add_stats(spent, loaded.stats)
        piece = str(result["choices"][0]["message"].get("content") or "")  # type: ignore[index,union-attr]
        matches = [name for name in choices if piece and name.startswith(piece)]
        if len(matches) == 1:
            return matches[0]
        remaining = matches or choices
        return self._complete(loaded, messages, decision_grammar(remaining, allow_none=False), params, spent,
                              max_tokens=16, greedy=True)  # fmt: skip

    def _complete(
        self, loaded: LoadedModel, messages: list[dict[str, Any]], grammar: str | None, params: dict[str, Any],
        spent: CallStats, *, max_tokens: int, greedy: bool = False,
    ) -> str:  # fmt: skip
        from llama_cpp import LlamaGrammar

        call = {**params, "max_tokens": max_tokens, "stop": None}
        if greedy:
            call["temperature"] = 0.0
        if grammar is not None:
            call["grammar"] = LlamaGrammar.from_string(grammar, verbose=False)
        result = loaded.llama.create_chat_completion(messages=messages, stream=False, **call)
        _add_stats(spent, loaded.stats)
        return str(result["choices"][0]["message"].get("content") or "")  # type: ignore[index,union-attr]

    def _arguments_grammar(self, tool: dict[str, Any]) -> str:
        key = json.dumps(tool_parameters(tool), sort_keys=True)
        grammar = _GRAMMARS.get(key)
        if grammar is None:
            grammar = _GRAMMARS[key] = arguments_grammar(tool)
        return grammar

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
        ``"required"``/``True`` (some tool), a tool's name (that tool) or ``"none"``. Choice and
        arguments are grammar-constrained (see ``agentmm.tool_calling``), so a call is always
        well-formed, even from a 135M model.
        """
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        names = [tool_name(tool) for tool in formatted]
        choice: Any = tool_choice
        if isinstance(choice, dict):
            choice = (choice.get("function") or {}).get("name") or choice.get("name")
        if choice in ("any", "required", True):
            choice = names[0] if len(names) == 1 else "any"
        elif choice in (None, False, "auto"):
            choice = "none" if choice is False else "auto"
        if choice not in ("auto", "any", "none", *names):
            raise ValueError(f"tool_choice {tool_choice!r} names no bound tool (bound: {', '.join(names)})")
        return super().bind(tools=formatted, tool_choice=choice, **kwargs)


def llama_messages(
    messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]] = ()
) -> tuple[list[dict[str, Any]], int]:
    """Messages as llama-cpp-python takes them, and how many images they hold.

    LangChain's image blocks, both the v1 standard ones (``{"type": "image", "base64": ...,
    "mime_type": ...}`` or ``"url"``) and OpenAI-style ``{"type": "image_url", ...}``, become
    ``{"type": "image_url", "image_url": {"url": ...}}`` parts, the form llama-cpp-python's
    multimodal handlers read. A message whose parts are all text becomes one string (text
    chat templates expect a string). Anything else (audio, files, an image by file id, an
    image outside a user message) is an ``UnsupportedContentError``.
    """
    try:
        rendered = render_messages(messages, tools)
    except ValueError as exc:  # langchain-core's converter: e.g. an image given by file id
        raise UnsupportedContentError(f"the chat model cannot take this message content: {exc}") from exc
    images = 0
    out: list[dict[str, Any]] = []
    for message in rendered:
        content = message.get("content")
        if not isinstance(content, list):
            out.append(message)
            continue
        parts: list[dict[str, Any]] = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind == "text":
                parts.append({"type": "text", "text": str(part.get("text", ""))})
            elif kind == "image_url":
                if message.get("role") != "user":
                    raise UnsupportedContentError("images can be sent only in user messages")
                image = part["image_url"]
                url = image.get("url") if isinstance(image, dict) else image
                parts.append({"type": "image_url", "image_url": {"url": str(url)}})
                images += 1
            else:
                raise UnsupportedContentError(f"the chat model takes text and images, not {kind} content")
        if all(p["type"] == "text" for p in parts):
            out.append({**message, "content": "".join(p["text"] for p in parts)})
        else:
            out.append({**message, "content": parts})
    return out, images


def without_images(rendered: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``llama_messages`` output with the images left out (each message's text kept)."""
    out = []
    for message in rendered:
        content = message.get("content")
        if isinstance(content, list):
            message = {**message, "content": "".join(p["text"] for p in content if p["type"] == "text")}
        out.append(message)
    return out


def _delta_to_chunk(delta: dict[str, Any], started_calls: set[int]) -> AIMessageChunk | None:
    """One streamed OpenAI-style delta as a LangChain message chunk (None when it is empty).

    llama-cpp-python repeats a tool call's name and id in every chunk of it; LangChain
    concatenates chunk fields, so only the first chunk of each call may carry them.
    """
    content = delta.get("content") or ""
    calls = []
    for i, call in enumerate(delta.get("tool_calls") or []):
        index = call.get("index", i)
        function = call.get("function") or {}
        first = index not in started_calls
        started_calls.add(index)
        calls.append(
            tool_call_chunk(
                name=function.get("name") if first else None,
                args=function.get("arguments"),
                id=call.get("id") if first else None,
                index=index,
            )
        )
    if not content and not calls:
        return None
    return AIMessageChunk(content=content, tool_call_chunks=calls)
