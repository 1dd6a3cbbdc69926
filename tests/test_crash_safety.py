"""A process killed (SIGKILL) in the middle of a turn leaves no half-written turn behind.

Each test runs the turn it kills in a real child process (the code a user runs, with a scripted
model and embedder entering through their LangChain interfaces; turns before it run in this
process), kills it with SIGKILL at a known point
(the child writes a marker file there, then waits), and checks what the next process sees:
a turn cut off before its reply is gone, one cut off while remembering is finished by the next
turn, and a turn a live process is still answering is left alone. An import killed mid-write
leaves a temporary file that the next import sweeps up. ``benchmarks/soak.py`` does the same
with the real model and commands at random moments.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from agentmm.graphs.agent import Agent
from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.conversation import scope
from agentmm.settings import load_settings
from agentmm.threads import list_threads, open_checkpointer, thread_exists, thread_values
from tests.memory.conftest import CharacterEmbeddings

ROOT = Path(__file__).resolve().parents[1]
THREAD = "crash0thread"


class EchoModel(BaseChatModel):
    """Replies "Reply to: <message>", word by word; with ``hang_marker`` it writes that file
    and waits (to be killed) instead of replying."""

    hang_marker: str = ""

    @property
    def _llm_type(self) -> str:
        return "echo"

    def _text(self, messages: list[BaseMessage]) -> str:
        last = next(m for m in reversed(messages) if isinstance(m, HumanMessage))
        return f"Reply to: {last.text.splitlines()[-1]}"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self._text(messages)))])

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Iterator[ChatGenerationChunk]:
        if self.hang_marker:
            _wait_to_be_killed(self.hang_marker)
        for word in self._text(messages).split(" "):
            yield ChatGenerationChunk(message=AIMessageChunk(content=f"{word} "))


class HangingEmbeddings(CharacterEmbeddings):
    """Embeds like the memory tests' embedder; writing memories (``embed_documents``) waits to
    be killed when ``marker`` is set."""

    def __init__(self, marker: str = "") -> None:
        super().__init__(dims=64)
        self.marker = marker

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if self.marker:
            _wait_to_be_killed(self.marker)
        return super().embed_documents(texts)


def _wait_to_be_killed(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(600)


def open_agent(data_dir: Path, *, memory: bool, reply_marker: str = "", remember_marker: str = "") -> Agent:
    settings = load_settings(data_dir=data_dir, memory=memory)
    store = None
    if memory:
        embeddings = HangingEmbeddings(remember_marker)
        store = ChromaStore.from_path(data_dir / "memory", index={"dims": 64, "embed": embeddings, "fields": ["text"]})
    return Agent(settings, model=EchoModel(hang_marker=reply_marker), store=store)


def child(data_dir: str, text: str, memory: str, reply_marker: str, remember_marker: str) -> None:
    """One turn in this process (run by the tests as a child)."""
    agent = open_agent(Path(data_dir), memory=memory == "1", reply_marker=reply_marker,
                       remember_marker=remember_marker)  # fmt: skip
    agent.chat(text, THREAD)
    agent.close()


def start_turn(data_dir: Path, text: str, *, memory: bool, reply_marker: str = "", remember_marker: str = "") -> Any:
    code = "import sys; from tests.test_crash_safety import child; child(*sys.argv[1:])"
    argv = [sys.executable, "-c", code, str(data_dir), text, "1" if memory else "0", reply_marker, remember_marker]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_turn(data_dir: Path, text: str, *, memory: bool) -> None:
    """A whole turn in this process (a test's setup): only the turn that is killed needs a child,
    and a child pays Python's start and the imports (seconds). Agent and store are closed after, so
    the child finds the thread database and the memory store free."""
    agent = open_agent(data_dir, memory=memory)
    store = agent.store  # passed in, so the agent leaves it open
    with agent:
        agent.chat(text, THREAD)
    if isinstance(store, ChromaStore):
        store.close()


def kill_at(proc: Any, marker: Path) -> None:
    """SIGKILL ``proc`` once it has written ``marker`` (it is then waiting inside the turn)."""
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the child never reached the marker"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def messages_of(data_dir: Path) -> list[tuple[str, str]]:
    saver = open_checkpointer(data_dir)
    try:
        values, _ = thread_values(saver, THREAD)
    finally:
        saver.conn.close()
    return [(m.type, m.text.strip()) for m in values.get("messages", [])]


def remembered_turns(data_dir: Path) -> dict[int, set[str]]:
    with ChromaStore.from_path(data_dir / "memory") as store:
        items = store.search(scope("local", None), limit=1000)
    turns: dict[int, set[str]] = {}
    for item in items:
        if item.value.get("thread") == THREAD:
            turns.setdefault(int(item.value["turn"]), set()).add(item.value["role"])
    return turns


def whole_turns(texts: list[str]) -> list[tuple[str, str]]:
    return [pair for text in texts for pair in (("human", text), ("ai", f"Reply to: {text}"))]


def test_a_turn_killed_before_its_reply_is_gone_and_the_thread_goes_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_turn(data, "first", memory=False)
    marker = tmp_path / "replying"
    kill_at(start_turn(data, "cut off", memory=False, reply_marker=str(marker)), marker)

    assert messages_of(data) == whole_turns(["first"])  # not "cut off" without its reply
    with open_agent(data, memory=False) as agent:
        agent.chat("third", THREAD)
    assert messages_of(data) == whole_turns(["first", "third"])


def test_the_next_turn_finishes_a_turn_killed_while_remembering(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_turn(data, "first", memory=True)
    marker = tmp_path / "remembering"
    kill_at(start_turn(data, "second", memory=True, remember_marker=str(marker)), marker)

    assert messages_of(data) == whole_turns(["first", "second"])  # the reply was saved before remembering
    assert remembered_turns(data) == {1: {"user", "assistant"}}
    with open_agent(data, memory=True) as agent:
        result = agent.chat("third", THREAD)
    assert result.reply.strip() == "Reply to: third"
    assert messages_of(data) == whole_turns(["first", "second", "third"])
    assert remembered_turns(data) == {turn: {"user", "assistant"} for turn in (1, 2, 3)}


def test_a_turn_a_live_process_is_answering_is_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run_turn(data, "first", memory=False)
    marker = tmp_path / "replying"
    proc = start_turn(data, "in flight", memory=False, reply_marker=str(marker))
    try:
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)
        assert messages_of(data)[-1] == ("human", "in flight")  # its turn, not rolled back under it
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert messages_of(data) == whole_turns(["first"])


def test_a_thread_whose_only_turn_was_cut_off_is_gone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    marker = tmp_path / "replying"
    kill_at(start_turn(data, "only", memory=False, reply_marker=str(marker)), marker)
    saver = open_checkpointer(data)
    try:
        assert thread_exists(saver, THREAD)  # as the dead process left it
        assert [t.thread_id for t in list_threads(saver)] == []
        assert not thread_exists(saver, THREAD)
    finally:
        saver.conn.close()


def test_an_import_sweeps_up_what_imports_killed_mid_write_left(tmp_path: Path) -> None:
    from agentmm.personas import PersonaRegistry

    folder = tmp_path / "personas"
    folder.mkdir()
    dead = [folder / ".nora.json.k2j4x9.tmp", folder / ".old-friend.png.a8d0qq.tmp"]  # atomic_write's names
    live = folder / ".ada.json.p1z7mm.tmp"  # a write in progress right now
    for path in [*dead, live]:
        path.write_bytes(b"{")
    for path in dead:
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    card = tmp_path / "card.json"
    card.write_text('{"name": "Nora", "description": "a sailor"}')

    PersonaRegistry(folder).install(card)

    assert not any(path.exists() for path in dead)
    assert live.exists()
    assert sorted(p.name for p in folder.iterdir()) == [".ada.json.p1z7mm.tmp", "nora.json"]
