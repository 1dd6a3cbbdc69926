"""Text from users and models in rich tables and lines: shown as written, never read as markup.

A message holding ``[/i]`` made ``rich`` raise MarkupError (``threads list`` and ``memory list``
crashed), ``[ooc]`` or ``list[int]`` vanished from the display, and escape sequences from a
message (``\\x1b[31m``) reached the terminal. ``plain`` is a ``rich.text.Text`` (no markup
parsed) with control characters other than tab and newline taken out.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Column
    from rich.text import Text

# An escape sequence as a whole (CSI "\x1b[31m", OSC "\x1b]0;title\x07"), then any other control.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(value: object) -> str:
    """``value`` as a string without terminal control characters (tab and newline kept)."""
    return _CONTROL.sub("", str(value))


def plain(value: object, style: str = "") -> Text:
    """``value`` as rich ``Text``: its brackets are text, not markup."""
    from rich.text import Text

    return Text(printable(value), style=style)


def key_column(header: str, keys: list[str]) -> Column:
    """A table column of ids a user types back (``memory forget ID``): never cut or wrapped, so
    a narrow terminal shrinks the other columns instead (rich cut an id to ``0a1b2c3d4e5f:…``)."""
    from rich.table import Column

    return Column(header, no_wrap=True, min_width=max(map(len, keys), default=0))
