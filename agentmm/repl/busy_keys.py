"""Keys pressed while the chat is busy with a line (a reply streaming, a command running).

Between two prompts the terminal used to be in its cooked mode: what the user typed then was
echoed into the reply, a Ctrl-C flushed it, and the kernel turned Enter into a line feed, which
the next prompt read as Ctrl-J ("new line") instead of "send": the line sat under a ``....``
continuation until another Enter. So while the chat is busy the terminal stays raw, as the line
editor has it: nothing is echoed, Ctrl-C is a key the REPL reads (it stops the reply), and every
other key is handed to the next prompt as prompt_toolkit type-ahead, to be edited or sent there.

Ctrl-Z stops the chat as a shell's job at once, as it does at the prompt (it was dropped without
a word): the terminal is cooked while it is stopped, raw again after ``fg``, and the reply goes on.
Where no shell can continue it (no job control) the kernel discards the stop: the chat says so in
one line and goes on as it was.

Before the first prompt (the models loading, the header) and in the moment between a line and
the next prompt the terminal is still cooked: ``take_cooked_keys`` reads what was typed then and
turns each line end back into Enter, as the user pressed it.
"""

from __future__ import annotations

import os
import signal
import time
from types import FrameType
from typing import Any

CONTINUE_WAIT_STEPS = 10  # of 10 ms: how long a SIGCONT's handler may take to be called
NO_JOB_CONTROL = "(Ctrl-Z: cannot suspend here: no job control)"


def take_cooked_keys(source: Any) -> None:
    """Add the keys typed while the terminal was cooked to the next prompt's type-ahead (after
    what ``BusyKeys`` kept). The kernel turned each Enter into a line feed (ICRNL), which the
    editor reads as Ctrl-J, "new line": here it is Enter again, so a line typed ahead is sent."""
    from prompt_toolkit.input.typeahead import get_typeahead, store_typeahead
    from prompt_toolkit.key_binding import KeyPress
    from prompt_toolkit.keys import Keys

    typed: list[Any] = []
    with source.raw_mode():  # a line not ended yet is readable only out of the cooked mode
        while keys := source.read_keys():
            typed.extend(keys)
    if typed:
        enter = KeyPress(Keys.ControlM, "\r")
        store_typeahead(source, [*get_typeahead(source), *(enter if k.key == Keys.ControlJ else k for k in typed)])


def stop_job() -> bool:
    """Stop this process group as a shell's Ctrl-Z does (``fg`` continues it); whether it was
    stopped and continued. Without job control (the chat run as a tmux pane's own program, by
    ``ssh -t host agentmm chat``, ``docker run -it``, ``script -c``: its process group has no
    shell to continue it) the kernel discards the SIGTSTP and nothing happened: told by the
    SIGCONT that every continue sends, which never comes then."""
    continued = False

    def on_continue(signum: int, frame: FrameType | None) -> None:
        nonlocal continued
        continued = True

    try:
        previous = signal.signal(signal.SIGCONT, on_continue)
    except ValueError:  # not the main thread: no handler can be set, the stop is sent blind
        os.kill(0, signal.SIGTSTP)
        return True
    try:
        os.kill(0, signal.SIGTSTP)  # returns once continued; its handler has run by then (os.kill checks)
        for _ in range(CONTINUE_WAIT_STEPS):  # the handler ran on another thread: Python calls it here soon
            if continued:
                break
            time.sleep(0.01)
    finally:
        signal.signal(signal.SIGCONT, previous)
    return continued


class BusyKeys:
    """The line editor's input held raw between prompts; ``poll()`` counts Ctrl-C presses and
    keeps the rest, which go to the next prompt when the block ends."""

    def __init__(self, source: Any) -> None:
        self.source = source  # the PromptSession's Input: its parser state and type-ahead slot carry over
        self.kept: list[Any] = []
        self.suspended = False  # stopped by a Ctrl-Z since the last poll: what was on the screen moved
        self.not_suspended = False  # a Ctrl-Z since the last poll stopped nothing: no job control here
        self._raw: Any = None

    def __enter__(self) -> BusyKeys:
        self._raw = self.source.raw_mode()
        self._raw.__enter__()
        return self

    def poll(self) -> int:
        """Read what was typed since the last poll (never blocks); the number of Ctrl-C presses
        among it. The other keys are kept, in order."""
        from prompt_toolkit.keys import Keys

        presses = 0
        self.suspended = self.not_suspended = False
        while keys := self.source.read_keys():  # a read takes 1 KiB at most: a paste takes several
            for key in keys:
                if key.key == Keys.ControlC:
                    presses += 1  # never type-ahead: at an empty prompt it would end the chat
                elif key.key == Keys.ControlZ:  # now, not at the next prompt, out of the blue
                    self._suspend()
                else:
                    self.kept.append(key)
        return presses

    def _suspend(self) -> None:
        """Stop until ``fg``, the terminal in the mode the shell expects meanwhile."""
        if not hasattr(signal, "SIGTSTP"):  # no job control on this system
            return
        self._raw.__exit__(None, None, None)
        stopped = False
        try:
            stopped = stop_job()
        finally:
            self._raw = self.source.raw_mode()
            self._raw.__enter__()
            self.suspended = self.suspended or stopped
            self.not_suspended = self.not_suspended or not stopped

    def keep(self, keys: list[Any]) -> None:
        """Add keys read by someone else meanwhile (a y/N question's own prompt), after ours."""
        from prompt_toolkit.keys import Keys

        self.kept.extend(k for k in keys if k.key not in (Keys.ControlC, Keys.ControlZ))

    def __exit__(self, *exc: object) -> None:
        from prompt_toolkit.input.typeahead import store_typeahead

        try:
            self.poll()  # what was typed since the last poll; unread keys stay in the parser
        finally:
            self._raw.__exit__(*exc)
            store_typeahead(self.source, self.kept)
            self.kept = []
