"""Running one turn under the REPL: the graph on a worker thread, the terminal on the main one.

The worker iterates the ``TurnStream`` and posts what happens (text, observations, a tool
asking for approval, the end) to a queue; the main thread renders it and owns Ctrl-C: a key
it reads from the line editor's raw terminal (``Terminal.busy``), or SIGINT when there is no
line editor. The first Ctrl-C cancels the turn, which then finishes on its own: the partial
reply is saved (marked interrupted) and remembered as usual. Further presses only say it is
stopping, so no checkpoint or memory write is ever cut in half. A model still loading cannot
be stopped mid-load: the turn ends as soon as it has loaded. While the turn's attachments are
perceived (``perceiving``: a long voice note takes a minute or more) a spinner says so, and a
Ctrl-C then ends the turn before its reply: it is rolled back (``TurnStoppedError``), so nothing
of it is kept or remembered. SIGTERM (a kill) and SIGHUP (the terminal closed) stop the turn as
Ctrl-C does, its partial reply saved, and say so in ``Outcome.ended_by``: the chat then ends
(``ChatSession``). They killed the process mid-reply, and the user's message went with it.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from agentmm.repl.terminal import Terminal, call_text


@dataclass
class Outcome:
    """How a turn ended: its result, or the error it raised (already shown), and whether the
    user stopped it."""

    result: Any = None
    error: BaseException | None = None
    cancelled: bool = False
    ended_by: int | None = None  # SIGTERM or SIGHUP came during the turn: the process is to end

    @property
    def hung_up(self) -> bool:
        """The terminal is gone (SIGHUP): nothing more can be shown on it."""
        return self.ended_by is not None and self.ended_by == getattr(signal, "SIGHUP", None)

    @property
    def interrupted(self) -> bool:
        return bool(self.result is not None and self.result.interrupted)

    @property
    def out_of_character(self) -> bool:
        # An agent whose results predate the key (or a test's fake) says nothing of it.
        return bool(self.result is not None and getattr(self.result, "out_of_character", False))


# Signals that end the process: a turn under way stops as on Ctrl-C, and is saved, first.
ENDING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def describe_call(request: dict[str, Any]) -> str:
    return call_text(request.get("tool", "?"), request.get("args"))


def run_turn(turn: Any, terminal: Terminal, *, loading: Callable[[], bool] = lambda: False,
             show_observations: Callable[[list[dict[str, Any]]], None] | None = None,
             show_tool_calls: Callable[[list[dict[str, Any]]], None] | None = None,
             yes: bool = False, perceiving: str = "") -> Outcome:  # fmt: skip
    """Stream ``turn`` to ``terminal``; Ctrl-C stops it. Must run on the main thread. A tool call
    that asks first is allowed with ``yes`` (``--yes``), asked where a person can answer, and
    denied in one line where none can (the chat reads a script: its next line is no answer).
    ``perceiving``: what the spinner says until the attachments' observations come (the turn
    has some), e.g. ``transcribing note.wav…``."""
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def ask(request: dict[str, Any]) -> bool:  # on the worker: the main thread asks the user
        answer: queue.Queue[bool] = queue.Queue(maxsize=1)
        events.put(("approve", (request, answer)))
        return answer.get()

    turn.on_observations = lambda observations: events.put(("observations", observations))
    if hasattr(turn, "on_tool_calls"):
        turn.on_tool_calls = lambda calls: events.put(("tool_calls", calls))
    if hasattr(turn, "on_approval"):
        turn.on_approval = ask

    def work() -> None:
        try:
            for chunk in turn:
                events.put(("text", chunk))
        except BaseException as exc:
            events.put(("error", exc))
        else:
            events.put(("done", None))

    presses = 0

    def on_ctrl_c(signum: int = signal.SIGINT, frame: FrameType | None = None) -> None:
        nonlocal presses
        presses += 1
        turn.cancel()

    def read_keys() -> None:
        for _ in range(terminal.ctrl_c_presses()):
            on_ctrl_c()

    outcome = Outcome()

    def on_ending(signum: int, frame: FrameType | None = None) -> None:
        outcome.ended_by = signum
        turn.cancel()

    stack = contextlib.ExitStack()
    if not terminal.holds_keys:
        stack.enter_context(_no_echo())
    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    before_ending = {number: signal.signal(number, on_ending) for number in ENDING_SIGNALS}
    worker = threading.Thread(target=work, name="agentmm-turn", daemon=True)
    if perceiving:
        terminal.start_spinner(perceiving)
    elif loading():
        terminal.start_spinner("loading the model…")
    terminal.reply_start()
    worker.start()
    told = 0
    try:
        while True:
            read_keys()
            if presses > told:
                terminal.stop_spinner()
                if presses > 1:
                    terminal.interject("(stopping: saving what was written first)")
                elif not told and perceiving:
                    terminal.start_spinner("stopping…")
                elif not told and loading():
                    terminal.start_spinner("stopping as soon as the model has loaded…")
                told = presses
            try:
                kind, payload = events.get(timeout=0.05)
            except queue.Empty:
                continue
            if outcome.hung_up and kind in ("text", "observations", "tool_calls", "approve"):
                # The terminal is gone: nothing is shown on it or asked there (a write would be
                # EIO, a traceback instead of the turn's save); a tool call waiting is a no.
                if kind == "approve":
                    payload[1].put(False)
                continue
            if kind == "text":
                terminal.reply_chunk(payload)
            elif kind == "observations":
                terminal.stop_spinner()
                perceiving = ""
                if show_observations is not None:
                    show_observations(payload)
                if not presses and loading():
                    terminal.start_spinner("loading the model…")
            elif kind == "tool_calls":
                terminal.stop_spinner()
                if show_tool_calls is not None:
                    show_tool_calls(payload)
            elif kind == "approve":
                request, answer = payload
                allowed = False
                read_keys()  # a Ctrl-C already pressed is a no; keys typed before the question are type-ahead
                try:
                    allowed = not presses and (yes or _ask(terminal, describe_call(request)))
                finally:  # the worker waits for an answer, whatever happens here
                    answer.put(bool(allowed))
            elif kind == "error":
                outcome.error = payload
                break
            else:
                outcome.result = turn.result
                break
    except BaseException:
        turn.cancel()  # the worker stops after its current token, then saves; join waits for that
        raise
    finally:
        worker.join()
        signal.signal(signal.SIGINT, previous)
        for number, handler in before_ending.items():
            if handler is not None:  # None: set outside Python, nothing to put back
                signal.signal(number, handler)
        stack.close()
        outcome.cancelled = presses > 0
        with contextlib.suppress(OSError) if outcome.hung_up else contextlib.nullcontext():
            if outcome.error is None:
                terminal.reply_end(outcome.interrupted, outcome.out_of_character)
            else:
                terminal.reply_abort()
    return outcome


def _ask(terminal: Terminal, call: str) -> bool:
    """The user's y/N for one tool call; no without a question where nobody can answer."""
    if not terminal.asks:
        terminal.warn(f"denied tool call {call} (nobody to ask: the chat reads a script; pass --yes to allow)")
        return False
    return terminal.confirm(f"allow tool call {call}?")


@contextlib.contextmanager
def _no_echo() -> Iterator[None]:
    """Without a line editor (``input()`` reads lines), keys typed while a reply streams are not
    echoed into it (no ``^C`` in the text); they wait in the terminal's line buffer, and the next
    ``input()`` reads them."""
    try:
        import termios
    except ImportError:  # not a POSIX terminal
        yield
        return
    try:
        saved = termios.tcgetattr(sys.stdin.fileno()) if sys.stdin.isatty() else None
    except (OSError, ValueError, termios.error):
        saved = None
    if saved is None:
        yield
        return
    fd = sys.stdin.fileno()
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)
    try:
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)
