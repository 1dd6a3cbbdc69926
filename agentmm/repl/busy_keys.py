"""Keys pressed while the chat is busy with a line (a reply streaming, a command running).

Between two prompts the terminal used to be in its cooked mode: what the user typed then was
echoed into the reply, a Ctrl-C flushed it, and the kernel turned Enter into a line feed, which
the next prompt read as Ctrl-J ("new line") instead of "send": the line sat under a ``....``
continuation until another Enter. So while the chat is busy the terminal stays raw, as the line
editor has it: nothing is echoed, Ctrl-C is a key the REPL reads (it stops the reply), and every
other key is handed to the next prompt as prompt_toolkit type-ahead, to be edited or sent there.

Ctrl-Z stops the chat as a shell's job at once, as it does at the prompt (it was dropped without
a word): the terminal is cooked while it is stopped, raw again after ``fg``, and the reply goes on.

Before the first prompt (the models loading, the header) and in the moment between a line and
the next prompt the terminal is still cooked: ``take_cooked_keys`` reads what was typed then and
turns each line end back into Enter, as the user pressed it.
"""

from __future__ import annotations

import os
import signal
from typing import Any


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


def stop_job() -> None:
    """Stop this process group as a shell's Ctrl-Z does (``fg`` continues it)."""
    os.kill(0, signal.SIGTSTP)


class BusyKeys:
    """The line editor's input held raw between prompts; ``poll()`` counts Ctrl-C presses and
    keeps the rest, which go to the next prompt when the block ends."""

    def __init__(self, source: Any) -> None:
        self.source = source  # the PromptSession's Input: its parser state and type-ahead slot carry over
        self.kept: list[Any] = []
        self.suspended = False  # stopped by a Ctrl-Z since the last poll: what was on the screen moved
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
        self.suspended = False
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
        try:
            stop_job()
        finally:
            self._raw = self.source.raw_mode()
            self._raw.__enter__()
            self.suspended = True

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
