"""The directory lock both embedded Chroma directories use (agentmm.dirlock): who it names when it
refuses, and that a filesystem that cannot lock is a typed error, not a traceback."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agentmm import dirlock
from agentmm.memory._lock import DirectoryLock as StoreLock
from agentmm.memory.errors import MemoryStoreError, StoreInUseError
from agentmm.tools._dirlock import DirectoryLock as ImagesLock
from agentmm.tools.errors import ImageIndexError, ImageIndexInUseError

# Locks the file as a holder does, but writes its PID only when told: the moment between a
# holder's flock and its write, held open for the test.
SLOW_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
sys.stdin.readline()
os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
os.ftruncate(fd, len(f"{os.getpid()}\\n"))
print("written", flush=True)
sys.stdin.read()
"""

LOCKS = [(StoreLock, "agentmm-store.lock", StoreInUseError), (ImagesLock, "agentmm-images.lock", ImageIndexInUseError)]


def _dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


@pytest.mark.parametrize(("lock_type", "filename", "in_use"), LOCKS)
@pytest.mark.parametrize("left_in_file", ["dead holder", "nothing"])
def test_a_refusal_names_the_live_holder_not_a_dead_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lock_type: type, filename: str, in_use: type,
    left_in_file: str,
) -> None:  # fmt: skip
    """Between a holder's lock and its PID write the file names a killed earlier holder (or no
    one): the refused process waits for the live PID instead of naming the dead one."""
    monkeypatch.setattr(dirlock, "PID_WAIT_S", 120.0)  # the holder writes when the test says so
    lock_file = tmp_path / filename
    lock_file.write_text(f"{_dead_pid()}\n" if left_in_file == "dead holder" else "")
    holder = subprocess.Popen([sys.executable, "-c", SLOW_HOLDER, str(lock_file)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        read_once = threading.Event()  # the refused process has read what the file held before
        real_pread = os.pread

        def watched_pread(fd: int, size: int, offset: int) -> bytes:
            try:
                return real_pread(fd, size, offset)
            finally:
                read_once.set()

        monkeypatch.setattr(os, "pread", watched_pread)
        outcome: list[BaseException] = []

        def contend() -> None:
            try:
                lock_type(tmp_path).acquire()
            except BaseException as exc:
                outcome.append(exc)

        contender = threading.Thread(target=contend)
        contender.start()
        assert read_once.wait(60)
        assert holder.stdin is not None  # the PID is written only now
        holder.stdin.write("go\n")
        holder.stdin.flush()
        contender.join(150)
        assert len(outcome) == 1 and isinstance(outcome[0], in_use), outcome
        assert outcome[0].pid == holder.pid
        assert f"in use by PID {holder.pid}" in str(outcome[0])
    finally:
        holder.communicate("", timeout=60)


def test_no_live_holder_named_in_time_says_another_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dirlock, "PID_WAIT_S", 0.1)
    lock_file = tmp_path / "agentmm-store.lock"
    lock_file.write_text(f"{_dead_pid()}\n")
    holder = subprocess.Popen([sys.executable, "-c", SLOW_HOLDER, str(lock_file)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreInUseError) as refused:
            StoreLock(tmp_path).acquire()
        assert refused.value.pid is None
        assert "in use by another process" in str(refused.value)
    finally:
        holder.communicate("go\n", timeout=60)


@pytest.mark.parametrize(("lock_type", "error"), [(StoreLock, MemoryStoreError), (ImagesLock, ImageIndexError)])
def test_a_filesystem_that_cannot_lock_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lock_type: type, error: type
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    lock = lock_type(tmp_path)
    with pytest.raises(error, match="No locks available") as failed:
        lock.acquire()
    assert not isinstance(failed.value, (StoreInUseError, ImageIndexInUseError))
    monkeypatch.undo()
    lock.acquire()  # nothing was left half-held
    lock.release()


def test_the_hold_is_shared_and_counted_within_a_process(tmp_path: Path) -> None:
    first, second = StoreLock(tmp_path), StoreLock(tmp_path)
    first.acquire()
    second.acquire()
    journal = first.journal
    assert second.journal is journal  # one journal per hold: every store's writes in it
    first.release()
    assert (tmp_path / "agentmm-store.lock").read_text().strip() == str(os.getpid())
    second.release()
    assert (tmp_path / "agentmm-store.lock").read_text() == ""
    with pytest.raises(MemoryStoreError, match="not open"):
        _ = second.journal
    third = StoreLock(tmp_path)
    third.acquire()
    assert third.journal.token != journal.token  # a new hold: revisions of the old one mean nothing
    third.release()
