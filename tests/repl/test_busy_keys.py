"""Keys typed while the chat is busy, on a real pseudo-terminal but without a model: they are not
echoed, Ctrl-C is counted (never kept), and the rest is the next prompt's input, Enter included."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentmm.repl.busy_keys import BusyKeys
from agentmm.repl.terminal import Terminal
from agentmm.repl.turns import run_turn
from tests.repl.screen import Screen
from tests.repl.test_reply_screen import terminal as screen_terminal
from tests.repl.test_reply_screen import written
from tests.repl.test_session import FakeTurn, ScriptedTerminal

pytest.importorskip("prompt_toolkit")


@pytest.fixture
def tty() -> Iterator[tuple[int, Any]]:
    """(the keyboard's end, the line editor's Input over the terminal's end)."""
    from prompt_toolkit.input.vt100 import Vt100Input

    keyboard, terminal = os.openpty()
    with os.fdopen(terminal, "r", encoding="utf-8") as stdin:
        yield keyboard, Vt100Input(stdin)
    os.close(keyboard)


def type_keys(keyboard: int, source: Any, data: bytes) -> None:
    os.write(keyboard, data)
    assert select.select([source.fileno()], [], [], 10)[0], "the typed keys never arrived"


def test_typed_ahead_keys_reach_the_next_prompt_and_send_the_line(tty: tuple[int, Any]) -> None:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.keys import Keys
    from prompt_toolkit.output import DummyOutput

    keyboard, source = tty
    cooked = termios.tcgetattr(source.fileno())
    with BusyKeys(source) as keys:
        type_keys(keyboard, source, b"and th\x03en?\r")
        assert keys.poll() == 1
        assert [k.key for k in keys.kept][-1] == Keys.ControlM  # Enter, not a line feed (Ctrl-J: a new line)
        type_keys(keyboard, source, b"\x03")  # pressed after the last poll: read, and dropped, at the end
    assert termios.tcgetattr(source.fileno()) == cooked
    assert not select.select([keyboard], [], [], 0)[0], "keys were echoed"
    line = PromptSession(input=source, output=DummyOutput()).prompt("you> ")
    assert line == "and then?"


def test_a_y_n_question_during_the_turn_keeps_later_keys_after_earlier_ones(tty: tuple[int, Any]) -> None:
    from prompt_toolkit.input.typeahead import get_typeahead, store_typeahead
    from prompt_toolkit.key_binding import KeyPress
    from prompt_toolkit.keys import Keys

    keyboard, source = tty
    with BusyKeys(source) as keys:
        type_keys(keyboard, source, b"ab")
        keys.poll()
        store_typeahead(source, [KeyPress("c"), KeyPress(Keys.ControlC)])  # what the question's prompt left over
        keys.keep(get_typeahead(source))
    assert [k.key for k in get_typeahead(source)] == ["a", "b", "c"]


def test_a_line_typed_before_the_prompt_is_sent_by_its_enter(tty: tuple[int, Any]) -> None:
    """Typed while the chat starts (the terminal still cooked, so the kernel made Enter a line
    feed, which the editor reads as Ctrl-J, "new line"): the line is sent, not left under a
    continuation waiting for a second Enter."""
    keyboard, source = tty
    assert termios.tcgetattr(source.fileno())[0] & termios.ICRNL  # cooked, as a terminal is before the prompt
    type_keys(keyboard, source, b"Hello there\r")
    with editor_on(source) as term:
        second_enter = threading.Timer(3, os.write, (keyboard, b"\r"))  # what the old editor waited for
        second_enter.start()
        try:
            line = term.read()
        finally:
            second_enter.cancel()
    assert line == "Hello there"


def test_ctrl_z_at_the_prompt_suspends_as_in_a_shell_and_types_nothing(
    tty: tuple[int, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-Z stops the chat (SIGTSTP, ``fg`` brings it back) where the system has job control;
    it put a ``^Z`` into the message. (The stop itself is prompt_toolkit's: recorded here, since
    a real one would stop the test's whole process group.)"""
    suspended = recorded_suspends(monkeypatch)
    keyboard, source = tty
    with editor_on(source) as term:
        threading.Timer(0.5, os.write, (keyboard, b"ab\x1acd\r")).start()  # at the prompt: its terminal raw
        line = term.read()
    assert line == "abcd" and suspended == [True]


def recorded_suspends(monkeypatch: pytest.MonkeyPatch, stopped: bool = True) -> list[bool]:
    """The line editor's Ctrl-Z stop, recorded (True each time) instead of stopping the test's
    whole process group, and taken to have ``stopped`` it; skips where the system has no job
    control."""
    from agentmm.repl import busy_keys

    if not hasattr(signal, "SIGTSTP"):
        pytest.skip("no job control here")
    suspended: list[bool] = []
    monkeypatch.setattr(busy_keys, "stop_job", lambda: suspended.append(True) or stopped)
    return suspended


def test_ctrl_z_at_the_prompt_without_job_control_says_so_in_one_line(
    tty: tuple[int, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where no shell can continue the chat (a tmux pane's own program, ``ssh -t``) the kernel
    discards the stop: at the prompt Ctrl-Z did nothing and said nothing, while during a reply
    a line said why."""
    from agentmm.repl.busy_keys import NO_JOB_CONTROL

    suspended = recorded_suspends(monkeypatch, stopped=False)
    keyboard, source = tty
    with editor_on(source) as term:
        threading.Timer(0.5, os.write, (keyboard, b"ab\x1acd\r")).start()
        line = term.read()
    assert line == "abcd" and suspended == [True]
    assert capsys.readouterr().err.splitlines() == [NO_JOB_CONTROL]


@contextlib.contextmanager
def editor_on(source: Any) -> Iterator[Terminal]:
    """The chat's line editor reading ``source`` (the pseudo-terminal's end), its output dropped."""
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.output import DummyOutput

    term = Terminal(editor=True, live=False)
    with create_app_session(input=source, output=DummyOutput()):
        term.setup_editor(None, lambda: "")
        yield term


def test_ctrl_z_at_the_tool_question_suspends_and_types_nothing(
    tty: tuple[int, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was typed into the answer (``^Zy``: the call denied)."""
    suspended = recorded_suspends(monkeypatch)
    keyboard, source = tty
    with editor_on(source) as term:
        threading.Timer(0.5, os.write, (keyboard, b"\x1ay\r")).start()
        assert term.confirm("allow tool call roll_dice(notation='d6')?")
    assert suspended == [True]


def test_ctrl_z_during_a_reply_suspends_at_once_and_is_not_type_ahead(
    tty: tuple[int, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was dropped without a word. Now the chat stops as a shell's job there and then, the
    terminal cooked for the shell while it is stopped and raw again after ``fg``. (The stop is
    recorded: a real one would stop the test's whole process group.)"""
    import signal

    from prompt_toolkit.input.typeahead import get_typeahead

    from agentmm.repl import busy_keys

    if not hasattr(signal, "SIGTSTP"):
        pytest.skip("no job control here")
    modes: list[bool] = []  # whether the terminal was cooked (echo, lines) at each stop
    monkeypatch.setattr(busy_keys, "stop_job", lambda: modes.append(bool(termios.tcgetattr(source.fileno())[3]
                                                                         & termios.ICANON)) or True)  # fmt: skip
    keyboard, source = tty
    cooked = termios.tcgetattr(source.fileno())
    with BusyKeys(source) as keys:
        type_keys(keyboard, source, b"a\x1ab")
        keys.poll()
        assert modes == [True] and keys.suspended
        assert not termios.tcgetattr(source.fileno())[3] & termios.ICANON  # raw again: keys are still read
    assert termios.tcgetattr(source.fileno()) == cooked
    assert [k.key for k in get_typeahead(source)] == ["a", "b"]


STOP_JOB = "from agentmm.repl.busy_keys import stop_job; print(stop_job(), flush=True)"


@pytest.mark.skipif(not hasattr(signal, "SIGTSTP"), reason="no job control here")
def test_ctrl_z_without_job_control_stops_nothing_and_says_so() -> None:
    """A process group no shell can continue (a session's own, as a tmux pane's program or
    ``ssh -t host agentmm chat`` runs): the kernel discards the stop; the chat took it for one."""
    run = subprocess.run([sys.executable, "-c", STOP_JOB], start_new_session=True, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.stdout.strip() == "False", run.stderr


@pytest.mark.skipif(not hasattr(signal, "SIGTSTP"), reason="no job control here")
def test_ctrl_z_under_job_control_is_a_stop_and_a_continue() -> None:
    child = subprocess.Popen([sys.executable, "-c", STOP_JOB], process_group=0, stdout=subprocess.PIPE, text=True)
    try:
        _, status = os.waitpid(child.pid, os.WUNTRACED)  # a job of ours: we are its shell
        assert os.WIFSTOPPED(status)
        os.kill(child.pid, signal.SIGCONT)  # fg
        assert child.communicate(timeout=60)[0].strip() == "True"
    finally:
        child.kill()
        child.wait()


def test_a_ctrl_z_that_stopped_nothing_leaves_the_reply_where_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reply went on as if a shell had written lines in between: its next word was glued to
    the last one, and a line said nothing of why Ctrl-Z did nothing."""
    from prompt_toolkit.key_binding import KeyPress
    from prompt_toolkit.keys import Keys

    from agentmm.repl import busy_keys

    class Keyboard:  # the line editor's Input, where a Ctrl-Z was typed
        def __init__(self) -> None:
            self.pending = [[KeyPress(Keys.ControlZ, "\x1a")]]

        def raw_mode(self) -> Any:
            return contextlib.nullcontext()

        def read_keys(self) -> list[Any]:
            return self.pending.pop() if self.pending else []

        def typeahead_hash(self) -> str:
            return "keyboard"

    monkeypatch.setattr(busy_keys, "stop_job", lambda: False)  # the kernel discarded the stop
    term = screen_terminal(100)
    term.reply_start()
    term.reply_chunk("Let me roll ")
    with BusyKeys(Keyboard()) as term._busy:
        assert term.ctrl_c_presses() == 0
    term._busy = None
    term.reply_chunk("a seven.")
    term.reply_end(False)
    lines = Screen(100).feed(written(term)).lines
    assert (lines[0], lines[-1]) == ("Let me roll", "a seven.")  # not "Let me rolla seven."
    assert lines[1:-1] == [busy_keys.NO_JOB_CONTROL]


class KeyboardTerminal(ScriptedTerminal):
    """A terminal whose user presses Ctrl-C on the keyboard (a key, no signal) at the second chunk."""

    def __init__(self) -> None:
        super().__init__([])
        self.polls = 0

    @property
    def holds_keys(self) -> bool:
        return True

    def ctrl_c_presses(self) -> int:
        self.polls += 1
        return 1 if self.polls == 3 else 0


def test_ctrl_c_read_as_a_key_stops_the_reply() -> None:
    class SlowTurn(FakeTurn):
        def __iter__(self) -> Iterator[str]:
            import time

            for chunk in self.chunks:
                if self.cancelled:
                    break
                yield chunk
                time.sleep(0.2)
            self.result = type("Result", (), {"interrupted": self.cancelled, "trace": {}})()

    term = KeyboardTerminal()
    turn = SlowTurn(["a", "b", "c", "d", "e", "f"])
    outcome = run_turn(turn, term)
    assert turn.cancelled and outcome.cancelled and outcome.interrupted
    assert term.stdout.endswith(" [interrupted]\n") and "f" not in term.stdout


def test_busy_is_a_no_op_without_a_line_editor() -> None:
    term = Terminal(editor=False, live=False)
    with term.busy():
        assert not term.holds_keys and term.ctrl_c_presses() == 0
