"""``Runtime``: what one ``Agent`` has opened (loaded models, embedders, indexes, clients), kept
in one place so that closing the agent closes all of it.

Why not module-level caches: two agents with different settings in one process must not see
each other's models or indexes, and ``Agent.close`` must free what the agent loaded (a model's
memory, an index's directory lock), not just a store. A resource is opened on first use
(``get``) and shared by every part of the agent that asks for the same key; ``close`` closes
them newest first, once. What a caller passed to the agent is never registered here, so it is
never closed by it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from agentmm.errors import RuntimeClosedError

T = TypeVar("T")


class Runtime:
    """Resources opened once per key, closed together (thread-safe; resources under different
    keys open concurrently, e.g. the chat model on a background thread while the embedder loads)."""

    def __init__(self, name: str = "runtime", *, reopen_hint: str = "make a new Agent to go on") -> None:
        self.name = name
        self.reopen_hint = reopen_hint
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._opened: dict[Hashable, tuple[Any, Callable[[Any], None] | None]] = {}
        self._closed = False

    def get(self, key: Hashable, open_: Callable[[], T], *, close: Callable[[T], None] | None = None) -> T:
        """The resource under ``key``, opened by ``open_()`` the first time; ``close(resource)``
        is called by ``Runtime.close``. An ``open_`` that raises leaves nothing behind, so the
        next call tries again."""
        with self._lock:
            self._check_open()
            if key in self._opened:
                return self._opened[key][0]  # type: ignore[no-any-return]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                self._check_open()
                if key in self._opened:
                    return self._opened[key][0]  # type: ignore[no-any-return]
            resource = open_()
            with self._lock:
                if self._closed:  # closed while it opened: close it rather than leak it
                    if close is not None:
                        close(resource)
                    self._check_open()
                self._opened[key] = (resource, close)
            return resource

    def peek(self, key: Hashable) -> Any | None:
        """The resource under ``key`` if it is open, else None (opens nothing)."""
        with self._lock:
            entry = self._opened.get(key)
        return entry[0] if entry is not None else None

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._opened

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close every resource, newest first (one that fails to close does not keep the others
        open: the first error is raised once all were tried). Closing twice is a no-op."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            opened = list(self._opened.values())
            self._opened.clear()
        first_error: BaseException | None = None
        for resource, close in reversed(opened):
            if close is None:
                continue
            try:
                close(resource)
            except Exception as exc:  # keep closing the rest, report the first
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeClosedError(f"{self.name} is closed: {self.reopen_hint}")

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
