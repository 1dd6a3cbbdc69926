"""SIGTERM (a kill) and SIGHUP (the terminal closed) in the middle of a streamed reply: the turn
stops as on Ctrl-C, the user's message and the partial reply (marked interrupted) are saved,
then the chat exits 128 + the signal's number. The process died at once, and the turn with it."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.outputs import ChatGenerationChunk

from agentmm.graphs.agent import Agent
from agentmm.graphs.chat import persona_model
from agentmm.repl.session import ChatSession
from agentmm.repl.terminal import Terminal
from agentmm.settings import load_settings
from agentmm.threads import thread_values
from tests.repl.test_session import ScriptedTerminal

REPLY = "The lighthouse keeper rowed out at dawn, and nobody saw him come back that night."


class SignalsMidReply(FakeListChatModel):
    """Streams its reply and, a few tokens in, sends the process ``signum``."""

    signum: int = 0

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for i, chunk in enumerate(super()._stream(*args, **kwargs)):
            if i == 12:
                os.kill(os.getpid(), self.signum)
            if i >= 12:
                time.sleep(0.05)  # the handler runs on the main thread meanwhile, however loaded
            yield chunk

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        i = 0
        async for chunk in super()._astream(*args, **kwargs):
            if i == 12:
                os.kill(os.getpid(), self.signum)
            if i >= 12:
                time.sleep(0.05)
            i += 1
            yield chunk


@pytest.fixture(autouse=True)
def no_death_by_signal() -> Iterator[None]:
    """The signals are sent to this (pytest's) process: where the chat's handler is missing (the
    regression these tests look for), one that raises fails the test instead of killing the run."""

    def guard(signum: int, frame: Any) -> None:
        raise RuntimeError(f"signal {signum} reached no handler of the chat's")

    before = {number: signal.signal(number, guard) for number in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for number, handler in before.items():
        signal.signal(number, handler)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_a_signal_mid_reply_saves_the_turn_then_ends_the_chat(tmp_path: Path, name: str) -> None:
    signum = getattr(signal, name)
    settings = load_settings(data_dir=tmp_path / "data", n_ctx=2048, max_tokens=128)
    before = signal.getsignal(signum)
    term = ScriptedTerminal(["Where did the keeper go?", "this line is never sent"])
    with Agent(settings, model=SignalsMidReply(responses=[REPLY], signum=signum)) as agent:
        session = ChatSession(agent, term, persona_model=persona_model)
        with pytest.raises(SystemExit) as ended:
            session.run()
        assert ended.value.code == 128 + signum
        assert signal.getsignal(signum) is before  # the turn's handler is gone
        saved = thread_values(agent.checkpointer, session.thread_id)[0]["messages"]
    assert [m.type for m in saved] == ["human", "ai"]
    assert saved[0].text == "Where did the keeper go?"
    assert saved[1].response_metadata.get("interrupted") is True
    assert 0 < len(saved[1].text) < len(REPLY) and REPLY.startswith(saved[1].text.strip())
    said = term.stderr.strip().splitlines()
    if name == "SIGTERM":  # one line says what became of the turn
        assert said[-1] == f"[terminated: what was said so far is saved in thread {session.thread_id}]"
        assert term.stdout.strip().endswith("[interrupted]")
    else:  # the terminal is gone: nothing more is written to it
        assert not any("terminated" in line for line in said)


class KilledAtThePrompt(ScriptedTerminal):
    """A line editor's terminal (the chat's SIGTERM handler is in only then) whose user types
    ``lines``; the prompt after them gets SIGTERM, and returns as the editor's does then."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines)
        self.editor = True

    def setup_editor(self, completer: Any, toolbar: Any) -> None:
        """No prompt_toolkit session: ``read`` stands in for it."""

    def read(self) -> str | None:
        if self.lines:
            return self.lines.pop(0)
        os.kill(os.getpid(), signal.SIGTERM)
        return None


