"""Text wrapped at its words as rich wraps it, but a word longer than a row kept whole.

rich folds such a word (a URL, a path) with line breaks at the terminal's edge, so a click or a
copy from the terminal gets its first row only. Here it goes whole onto a row of its own, past
the edge, and the terminal's own wrap shows the rest on the rows below (it joins them again for
a copy, as for a streamed reply, ``word_wrap``). The Markdown redraw of a reply
(``reply_markdown``) wraps its paragraphs and headings so, and the chat's notices (``WholeWords``:
the ``[you said (NOTE): ...]`` line of a voice note, a tool's result) too. Print with
``crop=False``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rich.cells import cell_len

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
    from rich.text import Text


class WholeWords:
    """``text`` as a renderable wrapped by ``whole_words``; on a console that does not wrap
    (soft wrap, a pipe) as it is."""

    def __init__(self, text: Text) -> None:
        self.text = text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if options.no_wrap:
            yield self.text
        else:
            yield from whole_words(console, self.text, options.max_width, "left")


def whole_words(console: Console, text: Text, width: int, justify: JustifyMethod) -> RenderResult:
    """``text`` wrapped as rich wraps it (``Text.wrap``), but a word longer than the width is
    not folded (rich's ``overflow="crop"`` wraps so, and then crops it; its "ignore" does not
    wrap at all): it goes whole onto a line of its own, longer than the width."""
    from rich.containers import Lines
    from rich.text import Text

    lines = Lines()
    for line in text.split(allow_blank=True):
        if "\t" in line:
            line.expand_tabs(8)
        pieces = line.divide(_breaks(str(line), width))
        for piece in pieces:
            # Blanks past the edge go (rich's rstrip_end counts characters, not cells: the
            # blank after a row of CJK that filled it spilled onto a row of its own).
            if cell_len(piece.plain) > width:
                piece.rstrip()
            else:  # justified (padded, centred); a longer one as it is, not cropped
                Lines([piece]).justify(console, width, justify=justify, overflow="ignore")
        lines.extend(pieces)
    yield from Text("\n").join(lines).render(console, end=text.end)


def _breaks(plain: str, width: int) -> list[int]:
    """Where a line of a paragraph is broken: as rich breaks it, but a word of 1-column
    characters longer than ``width`` (a URL, a path) is a line of its own, not folded (CJK text,
    written without spaces, is folded as rich does: a row may end after any character)."""
    offsets, start = [], 0
    for word in re.finditer(r"\S+", plain):
        if cell_len(word[0]) <= width or cell_len(word[0]) != len(word[0]):
            continue
        end = _BLANKS.match(plain, word.end()).end()  # type: ignore[union-attr]
        offsets += [start + at for at in word_breaks(plain[start : word.start()], width)] + [word.start(), end]
        start = end
    offsets += [start + at for at in word_breaks(plain[start:], width)]
    return sorted({at for at in offsets if 0 < at < len(plain)})


_BLANKS = re.compile(r"\s*")
_WORD = re.compile(r"\s*\S+\s*")  # a word with the blanks before (at the start) and after it


def word_breaks(text: str, width: int) -> list[int]:
    """Where rich's word wrap (``Text.wrap``, overflow "fold") breaks ``text`` to fit ``width``
    cells: before a word that does not fit the rest of its row, and inside a word that fits no
    row, where its next character would not fit. rich's own is in a private module
    (``rich._wrap.divide_line``) that a rich release may move or drop; the other rows of the
    redraw are drawn as rich draws them, so this one keeps its rules."""
    breaks: list[int] = []
    column = 0  # cells used on the current row
    for word in _WORD.finditer(text):
        start, size = word.start(), cell_len(word[0].rstrip())
        if size <= width - column:
            column += cell_len(word[0])
        elif size > width:  # folded: each piece starts a row, the row goes on after the last one
            pieces = _folded(word[0], width)
            for piece in pieces:
                if start:
                    breaks.append(start)
                start += len(piece)
            column = cell_len(pieces[-1]) if pieces else column
        elif column and start:
            breaks.append(start)
            column = cell_len(word[0])
    return breaks


def _folded(word: str, width: int) -> list[str]:
    """``word`` cut into pieces of at most ``width`` cells (one character wider than that is a
    piece of its own)."""
    pieces, piece, size = [], "", 0
    for ch in word:
        cells = cell_len(ch)
        if size + cells > width and piece and cells:  # a mark of no width stays with its letter
            pieces.append(piece)
            piece, size = "", 0
        piece += ch
        size += cells
    if size:
        pieces.append(piece)
    return pieces
