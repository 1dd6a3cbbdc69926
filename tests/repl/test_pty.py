"""The real REPL in a pseudo-terminal on the shipped model: what a person at a keyboard does.

Each prompt_toolkit prompt turns bracketed paste on when it starts and off when the line is
accepted; those two escape codes tell the test when the REPL is waiting for input, without
sleeping or guessing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from agentmm.repl.terminal import STOP_GRACE_S
from tests.test_cli import Run

pexpect = pytest.importorskip("pexpect")

pytestmark = pytest.mark.e2e

PROMPT_READY, LINE_ACCEPTED = "\x1b[?2004h", "\x1b[?2004l"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def plain(text: str) -> str:
    return ANSI.sub("", text)


class Repl:
    """``agentmm chat`` in a 100x30 pseudo-terminal."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1", "PYTHONFAULTHANDLER": "1"}
        env.pop("NO_COLOR", None)
        self.child = pexpect.spawn(sys.executable, ["-m", "agentmm.cli", "chat", *args], env=env,
                                   dimensions=(30, 100), encoding="utf-8", timeout=120)  # fmt: skip
        self.expect(PROMPT_READY)
        self.opening = plain(self.child.before)

    def expect(self, text: str) -> None:
        """Wait for ``text``; on a timeout, fail with every thread's stack of the child."""
        try:
            self.child.expect_exact(text)
        except pexpect.TIMEOUT:
            seen = self.child.before
            self.child.kill(signal.SIGABRT)  # faulthandler prints the stacks
            with contextlib.suppress(pexpect.TIMEOUT, pexpect.EOF):
                self.child.expect(pexpect.EOF, timeout=20)
            pytest.fail(f"no {text!r} within 120 s; the REPL wrote {seen[-2000:]!r}, then:\n{self.child.before}")

    def say(self, line: str) -> str:
        """Send a line, wait for the next prompt; what the REPL wrote in between."""
        self.child.send(line + "\r")
        self.expect(LINE_ACCEPTED)
        self.expect(PROMPT_READY)
        return plain(self.child.before)

    def leave(self, key: str) -> str:
        self.child.send(key)
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert self.child.exitstatus == 0
        return plain(self.child.before)


