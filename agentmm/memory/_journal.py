"""What this process wrote to an embedded store, so caches over it can update incrementally.

An embedded store is written by one process only (the directory lock), so that process can
know every change: each write batch gets a revision and the (namespace, key) refs it
touched. A reader that cached something at revision r asks for the refs written since and
re-reads only those. A journal lives as long as the process holds the directory; its token
changes with each new hold, so a revision from an earlier hold is never mistaken for one of
this hold.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Iterable

ItemRef = tuple[tuple[str, ...], str]
Revision = tuple[str, int]


class WriteJournal:
    """Revisions of the write batches made while a directory is held, with what each touched."""

    def __init__(self, size: int = 256) -> None:
        self.token = uuid.uuid4().hex
        self._revision = 0
        self._entries: deque[tuple[int, frozenset[ItemRef]]] = deque(maxlen=size)
        self._lock = threading.Lock()

    @property
    def revision(self) -> Revision:
        """The current revision, tagged with this journal's token."""
        with self._lock:
            return (self.token, self._revision)

    def record(self, refs: Iterable[ItemRef]) -> None:
        """Note one write batch."""
        with self._lock:
            self._revision += 1
            self._entries.append((self._revision, frozenset(refs)))

    def changed_since(self, revision: Revision) -> set[ItemRef] | None:
        """Refs written after ``revision``; ``None`` if that is no longer (or never was) known here."""
        token, number = revision
        with self._lock:
            if token != self.token or number > self._revision:
                return None
            if number == self._revision:
                return set()
            if not self._entries or self._entries[0][0] > number + 1:
                return None
            return {ref for rev, refs in self._entries if rev > number for ref in refs}
