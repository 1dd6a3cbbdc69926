"""A tool's output as the chat shows it: on ``chat -m``'s stderr and in the chat, piped or not,
without the terminal escapes a tool may return (a reply's are taken out the same way)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

from agentmm.repl.session import ChatSession
from agentmm.repl.terminal import Terminal

# Sets the window's title, then clears the screen.
ESCAPES = "\x1b]0;PWNED\x07\x1b[2Jcleared"
OK = {"name": "boom", "args": {"x": "hi"}, "status": "ok", "output": ESCAPES}
FAILED = {**OK, "status": "error", "output": f"error: {ESCAPES}\n\x1b[31mred"}
SHOWN = "[tool boom(x='hi'): cleared]\n[tool boom(x='hi') error:\n  cleared\n  red]\n"


def test_chat_m_shows_a_tool_output_without_its_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    from agentmm.cli import _show_tool_calls

    _show_tool_calls([OK, FAILED])
    assert capsys.readouterr().err == SHOWN


@pytest.mark.parametrize("live", [False, True], ids=["piped", "terminal"])
def test_the_chat_shows_a_tool_output_without_its_escapes(live: bool) -> None:
    """Piped, a failed call's line was written as it came (``agentmm: error: [tool ...``)."""
    terminal = Terminal(editor=False, live=live)
    terminal.err = Console(file=io.StringIO(), width=200, no_color=True, soft_wrap=True, highlight=False)
    ChatSession._show_tool_calls(SimpleNamespace(terminal=terminal), [OK, FAILED])  # type: ignore[arg-type]
    shown = terminal.err.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b" not in shown and "\x07" not in shown
    assert "PWNED" not in shown and shown.count("cleared") == 2


MALFORMED = {"name": "shout", "args": '{ "text": "I\'m glad\n' + "word " * 40, "status": "malformed",
             "output": "error: malformed tool call (cut off at the token limit); try again"}  # fmt: skip


def test_a_malformed_calls_line_shows_what_the_model_wrote(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed call's arguments are the text the model wrote, not an object: showing it
    crashed ``chat -m`` and the chat (``'str' object has no attribute 'items'``, exit 1)."""
    from agentmm.cli import _show_tool_calls

    _show_tool_calls([MALFORMED])
    (line,) = capsys.readouterr().err.splitlines()[:1]
    assert line.startswith('[tool shout({ "text": "I\'m glad word word') and "…) malformed" in line
    terminal = Terminal(editor=False, live=False)
    terminal.err = Console(file=io.StringIO(), width=200, no_color=True, soft_wrap=True, highlight=False)
    ChatSession._show_tool_calls(SimpleNamespace(terminal=terminal), [MALFORMED])  # type: ignore[arg-type]
    assert 'shout({ "text"' in terminal.err.file.getvalue()  # type: ignore[attr-defined]
