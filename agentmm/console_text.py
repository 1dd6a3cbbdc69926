"""Text from users and models in rich tables and lines: shown as written, never read as markup.

A message holding ``[/i]`` made ``rich`` raise MarkupError (``threads list`` and ``memory list``
crashed), ``[ooc]`` or ``list[int]`` vanished from the display, and escape sequences from a
message (``\\x1b[31m``) reached the terminal. ``plain`` is a ``rich.text.Text`` (no markup
parsed) with control characters other than tab and newline taken out.

A file name is shown by ``shown_path`` instead, quoted rather than stripped, so the one name is
shown the one way by the CLI and the chat alike.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Column
    from rich.text import Text

# An escape sequence as a whole (CSI "\x1b[31m", OSC "\x1b]0;title\x07"), a CSI the text ends in
# before its final byte (whole: "\x1b[3" left "[3"), an OSC that never ends (its introducer only:
# taken whole, it hid the rest of a reply), then any other control.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*(?:[@-~]|\Z)|\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)|\x1b\]|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


# A chunk of a streamed reply ending inside an escape sequence: a lone ESC, a CSI without its final
# byte, an OSC without its terminator (or with half of ESC \\).
_OPEN_TAIL = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b\n]*\x1b?)?\Z")
# An open sequence held longer than this is let go (and dropped whole, as ``printable`` drops it).
_HOLD_LIMIT = 4096


def one_line(text: object, width: int) -> str:
    """``text`` on one line (its white space runs made single spaces), cut to ``width``
    characters with "…" where longer: a table cell, a preview, an error's detail."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def printable(value: object) -> str:
    """``value`` as a string without terminal control characters (tab and newline kept)."""
    return _CONTROL.sub("", str(value))


def shown_path(path: str | Path) -> str:
    """A path as messages print it, on one line whatever name a user, a model or a disk gave:
    a byte of its name that is not UTF-8 (``b"caf\\xe9.png"`` from an old disk, which Python
    holds as ``"caf\\udce9.png"``) as the byte, ``caf\\xe9.png``, and the whole quoted
    (``repr``) when it holds a newline or another control character. Quoted, not stripped as
    ``printable`` strips text: a name without its controls names another file (or none), and
    ``printable`` keeps a newline, which breaks the line."""
    text = str(path)
    with contextlib.suppress(UnicodeEncodeError):  # a lone surrogate no file name holds: repr shows it
        text = os.fsencode(text).decode("utf-8", "backslashreplace")
    return repr(text) if _has_controls(text) else text


def _has_controls(text: str) -> bool:
    """Whether ``text`` holds a character a message must not show as it is (a newline, an
    escape, any other that is not printable; a space is)."""
    return any(not ch.isprintable() and ch != " " for ch in text)


def shown_name(name: object) -> str:
    """A name (a persona's) quoted for a message as it is written: ``'a/b\\c'``, where ``repr``
    doubled the backslash (``'a/b\\\\c'``) and so showed a name nobody gave. In double quotes when
    it holds a single one and no double one (``"Nora O'Brien"``), as ``repr`` picks; ``repr``
    itself only when it holds a newline or another control character, which must not reach the
    terminal or break the line."""
    text = str(name)
    if _has_controls(text):
        return repr(text)
    quote = '"' if "'" in text and '"' not in text else "'"
    return f"{quote}{text}{quote}"


class PrintableStream:
    """``printable`` for text that comes in pieces (a streamed reply): an escape sequence split
    across two pieces is held until it is whole, then dropped, so neither half reaches the
    terminal (``\\x1b]0;PW`` + ``NED\\x07`` set no title and show no ``NED``)."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, text: str) -> str:
        """What of ``self``'s held text and ``text`` can be shown now."""
        text = self._held + text
        tail = _OPEN_TAIL.search(text)
        cut = tail.start() if tail is not None and len(text) - tail.start() <= _HOLD_LIMIT else len(text)
        self._held = text[cut:]
        return printable(text[:cut])

    def flush(self) -> str:
        """The end of the stream: what was held, without its unfinished sequence (a CSI's
        parameters go with it; an OSC's text stays, as ``printable`` leaves it)."""
        held, self._held = self._held, ""
        return printable(held)


def plain(value: object, style: str = "") -> Text:
    """``value`` as rich ``Text``: its brackets are text, not markup."""
    from rich.text import Text

    return Text(printable(value), style=style)


def key_column(header: str, keys: list[str]) -> Column:
    """A table column of ids a user types back (``memory forget ID``): never cut or wrapped, so
    a narrow terminal shrinks the other columns instead (rich cut an id to ``0a1b2c3d4e5f:…``)."""
    from rich.table import Column

    return Column(header, no_wrap=True, min_width=max(map(len, keys), default=0))
