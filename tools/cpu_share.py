"""How many CPU threads one perception job may use while others run beside it.

Why: torch and CTranslate2 each start a thread per core. When a turn's picture and voice note
are perceived at the same time on a small CPU, two jobs of two threads fight over two cores,
and the pair took 0.76 of the time of running them one after the other; with the cores split
between them (one thread each) it took 0.59 (``benchmarks/perception.py``). A job alone keeps
the libraries' own thread counts.

``Perception`` sets the share for each job it runs concurrently (``sharing``); the tools read
it (``job_threads``) where they pick their thread count. torch's thread count is one setting
per process, so it is set for the duration of a concurrent batch (``torch_threads``).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_share: ContextVar[int | None] = ContextVar("agentmm_cpu_share", default=None)
_torch_lock = threading.Lock()


def job_threads() -> int | None:
    """Threads this job may use; ``None`` when it runs alone (the library's own default)."""
    return _share.get()


def threads_per_job(jobs: int, cpus: int | None = None) -> int | None:
    """The share of ``cpus`` (default: this machine's) for each of ``jobs`` concurrent jobs;
    ``None`` for a single job."""
    if jobs <= 1:
        return None
    return max(1, (cpus or os.cpu_count() or 1) // jobs)


@contextmanager
def sharing(threads: int | None) -> Iterator[None]:
    """Run the body (one job, on this thread) with ``threads`` as its share."""
    token = _share.set(threads)
    try:
        yield
    finally:
        _share.reset(token)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch on at most ``threads`` threads for the body, where torch is already in use.

    Lowers, never raises, the count, and puts back what it found; a second batch running
    at the same time leaves the setting to the first.
    """
    torch = sys.modules.get("torch")
    if threads is None or torch is None or not _torch_lock.acquire(blocking=False):
        yield
        return
    try:
        before = torch.get_num_threads()
        if threads < before:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)
    finally:
        _torch_lock.release()
