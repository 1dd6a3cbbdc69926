"""One process per embedded Chroma directory: the memory store's directory lock.

Two processes writing one ``PersistentClient`` directory both exit cleanly and leave broken
items behind (MODELS.md), so the first process to open a store directory holds
:class:`agentmm.dirlock.DirectoryLock` on it; a second process gets :class:`StoreInUseError`
naming that PID. A lock left by a killed process is taken over (the kernel dropped it).

Inside one process the lock is shared and counted, and so is the store's write journal: every
store of this process over the directory records its writes in the one journal of the hold.
"""

from __future__ import annotations

from pathlib import Path

from agentmm import dirlock
from agentmm.memory._journal import WriteJournal
from agentmm.memory.errors import MemoryStoreError, StoreInUseError

LOCK_FILENAME = "agentmm-store.lock"


def _unusable(directory: Path, exc: OSError) -> MemoryStoreError:
    return MemoryStoreError(f"memory store {directory} cannot be opened: {exc.strerror or exc}")


class DirectoryLock(dirlock.DirectoryLock):
    """An exclusive claim on a memory store directory, held by this process until released."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, LOCK_FILENAME, in_use=StoreInUseError, unusable=_unusable)

    @property
    def journal(self) -> WriteJournal:
        """The writes made through any store of this process while the directory is held."""
        shared = self.shared
        if shared is None:
            raise MemoryStoreError(f"memory store {self.directory} is not open")
        return shared.setdefault("journal", WriteJournal())
