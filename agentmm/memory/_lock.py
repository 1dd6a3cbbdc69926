"""One process per embedded Chroma directory.

Two processes writing one ``PersistentClient`` directory both exit cleanly and leave broken
items behind (MODELS.md), so the first process to open a directory takes an exclusive
``flock`` on a lock file in it and writes its PID there; a second process gets
:class:`StoreInUseError` naming that PID. The kernel drops a ``flock`` when its holder
dies, so a lock file left by a killed process is simply taken over. The lock file is never
deleted: unlinking it while another process has it open would let two holders lock two
different files.

Inside one process the lock is shared and counted, so several stores may open one directory
(Chroma itself shares one system per path within a process).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from agentmm.memory._journal import WriteJournal
from agentmm.memory.errors import MemoryStoreError, StoreInUseError

LOCK_FILENAME = "agentmm-store.lock"


@dataclass
class _Held:
    fd: int
    count: int
    pid: int
    journal: WriteJournal


class DirectoryLock:
    """An exclusive claim on a directory, held by this process until released."""

    _held: ClassVar[dict[Path, _Held]] = {}
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.path = self.directory / LOCK_FILENAME
        self._acquired = False

    def acquire(self) -> None:
        """Take the lock, or raise :class:`StoreInUseError` with the holder's PID."""
        if self._acquired:
            return
        with self._guard:
            held = self._held.get(self.directory)
            # An entry copied into a forked child belongs to the parent: lock afresh.
            if held is not None and held.pid == os.getpid():
                held.count += 1
                self._acquired = True
                return
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise StoreInUseError(self.directory, pid) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._held[self.directory] = _Held(fd=fd, count=1, pid=os.getpid(), journal=WriteJournal())
            self._acquired = True

    @property
    def journal(self) -> WriteJournal:
        """The writes made through any store of this process while the directory is held."""
        with self._guard:
            held = self._held.get(self.directory)
        if not self._acquired or held is None:
            raise MemoryStoreError(f"memory store {self.directory} is not open")
        return held.journal

    def release(self) -> None:
        """Give the lock back; the last holder in this process unlocks the file."""
        if not self._acquired:
            return
        self._acquired = False
        with self._guard:
            held = self._held.get(self.directory)
            if held is None or held.pid != os.getpid():
                return
            held.count -= 1
            if held.count > 0:
                return
            del self._held[self.directory]
            with contextlib.suppress(OSError):
                os.ftruncate(held.fd, 0)
            fcntl.flock(held.fd, fcntl.LOCK_UN)
            os.close(held.fd)

    def _open(self) -> int:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise MemoryStoreError(f"memory store {self.directory} cannot be opened: {exc.strerror}") from exc


def _read_pid(fd: int, wait_s: float = 0.5) -> int | None:
    """The PID in a lock file; the holder writes it just after locking, so wait briefly."""
    deadline = time.monotonic() + wait_s
    while True:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)
