"""A one-token generation in a child process, so a native crash is a sentence, not a dead terminal.

llama.cpp faults (SIGSEGV, SIGILL, SIGABRT) kill the whole process: no Python ``except`` sees
them, and the user is left with "Segmentation fault" and a lost chat. So before the first turn
the model answers one token in a child process; if the child dies, the parent says in one line
what died and which setting to change. With ``cpu_extra_buffers = "auto"`` a crash with
llama.cpp's extra CPU buffers on is retried with them off, and the chat uses that if it answers.

The verdict is cached on disk per (llama-cpp-python build, model file, CPU flags, buffers,
GPU layers): the probe costs about a second once, then nothing. Run as
``python -m agentmm.native_probe JSON`` it is the child.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agentmm.cpu_buffers import BufferChoice, CpuExtraBuffers, choose_extra_buffers
from agentmm.errors import AgentmmError, ModelError

PROBE_FILE = "native-probes.json"
PROBE_TIMEOUT_S = 300.0
# The child's exit code for a Python-level failure (a model llama.cpp refuses to load, say):
# not a native crash, and the chat's own loading reports it in its own words.
PYTHON_ERROR_EXIT = 3
_CACHE_VERSION = 1


class NativeCrashError(ModelError):
    """llama.cpp dies in native code with these settings on this machine (``probes`` say how)."""

    def __init__(self, message: str, probes: Sequence[ProbeResult] = ()) -> None:
        super().__init__(message)
        self.probes = list(probes)


@dataclass(frozen=True)
class ProbeResult:
    """How the child's one-token generation ended."""

    extra_buffers: bool
    n_gpu_layers: int
    outcome: str  # "ok", "crashed", "error" (a Python exception in the child) or "timeout"
    detail: str
    seconds: float
    cached: bool = False

    @property
    def crashed(self) -> bool:
        return self.outcome == "crashed"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Runner = Callable[[Sequence[str], float], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def _died_of(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def run_probe(
    model_path: Path, *, extra_buffers: bool, n_gpu_layers: int, n_threads: int | None = None,
    timeout: float = PROBE_TIMEOUT_S, runner: Runner | None = None,
) -> ProbeResult:  # fmt: skip
    """Load ``model_path`` and generate one token in a child process; how did it end?"""
    request = {"model_path": str(model_path), "extra_buffers": extra_buffers, "n_gpu_layers": n_gpu_layers,
               "n_threads": n_threads}  # fmt: skip
    argv = [sys.executable, "-m", "agentmm.native_probe", json.dumps(request)]
    start = time.perf_counter()
    try:
        done = (runner or _run)(argv, timeout)
    except subprocess.TimeoutExpired:
        seconds = time.perf_counter() - start
        return ProbeResult(extra_buffers, n_gpu_layers, "timeout", f"no token within {timeout:.0f} s", seconds)
    except OSError as exc:  # the child never ran (an interpreter that is not executable, no memory to fork)
        seconds = time.perf_counter() - start
        detail = f"the probe's process could not start: {argv[0]}: {exc.strerror or exc}"
        return ProbeResult(extra_buffers, n_gpu_layers, "error", detail, seconds)
    seconds = time.perf_counter() - start
    if done.returncode == 0:
        return ProbeResult(extra_buffers, n_gpu_layers, "ok", _last_line(done.stdout), seconds)
    if done.returncode == PYTHON_ERROR_EXIT:
        return ProbeResult(extra_buffers, n_gpu_layers, "error", _last_line(done.stderr), seconds)
    detail = _died_of(done.returncode)
    if said := _last_line(done.stderr):
        detail += f" ({said})"
    return ProbeResult(extra_buffers, n_gpu_layers, "crashed", detail, seconds)


@functools.cache
def llama_build_id() -> str:
    """What identifies the installed llama.cpp build: the package's version and its shared libraries.

    A rebuild (another ``CMAKE_ARGS``, another machine's ``-march=native``) changes the
    libraries' size or time, and so the key, without importing llama_cpp. Read once per
    process: a running process keeps the build it loaded.
    """
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return "llama_cpp missing"
    package = Path(next(iter(spec.submodule_search_locations)))
    parts = []
    try:
        from importlib.metadata import version

        parts.append(version("llama-cpp-python"))
    except Exception:  # metadata of a source checkout may be absent
        parts.append("unknown version")
    for lib in sorted((package / "lib").glob("*")):
        if lib.suffix in (".so", ".dylib", ".dll") or ".so." in lib.name:
            stat = lib.stat()
            parts.append(f"{lib.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def probe_key(model_path: Path, flags: Iterable[str], *, extra_buffers: bool, n_gpu_layers: int) -> str:
    stat = model_path.stat()
    material = [
        str(_CACHE_VERSION), llama_build_id(), str(model_path.resolve()), str(stat.st_size), str(stat.st_mtime_ns),
        " ".join(sorted(flags)), f"buffers={extra_buffers}", f"gpu_layers={n_gpu_layers}",
    ]  # fmt: skip
    return hashlib.sha256("\n".join(material).encode()).hexdigest()[:32]


class ProbeCache:
    """Verdicts on disk, one JSON file; a damaged file counts as empty (the probe runs again)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / PROBE_FILE

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> ProbeResult | None:
        entry = self._read().get(key)
        if not isinstance(entry, dict):
            return None
        try:
            return ProbeResult(**{**entry, "cached": True})
        except TypeError:
            return None

    def put(self, key: str, result: ProbeResult) -> None:
        """Keep an answer (ok or crashed); timeouts and Python errors are not verdicts on the CPU."""
        if result.outcome not in ("ok", "crashed"):
            return
        from agentmm.fileio import atomic_write

        data = self._read()
        data[key] = {**result.to_json(), "cached": False}
        with contextlib.suppress(AgentmmError):  # an unwritable cache dir costs a probe next time, no more
            atomic_write(self.path, json.dumps(data, indent=1).encode())


def probe(
    model_path: Path, flags: Iterable[str], *, extra_buffers: bool, n_gpu_layers: int, n_threads: int | None = None,
    cache: ProbeCache | None = None, fresh: bool = False, runner: Runner | None = None,
) -> ProbeResult:  # fmt: skip
    """``run_probe`` through the cache (``fresh`` runs it anyway and stores the new verdict)."""
    flags = frozenset(flags)
    key = probe_key(model_path, flags, extra_buffers=extra_buffers, n_gpu_layers=n_gpu_layers)
    if cache is not None and not fresh and (known := cache.get(key)) is not None:
        return known
    result = run_probe(model_path, extra_buffers=extra_buffers, n_gpu_layers=n_gpu_layers, n_threads=n_threads,
                       runner=runner)  # fmt: skip
    if cache is not None:
        cache.put(key, result)
    return result


@dataclass(frozen=True)
class NativeCheck:
    """The buffers the model will load with, and the probes that decided it (for ``doctor``)."""

    choice: BufferChoice
    probes: list[ProbeResult]

    def to_json(self) -> dict[str, Any]:
        return {**self.choice.to_json(), "probes": [p.to_json() for p in self.probes]}


def check_native(
    model_path: Path, setting: CpuExtraBuffers, flags: Iterable[str], *, n_gpu_layers: int,
    n_threads: int | None = None, cache: ProbeCache | None = None, fresh: bool = False, runner: Runner | None = None,
) -> NativeCheck:  # fmt: skip
    """Choose the CPU buffers and prove the choice with a probe; ``NativeCrashError`` if nothing answers."""
    flags = frozenset(flags)
    choice = choose_extra_buffers(setting, flags)

    def attempt(extra_buffers: bool) -> ProbeResult:
        return probe(model_path, flags, extra_buffers=extra_buffers, n_gpu_layers=n_gpu_layers, n_threads=n_threads,
                     cache=cache, fresh=fresh, runner=runner)  # fmt: skip

    first = attempt(choice.enabled)
    if not first.crashed:
        return NativeCheck(choice, [first])
    if setting == "auto" and choice.enabled:
        second = attempt(False)
        if not second.crashed:
            return NativeCheck(choose_extra_buffers(setting, flags, crashed_with_buffers=True), [first, second])
        message = crash_message(model_path, second, n_gpu_layers, also=first)
        raise NativeCrashError(message, [first, second])
    raise NativeCrashError(crash_message(model_path, first, n_gpu_layers), [first])


def crash_message(
    model_path: Path, result: ProbeResult, n_gpu_layers: int, *, also: ProbeResult | None = None,
) -> str:  # fmt: skip
    """One line: what died, with which settings, and what to change."""
    buffers = "on" if result.extra_buffers else "off"
    tried = " (and with them on)" if also is not None else ""
    head = (f"llama.cpp crashed ({result.detail}) generating one token with {model_path.name} on this machine, "
            f"extra CPU buffers {buffers}{tried}")  # fmt: skip
    if result.extra_buffers:
        return f'{head}: set cpu_extra_buffers = false (or "auto")'
    if n_gpu_layers != 0:
        return f"{head}: set n_gpu_layers = 0 to keep the model off the GPU"
    return (f"{head}: try another model, or rebuild llama-cpp-python for this CPU "
            "(pip install --force-reinstall --no-cache-dir llama-cpp-python)")  # fmt: skip


# ---------------------------------------------------------------------------- the child


def _child(request: dict[str, Any]) -> str:
    """Load the model with the requested buffers and generate one token after a short chat prompt.

    The prompt is a few dozen tokens, so prefill goes through llama.cpp's batched matrix
    kernels (where the AMX fault lives), not only the one-row decode path.
    """
    from agentmm.cpu_buffers import buffered_llama_class

    llama = buffered_llama_class()(
        model_path=request["model_path"], extra_buffers=bool(request["extra_buffers"]),
        n_gpu_layers=int(request["n_gpu_layers"]), n_threads=request.get("n_threads"), n_ctx=512, verbose=False,
    )  # fmt: skip
    messages = [{"role": "system", "content": "You are a helpful assistant who answers in a few words."},
                {"role": "user", "content": "Hello! Please say hello back to me, then tell me your name."}]  # fmt: skip
    reply = llama.create_chat_completion(messages=messages, max_tokens=1, temperature=0.0)
    text = reply["choices"][0]["message"]["content"] or ""
    llama.close()
    return json.dumps({"ok": True, "token": text})


def _exit_with_parent() -> None:
    """A probe outlives nothing: when its parent dies (Ctrl-C, kill -9), the child exits too,
    rather than loading a large model for nobody."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="agentmm-probe-parent").start()


def main(argv: Sequence[str]) -> int:
    _exit_with_parent()
    try:
        print(_child(json.loads(argv[0])), flush=True)
    except Exception as exc:  # any Python failure is reported; a native one kills us
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return PYTHON_ERROR_EXIT
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main(sys.argv[1:]))
