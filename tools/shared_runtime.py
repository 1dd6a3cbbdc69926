"""The tools package's one process-level ``Runtime``, for tools used outside an ``Agent``.

Why it exists: ``caption_image``, ``transcribe_audio`` and ``search_images`` are module-level
LangChain tools (and ``agentmm.tools`` entry points) that another LangChain app imports and
calls with no agentmm ``Agent`` around them. What they open (the Whisper model, the open_clip
models, the CLIP text encoder, the image index and its directory lock, the captioner) must live
somewhere: here, in one documented ``Runtime`` per process, closed at exit. The library
functions (``transcribe``, ``load_speech_model``, ``ImageIndex``, ``caption_file``...) use it
too when no runtime is passed.

An ``Agent`` never uses it: its tools come from the factories (``make_*_tool(settings,
runtime)``) over ``agent.runtime``, so what they open is closed by ``Agent.close()``.
"""

from __future__ import annotations

import atexit
import threading

from agentmm.runtime import Runtime

_lock = threading.Lock()
_current: list[Runtime] = []  # the process's runtime, made on first use (a list: no `global`)


def process_runtime() -> Runtime:
    """The process-level runtime of the tools package (made on first use)."""
    with _lock:
        if not _current or _current[0].closed:
            _current[:] = [Runtime("agentmm.tools process runtime")]
        return _current[0]


def close_process_runtime() -> None:
    """Close what the module-level tools opened (models, image indexes and their directory
    locks); the next use opens afresh. Run at exit; also for tests, or an app that switches
    data dirs."""
    with _lock:
        runtime = _current.pop() if _current else None
    if runtime is not None:
        runtime.close()


atexit.register(close_process_runtime)
