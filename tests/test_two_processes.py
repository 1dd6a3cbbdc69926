"""Two processes, one data dir (issue 13): a second ``agentmm`` process against a data dir another
process holds either works or is refused with one line naming the holder's PID; a holder that was
killed (SIGKILL) never blocks the next process. Real processes, real CLI, no model loaded."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agentmm.memory.errors import StoreInUseError
from agentmm.tools.errors import ImageIndexInUseError

REPO = Path(__file__).resolve().parents[1]

HOLD = """
import sys
from pathlib import Path
from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.manage import add_memory
from agentmm.tools.clip_search import ImageIndex

data = Path(sys.argv[1])
store = ChromaStore.from_path(data / "memory")  # no embedder: nothing to load
add_memory(store, "local", None, "written by the holder")
index = ImageIndex(data, pretrained=None)
print("holding", flush=True)
sys.stdin.read()  # until the test lets go (or kills this process)
index.close()
store.close()
print("released", flush=True)
"""


def _holder(data: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(data)], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert holder.stdout is not None
    line = holder.stdout.readline().strip()
    if line != "holding":
        holder.kill()
        pytest.fail(f"the holder did not start: {line!r} {holder.communicate()[1][-2000:]}")
    return holder


def agentmm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentmm.cli", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)  # fmt: skip


def assert_refused(done: subprocess.CompletedProcess[str], what: str, pid: int) -> None:
    """Refused as the contract says: non-zero exit, one line on stderr naming the holder, no traceback."""
    assert done.returncode != 0, done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert re.match(rf"agentmm: error: {what} \S+ is in use by PID {pid}\b", lines[0]), lines[0]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    return folder


@pytest.mark.slow
def test_a_second_process_is_refused_with_one_line_then_works(
    isolated_env: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTMM_MEMORY", "true")  # a chat opens the memory store (off in tests by default)
    data = isolated_env / "data"
    holder = _holder(data)
    try:
        for _ in range(3):
            assert_refused(agentmm("memory", "add", "a note from the second process"), "memory store", holder.pid)
        assert_refused(agentmm("images", "index", str(images)), "image index", holder.pid)
        assert_refused(agentmm("chat", "-m", "Hello!", "--max-tokens", "4"), "memory store", holder.pid)
        assert_refused(agentmm("memory", "stats"), "memory store", holder.pid)
    finally:
        out, err = holder.communicate("", timeout=120)
    assert holder.returncode == 0 and out.strip().endswith("released"), err
    # Let go: the next process opens both, and the store holds exactly what the holder wrote.
    stats, listed = agentmm("memory", "stats", "--json"), agentmm("memory", "list", "--json")
    assert stats.returncode == 0 and listed.returncode == 0, stats.stderr + listed.stderr
    assert json.loads(stats.stdout)["total"] == 1
    assert [m["value"]["content"] for m in json.loads(listed.stdout)["memories"]] == ["written by the holder"]
    indexed = agentmm("images", "index", str(images), "--json")
    assert indexed.returncode == 0, indexed.stderr
    assert json.loads(indexed.stdout)["failed"] == []


def test_a_killed_holder_does_not_block_the_next_process(isolated_env: Path, images: Path) -> None:
    data = isolated_env / "data"
    holder = _holder(data)
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=60)
    # Its PID is still written in both lock files; the kernel dropped its locks when it died.
    locks = sorted(data.glob("**/agentmm-*.lock"))
    assert len(locks) == 2 and all(p.read_text().strip() == str(holder.pid) for p in locks)
    stats = agentmm("memory", "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["total"] == 1
    indexed = agentmm("images", "index", str(images), "--json")
    assert indexed.returncode == 0, indexed.stderr
    # The next holder is refused with its own PID, never the dead one's.
    second = _holder(data)
    try:
        assert_refused(agentmm("memory", "add", "x"), "memory store", second.pid)
    finally:
        second.communicate("", timeout=120)
    assert second.returncode == 0


def test_refusals_in_the_library_are_typed(isolated_env: Path) -> None:
    from agentmm.memory.chroma_store import ChromaStore
    from agentmm.tools.clip_search import ImageIndex

    data = isolated_env / "data"
    holder = _holder(data)
    try:
        with pytest.raises(StoreInUseError) as store_refused:
            ChromaStore.from_path(data / "memory")
        with pytest.raises(ImageIndexInUseError) as index_refused:
            ImageIndex(data, pretrained=None)
        assert store_refused.value.pid == index_refused.value.pid == holder.pid
    finally:
        holder.communicate("", timeout=120)


# Runs one quick turn to make thread T, then a second turn whose model waits for a gate file:
# a process that is in the middle of a reply on T, for as long as the test wants.
ANSWERING = """
import sys, time
from pathlib import Path
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from agentmm.graphs.agent import Agent
from agentmm.settings import load_settings

class GatedModel(BaseChatModel):
    gate: str

    @property
    def _llm_type(self) -> str:
        return "gated"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        if Path(self.gate).with_suffix(".open").exists():
            print("answering", flush=True)
            while not Path(self.gate).exists():
                time.sleep(0.05)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="a reply"))])

gate = sys.argv[1]
agent = Agent(load_settings(), model=GatedModel(gate=gate))
first = agent.chat("the first message")
print("thread", first.thread_id, flush=True)
Path(gate).with_suffix(".open").touch()
agent.chat("the second message", first.thread_id)
agent.close()
print("done", flush=True)
"""


@pytest.mark.slow
def test_a_turn_on_a_thread_another_process_is_answering_in_is_refused(isolated_env: Path) -> None:
    """Memory off (no store lock): a second process's turn on the thread another process is
    answering in is refused with one line, and the thread keeps whole turns; it used to go
    through and be lost under the other process's turn."""
    gate = isolated_env / "gate"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    answering = subprocess.Popen([sys.executable, "-c", ANSWERING, str(gate)], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert answering.stdout is not None
        thread = answering.stdout.readline().split()[-1]
        assert answering.stdout.readline().strip() == "answering", answering.stderr
        second = agentmm("chat", "-m", "a message from another process", "--thread", thread, "--max-tokens", "4")
        assert_refused(second, "thread", answering.pid)
        elsewhere = agentmm("chat", "-m", "a message in a thread of its own", "--max-tokens", "4", "--json")
        assert elsewhere.returncode == 0, elsewhere.stderr  # other threads are not held up
    finally:
        gate.touch()
        out, err = answering.communicate(timeout=120)
    assert answering.returncode == 0 and out.strip().endswith("done"), err
    # The answering process's end-of-turn flush once closed a descriptor of the database and so
    # dropped its SQLite locks while this process wrote: the file came out corrupted.
    with sqlite3.connect(isolated_env / "data" / "threads.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    shown = json.loads(agentmm("threads", "show", thread, "--json").stdout)
    assert [(m["role"], m["content"]) for m in shown["messages"]] == [
        ("user", "the first message"), ("assistant", "a reply"),
        ("user", "the second message"), ("assistant", "a reply"),
    ]  # fmt: skip
    after = agentmm("chat", "-m", "now it may", "--thread", thread, "--max-tokens", "4")
    assert after.returncode == 0, after.stderr
