"""One process per directory: an exclusive ``flock`` on a lock file in it that names its holder.

Embedded Chroma must have one process per persistent directory (two writers leave broken items,
MODELS.md), so the memory store and the image index each take this lock before opening theirs,
and a second process is refused with the holder's PID instead of corrupting it.

- The kernel drops a ``flock`` when its holder dies, so a lock left by a killed process (even
  ``kill -9``) never blocks the next one. The file is never deleted: unlinking it while another
  process has it open would let two holders lock two different files.
- The holder writes its PID into the file right after locking, and clears it when it lets go.
  A refused process reads the PID, waiting briefly for a live one: between the holder's lock and
  its write the file may still be empty, or name a killed earlier holder, and naming a dead PID
  would send the user after the wrong process.
- Inside one process the lock is counted, so several stores may open one directory (Chroma shares
  one system per path within a process anyway). A forked child does not inherit the claim: it
  locks afresh, and is refused while its parent holds the directory.

Not built on ``filelock``: its 3.x ``UnixFileLock`` opens the lock file with ``O_TRUNC``, so every
refused contender would wipe the holder's PID, and it keeps no PID of its own; the part of it
this needs is the one ``flock`` call below.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

# flock reports a lock held elsewhere as EWOULDBLOCK; some network filesystems say EACCES or EAGAIN.
_CONTENDED = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES})
PID_WAIT_S = 1.0


@dataclass
class _Hold:
    fd: int
    count: int
    pid: int
    shared: dict[str, Any] = field(default_factory=dict)


class DirectoryLock:
    """An exclusive claim on ``directory`` (through ``directory/filename``), held until released.

    ``in_use(directory, pid)`` makes the error raised when another process holds it (``pid`` is
    None when no live holder could be named); ``unusable(directory, exc)`` the one raised when
    the directory or its lock file cannot be made, opened or locked at all.
    """

    _held: ClassVar[dict[Path, _Hold]] = {}  # lock file -> this process's hold
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        directory: Path,
        filename: str,
        *,
        in_use: Callable[[Path, int | None], Exception],
        unusable: Callable[[Path, OSError], Exception],
    ) -> None:
        self.directory = Path(directory).expanduser()
        self.filename = filename
        self._in_use = in_use
        self._unusable = unusable
        self._acquired = False

    @property
    def path(self) -> Path:
        return self.directory / self.filename

    def acquire(self) -> None:
        """Take the lock (a no-op if this object holds it), or raise ``in_use`` naming the holder."""
        if self._acquired:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.directory = self.directory.resolve()
        except OSError as exc:
            raise self._unusable(self.directory, exc) from exc
        refused_fd = None
        with self._guard:
            held = self._held.get(self.path)
            if held is not None and held.pid == os.getpid():  # a forked child's copy is its parent's
                held.count += 1
                self._acquired = True
                return
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in _CONTENDED:
                    os.close(fd)
                    raise self._unusable(self.directory, exc) from exc
                refused_fd = fd
            else:
                try:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                except OSError as exc:
                    _unlock_and_close(fd)
                    raise self._unusable(self.directory, exc) from exc
                self._held[self.path] = _Hold(fd=fd, count=1, pid=os.getpid())
                self._acquired = True
                return
        try:  # outside the guard: waiting for the holder's PID must not stall this process's other locks
            pid = holder_pid(refused_fd)
        finally:
            os.close(refused_fd)
        raise self._in_use(self.directory, pid)

    def release(self) -> None:
        """Give the lock back; the last holder in this process clears the PID and unlocks the file."""
        if not self._acquired:
            return
        self._acquired = False
        with self._guard:
            held = self._held.get(self.path)
            if held is None or held.pid != os.getpid():
                return
            held.count -= 1
            if held.count > 0:
                return
            del self._held[self.path]
            with contextlib.suppress(OSError):
                os.ftruncate(held.fd, 0)
            _unlock_and_close(held.fd)

    @property
    def shared(self) -> dict[str, Any] | None:
        """State that lives as long as this process's hold on the directory (shared by every
        ``DirectoryLock`` of it in this process); None when this object does not hold it."""
        with self._guard:
            held = self._held.get(self.path)
        if not self._acquired or held is None or held.pid != os.getpid():
            return None
        return held.shared

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise self._unusable(self.directory, exc) from exc


def _unlock_and_close(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def holder_pid(fd: int, wait_s: float | None = None) -> int | None:
    """The live PID written in a lock file held by another process; None if none shows up in time.

    The holder writes its PID just after it locks, so an empty file, or the PID of a process that
    is gone (a killed earlier holder), means "not written yet": read again for ``wait_s``
    (default ``PID_WAIT_S``).
    """
    deadline = time.monotonic() + (PID_WAIT_S if wait_s is None else wait_s)
    while True:
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return None
        if text.isdigit() and _alive(int(text)):
            return int(text)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie has let go of its files: not alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): signal 0 is all there is
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]
