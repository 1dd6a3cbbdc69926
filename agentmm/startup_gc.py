"""The chat's start-up imports kept out of Python's cyclic garbage collector.

Importing LangGraph, LangChain and agentmm makes a few hundred thousand objects that live as
long as the process. The collector runs as they are made, every 700 allocations, and its older
generations rescan all of them: ~440 collections (3 of them full) per ``agentmm chat -m``, about
0.3 s of CPU (0.6-1.1 s wall on a loaded machine, measured) that freed almost nothing. So the
heavy imports run with the collector off, and what they made is then frozen (``gc.freeze``: never
scanned again) for the rest of the command. ``unfreeze`` hands the objects back to the collector
when the command ends, so a process that runs commands in turn (the tests' in-process CLI) does
not keep the garbage of one command's objects for good.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def import_frozen(import_: Callable[[], T]) -> T:
    """``import_()`` with the collector off, then every object alive frozen (and the collector
    back on if it was on). The caller calls ``unfreeze`` when the command is done."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return import_()
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def unfreeze() -> None:
    """Hand the frozen objects back to the collector."""
    gc.unfreeze()
