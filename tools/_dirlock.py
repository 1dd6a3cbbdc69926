"""One process per embedded Chroma directory (MODELS.md: two writers leave broken items).

The first process takes an exclusive ``flock`` on a lock file in the directory and writes its
PID there; another process gets ``ImageIndexInUseError``. The kernel drops the lock when its
holder dies, so a stale file is simply taken over, and the file is never deleted (unlinking it
under a waiting process would let two holders lock two files). Inside one process the lock is
counted, so several ``ImageIndex`` objects may share a directory (Chroma shares one system per
path within a process anyway).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import ClassVar

from agentmm.tools.errors import ImageIndexError, ImageIndexInUseError

LOCK_FILENAME = "agentmm-images.lock"


class DirectoryLock:
    """An exclusive, per-process claim on a directory."""

    _held: ClassVar[dict[Path, tuple[int, int, int]]] = {}  # directory -> (fd, count, pid)
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._acquired = False

    def acquire(self) -> None:
        if self._acquired:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.directory = self.directory.resolve()
        except OSError as exc:
            raise ImageIndexError(f"cannot create image index {self.directory}: {exc.strerror or exc}") from exc
        with self._guard:
            held = self._held.get(self.directory)
            if held is not None and held[2] == os.getpid():  # a forked child must lock afresh
                self._held[self.directory] = (held[0], held[1] + 1, held[2])
                self._acquired = True
                return
            path = self.directory / LOCK_FILENAME
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ImageIndexError(f"cannot open {path}: {exc.strerror or exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                pid = _read_pid(fd)
                os.close(fd)
                raise ImageIndexInUseError(self.directory, pid) from exc
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._held[self.directory] = (fd, 1, os.getpid())
            self._acquired = True

    def release(self) -> None:
        if not self._acquired:
            return
        self._acquired = False
        with self._guard:
            fd, count, pid = self._held[self.directory]
            if count > 1:
                self._held[self.directory] = (fd, count - 1, pid)
                return
            del self._held[self.directory]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
