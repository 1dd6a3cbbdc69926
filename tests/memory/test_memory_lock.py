"""One process per embedded store directory: a second process gets a typed error naming the holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agentmm.memory import MemoryStoreError, StoreInUseError
from agentmm.memory._lock import LOCK_FILENAME, DirectoryLock
from agentmm.memory.chroma_store import ChromaStore

REPO = Path(__file__).resolve().parents[2]

OPEN_STORE = """
import sys
from agentmm.memory import ChromaStore, StoreInUseError
try:
    ChromaStore.from_path(sys.argv[1]).close()
except StoreInUseError as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(3)
print("opened")
"""

HOLD_LOCK = """
import sys, time
from pathlib import Path
from agentmm.memory._lock import DirectoryLock
DirectoryLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def _python(code: str, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def test_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    with ChromaStore.from_path(directory) as store:
        store.put(("t",), "k", {"v": 1})
        child = _python(OPEN_STORE, str(directory))
        out, err = child.communicate(timeout=60)
        assert child.returncode == 3, err
        assert f"StoreInUseError: memory store {directory.resolve()} is in use by PID {os.getpid()}" in out
    # Closed: now the other process may open it.
    child = _python(OPEN_STORE, str(directory))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.strip() == "opened"


def test_lock_of_a_killed_process_is_recovered(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    holder = _python(HOLD_LOCK, str(directory))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreInUseError) as refused:
            ChromaStore.from_path(directory)
        assert refused.value.pid == holder.pid
        assert f"in use by PID {holder.pid}" in str(refused.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=30)
    # The dead holder's PID is still written in the file; the kernel has dropped its lock.
    assert (directory / LOCK_FILENAME).read_text().strip() == str(holder.pid)
    with ChromaStore.from_path(directory) as store:
        store.put(("t",), "k", {"v": 1})
        assert (directory / LOCK_FILENAME).read_text().strip() == str(os.getpid())
    assert (directory / LOCK_FILENAME).read_text() == ""


def test_lock_is_counted_within_a_process(tmp_path: Path) -> None:
    first, second = DirectoryLock(tmp_path), DirectoryLock(tmp_path)
    first.acquire()
    second.acquire()
    first.release()
    child = _python(OPEN_STORE, str(tmp_path))
    assert child.communicate(timeout=60)[0].startswith("StoreInUseError")
    second.release()
    second.release()  # releasing twice is harmless
    child = _python(OPEN_STORE, str(tmp_path))
    assert child.communicate(timeout=60)[0].strip() == "opened"


def test_unwritable_directory_is_a_typed_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(MemoryStoreError) as err:
        ChromaStore.from_path(blocker / "store")
    assert "cannot be opened" in str(err.value)
