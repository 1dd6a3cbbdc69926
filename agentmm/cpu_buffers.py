"""llama.cpp's extra CPU buffer types: whether to use them on this CPU, and a ``Llama`` that obeys.

llama.cpp repacks a model's weights into extra CPU buffer types (``CPU_REPACK``, ``AMX``) so its
matrix kernels read them faster. On x86_64 hosts whose CPU has AMX, llama-cpp-python 0.3.36
built from source (as ``pip install`` does) dies with SIGSEGV in ``decode`` on the first
generation of the shipped SmolLM2 Q4_1, and ``use_extra_bufts = False`` (llama.cpp's
``--no-repack``) makes the same call answer (``../shared/MODELS.md``, "CPUs with AMX"). The
fault is upstream and machine-dependent, so ``cpu_extra_buffers = "auto"`` turns the buffers
off where the CPU reports AMX and keeps them elsewhere, where they are the faster path
(``benchmarks/cpu_buffers.py`` measures the price). A crash the flags cannot predict is
caught by the one-token probe in a child process (``agentmm.native_probe``), whose verdict
overrides the flags.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import llama_cpp

CpuExtraBuffers = bool | Literal["auto"]

# What Linux's /proc/cpuinfo calls the AMX tile and matrix extensions.
AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "amx_complex"})
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class BufferChoice:
    """Whether llama.cpp gets its extra CPU buffer types, and why (``doctor`` shows both)."""

    setting: CpuExtraBuffers
    enabled: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"setting": self.setting, "enabled": self.enabled, "reason": self.reason}


def read_cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (x86 ``flags``, Arm ``Features``).

    Empty where there is no /proc/cpuinfo (macOS, Windows): no flag then says AMX, and the
    probe still guards the choice.
    """
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags, read once per process (they do not change while it runs)."""
    return read_cpu_flags()


def amx_flags(flags: Iterable[str]) -> list[str]:
    return sorted(AMX_FLAGS.intersection(flags))


def choose_extra_buffers(
    setting: CpuExtraBuffers, flags: Iterable[str], *, crashed_with_buffers: bool | None = None
) -> BufferChoice:
    """Decide for a setting, the CPU's flags and (when known) the probe's verdict on buffers on.

    ``crashed_with_buffers`` is what a one-token probe with extra buffers on said: True (the
    child died), False (it answered) or None (not probed). An explicit setting is obeyed; the
    probe then only tells the user that it will crash.
    """
    if setting is True:
        return BufferChoice(setting, True, "cpu_extra_buffers = true")
    if setting is False:
        return BufferChoice(setting, False, "cpu_extra_buffers = false")
    amx = amx_flags(flags)
    if amx:
        return BufferChoice(
            setting, False, f"the CPU has AMX ({', '.join(amx)}), where llama.cpp's repacked AMX path can crash"
        )
    if crashed_with_buffers:
        return BufferChoice(setting, False, "a one-token probe with extra buffers on crashed on this machine")
    return BufferChoice(setting, True, "no AMX on this CPU: repacked weights for llama.cpp's faster CPU kernels")


@functools.cache
def buffered_llama_class() -> type[llama_cpp.Llama]:
    """A ``Llama`` whose constructor takes ``extra_buffers`` (True: llama.cpp's default).

    llama-cpp-python has no argument for ``use_extra_bufts``: ``Llama.__init__`` fills
    ``self.model_params`` from ``llama_model_default_params()`` and loads the model before
    returning. A property on the subclass sees that assignment and sets the field on the
    instance's own params, so no module of llama-cpp-python is patched and two models in one
    process can differ.
    """
    import llama_cpp

    class BufferedLlama(llama_cpp.Llama):
        _extra_buffers: bool = True

        def __init__(self, *args: Any, extra_buffers: bool = True, **kwargs: Any) -> None:
            self._extra_buffers = extra_buffers
            super().__init__(*args, **kwargs)

        @property
        def model_params(self) -> Any:
            return self._model_params

        @model_params.setter
        def model_params(self, params: Any) -> None:
            if hasattr(params, "use_extra_bufts"):
                params.use_extra_bufts = self._extra_buffers
            elif not self._extra_buffers:
                from agentmm.errors import ModelError

                raise ModelError(
                    "this llama-cpp-python cannot turn llama.cpp's extra CPU buffers off (no use_extra_bufts): "
                    "upgrade llama-cpp-python, or set cpu_extra_buffers = true"
                )
            self._model_params = params

    return BufferedLlama