@pytest.mark.parametrize("lines", [[], ["Where did the keeper go?"]])
def test_sigterm_at_the_prompt_says_what_was_saved(tmp_path: Path, lines: list[str]) -> None:
    """At the prompt of a new thread where nothing was said, SIGTERM said "what was said so far
    is saved in thread X", a thread there is none of: it says nothing was saved, and exits 143."""
    from agentmm.threads import thread_exists

    settings = load_settings(data_dir=tmp_path / "data", n_ctx=2048, max_tokens=128)
    term = KilledAtThePrompt(lines)
    with Agent(settings, model=FakeListChatModel(responses=["At dawn."])) as agent:
        session = ChatSession(agent, term, persona_model=persona_model)
        with pytest.raises(SystemExit) as ended:
            session.run()
        saved = thread_exists(agent.checkpointer, session.thread_id)
    assert ended.value.code == 143
    said = term.stderr.strip().splitlines()[-1]
    if lines:
        assert saved and said == f"[terminated: what was said so far is saved in thread {session.thread_id}]"
    else:
        assert not saved and said == "[terminated: nothing was said, so nothing was saved]"


@pytest.mark.parametrize("as_json", [False, True])
def test_chat_m_saves_a_turn_a_sigterm_stops_and_exits_143(
    tmp_path: Path, as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """`chat -m` died at once on SIGTERM, its turn rolled back: the message and the reply gone."""
    from agentmm.cli import _one_turn

    settings = load_settings(data_dir=tmp_path / "data", n_ctx=2048, max_tokens=128)
    before = signal.getsignal(signal.SIGTERM)
    with Agent(settings, model=SignalsMidReply(responses=[REPLY], signum=signal.SIGTERM)) as agent:
        with pytest.raises(SystemExit) as ended:
            _one_turn(agent, "Where did the keeper go?", "keeper", as_json, None, 0, [])
        assert ended.value.code == 143 and signal.getsignal(signal.SIGTERM) is before
        saved = thread_values(agent.checkpointer, "keeper")[0]["messages"]
    assert [m.type for m in saved] == ["human", "ai"] and saved[1].response_metadata.get("interrupted") is True
    out, err = capsys.readouterr()
    assert err.splitlines() == ["agentmm: terminated: what was said so far is saved in thread keeper"]
    if as_json:
        assert '"interrupted": true' in out
    else:
        assert REPLY.startswith(out.strip()) and out.strip()


class PipedTerminal(ScriptedTerminal):
    """The plain terminal a piped chat has: ``read`` is ``Terminal``'s own (``input()``)."""

    read = Terminal.read


def test_sigterm_at_a_piped_prompt_says_what_was_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A piped chat (no line editor) killed while its prompt waited for a line exited 143 without
    the '[terminated: ...]' line a terminal's chat says: SIGTERM had no handler of the chat's."""
    term = PipedTerminal([])
    settings = load_settings(data_dir=tmp_path / "data", n_ctx=2048, max_tokens=5)

    def kill_once_the_prompt_waits() -> None:
        deadline = time.monotonic() + 10
        while "/help" not in term.stdout and time.monotonic() < deadline:  # /help's list is out
            time.sleep(0.02)
        time.sleep(0.3)  # the prompt is back in input(), waiting on the pipe
        os.kill(os.getpid(), signal.SIGTERM)

    reading, writing = os.pipe()
    os.write(writing, b"/help\n")  # and the pipe stays open: the next read waits
    with open(reading, encoding="utf-8") as stdin, open(writing, "wb"):
        monkeypatch.setattr("sys.stdin", stdin)
        with Agent(settings, model=FakeListChatModel(responses=["At dawn."])) as agent:
            session = ChatSession(agent, term, persona_model=persona_model)
            killer = threading.Thread(target=kill_once_the_prompt_waits, daemon=True)
            killer.start()
            with pytest.raises(SystemExit) as ended:
                session.run()
            killer.join()
    assert ended.value.code == 143
    assert term.stderr.strip().splitlines()[-1] == "[terminated: nothing was said, so nothing was saved]"
