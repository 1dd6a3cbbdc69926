"""How many CPU threads one perception job may use while others run beside it.

Why: torch and CTranslate2 each start a thread per core. When a turn's picture and voice note
are perceived at the same time on a small CPU, two jobs of two threads fight over two cores,
and the pair took 0.76 of the time of running them one after the other; with the cores split
between them it took 0.63 (``benchmarks/perception.py``). A job alone keeps the libraries' own
thread counts.

``Perception`` gives the jobs it runs concurrently a ``Share`` and raises it as jobs finish;
each job runs inside ``sharing(share)`` on its own thread. The tools read the share where they
pick a thread count: faster-whisper when it picks its model (``job_threads``; CTranslate2's
count is fixed per model), torch between decoding steps (``follow_torch_share``). torch's
thread count is per thread once a thread has used it, so only the job's own thread can change it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class Share:
    """The threads each running job may use now (raised by the scheduler as jobs finish)."""

    threads: int


_share: ContextVar[Share | None] = ContextVar("agentmm_cpu_share", default=None)


def cpus() -> int:
    return os.cpu_count() or 1


def threads_per_job(jobs: int, cpu_count: int | None = None) -> int:
    """The share of the CPUs for each of ``jobs`` concurrent jobs (at least one thread)."""
    return max(1, (cpu_count or cpus()) // max(1, jobs))


def job_threads() -> int | None:
    """Threads this job may use now; ``None`` when it runs alone (the library's own default)."""
    share = _share.get()
    return share.threads if share is not None else None


@contextmanager
def sharing(share: Share | None) -> Iterator[None]:
    """Run the body (one job, on this thread) within ``share``; torch's count on this thread
    follows it and is put back afterwards."""
    token = _share.set(share)
    torch = sys.modules.get("torch") if share is not None else None
    before = torch.get_num_threads() if torch is not None else None
    follow_torch_share()
    try:
        yield
    finally:
        _share.reset(token)
        if torch is not None and before is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)


def follow_torch_share() -> None:
    """Set this thread's torch thread count to the job's current share; call it between the
    steps of a long torch job (each caption token) so that it takes up cores freed meanwhile."""
    share = _share.get()
    torch = sys.modules.get("torch") if share is not None else None
    if torch is not None and share is not None and torch.get_num_threads() != share.threads:
        torch.set_num_threads(share.threads)