def thread_json(thread_id: str, run: Run) -> dict:
    """``threads show --json``, run by ``run`` (conftest's ``agentmm_here``: in this process, as
    what the chat saved is the point, not another process's start)."""
    done = run("threads", "show", thread_id, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def read_until_streaming(repl: Repl) -> str:
    """What the chat shows until some 20 word characters of a reply have streamed (not the spinner)."""
    streamed = ""
    deadline = time.monotonic() + 120
    while len(re.findall(r"\w", plain(streamed).replace("loading the model", ""))) < 20:
        assert time.monotonic() < deadline, streamed
        with contextlib.suppress(pexpect.TIMEOUT):
            streamed += repl.child.read_nonblocking(4096, timeout=1)
    return streamed


@pytest.mark.slow
def test_a_session_at_the_keyboard(tmp_path: Path, agentmm_here: Run) -> None:
    repl = Repl("--max-tokens", "24", "--seed", "3", "--temperature", "0")
    assert "/help for commands" in repl.opening and "Alt-Enter" in repl.opening
    assert plain(repl.say("Hi, I am Mira.")).strip()
    why = repl.say("/why")
    assert "prompt parts" in why and "message" in why and "timings" in why
    assert "retrying: Hi, I am Mira." in repl.say("/retry")
    assert "saved 2 messages" in repl.say(f"/save {tmp_path / 't.md'}")
    assert "saved 2 messages" in repl.say(f"/save {tmp_path / 't.json'}")
    repl.say("What is my name?")
    assert "undone: What is my name?" in repl.say("/undo")
    # Bad input: one clear line each, and the session goes on.
    assert "did you mean /help?" in repl.say("/hepl")
    assert "no such file" in repl.say(f"/image {tmp_path / 'missing.png'}")
    assert "unknown thread 'nope'" in repl.say("/resume nope")
    pasted = repl.say("\x1b[200~" + "word " * 200_000 + "\x1b[201~")  # a 1 MB bracketed paste
    assert "shorten it or raise n_ctx" in pasted and "Traceback" not in pasted
    goodbye = repl.leave("\x04")  # Ctrl-D
    thread_id = re.search(r"\[thread (\w+)\]", goodbye).group(1)  # type: ignore[union-attr]
    assert json.loads((tmp_path / "t.json").read_text())["thread_id"] == thread_id
    assert "**User:**" in (tmp_path / "t.md").read_text()
    shown = thread_json(thread_id, agentmm_here)
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant"]

    # A new process resumes the thread; Ctrl-C twice during a reply keeps it, marked interrupted.
    repl = Repl("--thread", thread_id, "--max-tokens", "400", "--temperature", "0.9")
    assert "Hi, I am Mira." in repl.opening
    repl.child.send("Tell me a very long story about a dragon and a knight.\r")
    repl.child.expect_exact(LINE_ACCEPTED)
    read_until_streaming(repl)
    repl.child.send("\x03\x03")  # a double tap: the second press must not cut the save
    repl.expect(PROMPT_READY)
    assert "[interrupted]" in plain(repl.child.before)
    repl.child.send("\x03")  # the tap landing on the prompt just after the stop does not leave
    time.sleep(STOP_GRACE_S + 0.3)
    assert repl.child.isalive()
    repl.leave("\x03")  # Ctrl-C at an empty prompt leaves
    shown = thread_json(thread_id, agentmm_here)
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant", "user", "assistant"]
    assert shown["messages"][-1]["interrupted"] is True
    assert shown["messages"][-1]["content"].strip()


def test_piped_script_runs_commands_in_plain_text(tmp_path: Path, agentmm_here: Run) -> None:
    """In this process (``agentmm_here``, stdin a pipe as ``subprocess.run``'s input is): the
    plain-text output is the point, not the process."""
    script = f"Hello there\n/why\n/save {tmp_path / 'out.md'}\n/nope\n/exit\n"
    done = agentmm_here("chat", "--max-tokens", "12", stdin=script)
    assert done.returncode == 0, done.stderr
    assert "prompt parts" in done.stdout and "\x1b[" not in done.stdout
    assert "agentmm: error: unknown command /nope" in done.stderr
    assert (tmp_path / "out.md").read_text().count("**") >= 4


def test_ctrl_c_while_the_model_loads_then_the_next_message_is_answered(agentmm_here: Run) -> None:
    """The issue's steps: a message as soon as the prompt shows (the model still loading), Ctrl-C,
    and the next message typed at once, while the first turn is still winding down. That line
    used to reach the next prompt with Enter turned into a line feed (a new line, not "send"):
    it sat under a ``....`` continuation until another Enter, and its reply never came."""
    repl = Repl("--max-tokens", "200", "--seed", "3", "--temperature", "0")
    repl.child.send("Hello, who are you?\r")
    repl.expect(LINE_ACCEPTED)
    repl.child.send("\x03")
    repl.child.send("What is the capital of France?\r")
    repl.expect(PROMPT_READY)  # the first turn ended
    first = plain(repl.child.before)
    assert "[interrupted]" in first
    assert "capital of France" not in first  # type-ahead is not echoed into the reply
    repl.expect(LINE_ACCEPTED)  # the typed-ahead line is sent from the next prompt, as typed
    repl.expect(PROMPT_READY)
    assert plain(repl.child.before).strip()
    thread_id = re.search(r"\[thread (\w+)\]", repl.leave("\x04")).group(1)  # type: ignore[union-attr]
    shown = thread_json(thread_id, agentmm_here)["messages"]
    assert [m["role"] for m in shown] == ["user", "assistant", "user", "assistant"]
    assert shown[1]["interrupted"] is True
    assert shown[2]["content"] == "What is the capital of France?"
    assert shown[3]["content"].strip() and not shown[3].get("interrupted")


def test_a_line_typed_while_a_reply_streams_is_the_next_message(agentmm_here: Run) -> None:
    repl = Repl("--max-tokens", "120", "--seed", "3", "--temperature", "0")
    repl.child.send("Tell me a very long story about a dragon and a knight.\r")
    repl.expect(LINE_ACCEPTED)
    streamed = read_until_streaming(repl)
    assert PROMPT_READY not in streamed  # still streaming: what follows is type-ahead
    repl.child.send("And then?\r")
    repl.expect(PROMPT_READY)  # the story ended on its own
    story = plain(streamed + repl.child.before)
    assert "And then?" not in story and "[interrupted]" not in story
    repl.expect(LINE_ACCEPTED)  # the next prompt shows the line and sends it
    assert "you> And then?" in plain(repl.child.before)
    repl.expect(PROMPT_READY)
    assert plain(repl.child.before).strip()
    thread_id = re.search(r"\[thread (\w+)\]", repl.leave("\x04")).group(1)  # type: ignore[union-attr]
    shown = thread_json(thread_id, agentmm_here)["messages"]
    assert [m["content"] for m in shown if m["role"] == "user"] == [
        "Tell me a very long story about a dragon and a knight.",
        "And then?",
    ]
    assert [m["role"] for m in shown] == ["user", "assistant", "user", "assistant"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_at_the_prompt_gives_the_terminal_back(signum: int) -> None:
    """At the prompt they killed the chat the default way, the editor's raw mode left on (no
    echo, no line editing, bracketed paste on): the chat now leaves as on Ctrl-D, the terminal
    as it was, and exits 128 + the signal's number."""
    import termios

    repl = Repl()
    modes = termios.ECHO | termios.ICANON | termios.ISIG
    assert termios.tcgetattr(repl.child.child_fd)[3] & modes == 0  # the editor's raw mode
    repl.child.kill(signum)
    repl.child.expect(pexpect.EOF)
    assert termios.tcgetattr(repl.child.child_fd)[3] & modes == modes
    assert LINE_ACCEPTED in repl.child.before  # bracketed paste off again
    repl.child.close()
    assert repl.child.exitstatus == 128 + signum
