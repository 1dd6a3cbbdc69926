"""A damaged store file is one line naming the folder, from every command that opens it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agentmm.memory._lock import DirectoryLock
from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.errors import StoreDamagedError
from tests.test_cli import assert_one_line_error

MEMORY_ON = {"AGENTMM_MEMORY": "true"}


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "chroma.sqlite3").write_bytes(bytes(range(256)) * 20)
    with pytest.raises(StoreDamagedError, match=f"memory store in {folder} is damaged"):
        ChromaStore.from_path(folder)
    lock = DirectoryLock(folder)  # given back: no "in use by" this process
    lock.acquire()
    lock.release()


def test_a_damaged_store_opened_again_in_one_process_is_still_one_error(tmp_path: Path) -> None:
    # chromadb caches a System per path before starting it and kept the half-started one: the
    # second open (a server or REPL retrying) raised AttributeError 'bindings' instead.
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "chroma.sqlite3").write_bytes(bytes(range(256)) * 20)
    for _ in range(2):
        with pytest.raises(StoreDamagedError, match="is damaged"):
            ChromaStore.from_path(folder)
    (folder / "chroma.sqlite3").unlink()  # the folder put right: the same process opens it
    with ChromaStore.from_path(folder) as store:
        store.put(("notes",), "a", {"text": "hello"})
        assert store.get(("notes",), "a") is not None


@pytest.mark.e2e
def test_memory_commands_and_chat_say_the_store_is_damaged(
    isolated_env: Path, agentmm_here: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    # In one process, as a long-running one meets it: every open after the first is the same line.
    store = isolated_env / "data" / "memory"
    store.mkdir(parents=True)
    (store / "chroma.sqlite3").write_bytes(bytes(range(256)) * 20)
    for command in (["memory", "list"], ["chat", "-m", "hi", "--max-tokens", "2"]):
        assert_one_line_error(agentmm_here(*command, env=MEMORY_ON), "is damaged and cannot be opened")
    doctor = agentmm_here("doctor", "--json", env=MEMORY_ON)
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr
    assert "is damaged" in doctor.stdout
