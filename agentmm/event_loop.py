"""``LoopThread``: an asyncio event loop running on a daemon thread of its own.

An ``Agent`` runs every turn as a coroutine (``agentmm.graphs.turn``); its sync calls (``chat``,
``stream``, the REPL, the CLI) and its async ones from any other loop hand that coroutine to the
agent's one loop thread. One loop per agent, not one per turn: what is bound to a loop (the
async SQLite saver's connection) is opened once and serves every turn, and a turn starts with a
thread hop rather than a loop's start and teardown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An event loop on its own daemon thread, until ``close``."""

    def __init__(self, name: str = "agentmm-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def in_loop(self) -> bool:
        """Whether the caller runs on this loop's thread (where ``run`` would wait on itself)."""
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop, from any other thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (not from the loop's own thread)."""
        if self.in_loop:
            coro.close()
            raise RuntimeError("LoopThread.run called from its own loop: await the coroutine instead")
        return self.submit(coro).result()

    def call_soon(self, callback: Any, *args: Any) -> None:
        """``callback(*args)`` on the loop, from any thread (a no-op once the loop is closed)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(callback, *args)

    def close(self) -> None:
        """Cancel what still runs on the loop, let it finish its cleanup, stop and close the loop.
        Closing twice is a no-op."""
        if self.loop.is_closed():
            return
        if self._thread.is_alive() and not self.in_loop:
            with contextlib.suppress(concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                self.submit(self._cancel_all()).result(timeout=30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=30)
        if not self.loop.is_running():
            self.loop.close()

    async def _cancel_all(self) -> None:
        me = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.loop.shutdown_asyncgens()
        await self.loop.shutdown_default_executor()
