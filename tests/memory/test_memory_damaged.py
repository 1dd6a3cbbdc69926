"""A damaged store file is one line naming the folder, from every command that opens it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmm.memory._lock import DirectoryLock
from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.errors import StoreDamagedError
from tests.test_cli import agentmm, assert_one_line_error

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


@pytest.mark.e2e
def test_memory_commands_and_chat_say_the_store_is_damaged(isolated_env: Path) -> None:
    store = isolated_env / "data" / "memory"
    store.mkdir(parents=True)
    (store / "chroma.sqlite3").write_bytes(bytes(range(256)) * 20)
    for command in (["memory", "list"], ["chat", "-m", "hi", "--max-tokens", "2"]):
        assert_one_line_error(agentmm(*command, env=MEMORY_ON), "is damaged and cannot be opened")
    doctor = agentmm("doctor", "--json", env=MEMORY_ON)
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr
    assert "is damaged" in doctor.stdout
