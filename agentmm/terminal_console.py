"""A rich Console at the terminal's real width, a dumb one's (``TERM=dumb``) included.

On a terminal whose TERM is ``dumb`` (or ``unknown``) rich takes the size to be 80x25 whatever
the window's (``Console.size``: ``COLUMNS`` is read but used only with ``LINES`` too), so tables
(``threads list``, the memory tables, ``/why``) were wrapped at 80 columns in a window of 200:
Emacs' M-x shell sets TERM=dumb, and ``COLUMNS`` to its window's width. Here such a console is
given ``COLUMNS``, else the terminal's own size, else (no width known: a pty that reports 0) a
width no table needs to wrap at, sized to its content.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

UNKNOWN_WIDTH = 1000  # a dumb terminal of no known width: tables as wide as their content
DEFAULT_HEIGHT = 25  # rich's own


def make_console(**kwargs: Any) -> Console:
    """``rich.console.Console(**kwargs)``, but on a dumb terminal sized as the terminal is."""
    from rich.console import Console

    console = Console(**kwargs)
    if console.is_dumb_terminal and "width" not in kwargs:
        console.size = dumb_size(console.file)
    return console


def dumb_size(file: Any) -> tuple[int, int]:
    """(columns, lines) of the terminal ``file`` writes to: ``COLUMNS`` and ``LINES``, else what
    the terminal says, else ``UNKNOWN_WIDTH`` and rich's 25 lines."""
    columns = lines = 0
    with contextlib.suppress(AttributeError, ValueError, OSError):
        columns, lines = os.get_terminal_size(file.fileno())
    return _number(os.environ.get("COLUMNS")) or columns or UNKNOWN_WIDTH, (
        _number(os.environ.get("LINES")) or lines or DEFAULT_HEIGHT
    )


def _number(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0
