"""A finished reply rendered as Markdown, with a word longer than a row kept whole.

rich folds such a word (a URL, most often) with line breaks at the edge, and crops it inside a
list item or a quote: the redraw then cut a URL the streamed reply had kept whole, so a click
or a copy from the terminal got its first row only. Here a paragraph's (or a heading's) word
that fits no row goes whole onto a row of its own, past the edge, and the terminal's own wrap
shows the rest on the rows below (it joins them again for a copy, as for the streamed reply,
``word_wrap``). A code block's line is written whole the same way (rich broke a long one at its
blanks, so a command copied came in pieces). A table cannot go past the edge: a word longer than
its column is folded in its cell (rich cut it to "…").
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

from rich.cells import cell_len
from rich.markdown import (
    BlockQuote,
    CodeBlock,
    Heading,
    ListItem,
    Markdown,
    MarkdownElement,
    Paragraph,
    TableDataElement,
)
from rich.segment import Segment

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, JustifyMethod, RenderableType, RenderResult
    from rich.style import Style
    from rich.text import Text


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


def reply_markdown(text: str) -> Markdown:
    """``text`` as Markdown whose long words are not broken (print it with ``crop=False``)."""
    return _WholeWordsMarkdown(text)


class _WholeWordsParagraph(Paragraph):
    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from _whole_words(console, self.text, options.max_width, self.justify or "left")


class _WholeWordsHeading(Heading):
    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """rich's heading, its text wrapped as a paragraph's (a URL in it was folded)."""
        from rich.text import Text

        for part in super().__rich_console__(console, options):
            if isinstance(part, Text):
                yield from _whole_words(console, part, options.max_width, part.justify or "left")
            else:  # a frame, where a rich release draws one around an h1
                yield part


def _whole_words(console: Console, text: Text, width: int, justify: JustifyMethod) -> RenderResult:
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


class _WholeLinesCodeBlock(CodeBlock):
    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """A code block as rich draws it (highlighted, on its theme's background, a blank
        around it), but each line of the code whole: rich word-wrapped a long one with line
        breaks, so a command or a URL copied from the terminal came in pieces ("curl" on one
        row, the URL below it, the URL cut at the edge). A longer line goes past the edge, not
        padded, and the terminal's own wrap shows the rest (joined again for a copy), as for a
        long word in a paragraph."""
        from rich.syntax import Syntax

        syntax = Syntax("", self.lexer_name, theme=self.theme)
        code = syntax.highlight(str(self.text).rstrip().expandtabs(syntax.tab_size))
        width, style = options.max_width, console.get_style(code.style)  # the theme's background
        blank = [Segment(" " * width, style), Segment.line()]
        yield from blank
        for line in code.split("\n"):
            row = list(line.render(console, end=""))
            if line.cell_len <= width - 2:  # padded to the width, a blank either side
                row = [*Segment.adjust_line_length(row, width - 2, style=style, pad=True), Segment(" ", style)]
            yield from [Segment(" ", style), *row, Segment.line()]
        yield from blank


class _FoldingTableData(TableDataElement):
    """A table cell whose word is longer than its column is folded onto the rows below, not
    cut to "…" (a URL in a table was lost to its first few characters)."""

    @classmethod
    def create(cls, markdown: Markdown, token: Any) -> MarkdownElement:
        element = super().create(markdown, token)
        if isinstance(element, TableDataElement):
            element.content.overflow = "fold"
        return element


class _WholeWordsListItem(ListItem):
    def render_bullet(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from super().render_bullet(_Uncropped(console), options)

    def render_number(self, console: Console, options: ConsoleOptions, number: int, last_number: int) -> RenderResult:
        yield from super().render_number(_Uncropped(console), options, number, last_number)


class _WholeWordsBlockQuote(BlockQuote):
    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from super().__rich_console__(_Uncropped(console), options)  # type: ignore[arg-type]


class _WholeWordsMarkdown(Markdown):
    elements: ClassVar[dict[str, type[MarkdownElement]]] = {
        **Markdown.elements,
        "paragraph_open": _WholeWordsParagraph,
        "heading_open": _WholeWordsHeading,
        "fence": _WholeLinesCodeBlock,
        "code_block": _WholeLinesCodeBlock,
        "td_open": _FoldingTableData,
        "th_open": _FoldingTableData,
        "list_item_open": _WholeWordsListItem,
        "blockquote_open": _WholeWordsBlockQuote,
    }


class _Uncropped:
    """The console, but its ``render_lines`` (how a list item or a quote lays out what it holds
    beside its bullet or bar) pads lines to the width and does not crop a longer one."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._console, name)

    def render_lines(self, renderable: RenderableType, options: ConsoleOptions | None = None, *,
                     style: Style | None = None, pad: bool = True,
                     new_lines: bool = False) -> list[list[Segment]]:  # fmt: skip
        options = options or self._console.options
        rendered = self._console.render(renderable, options)
        if style:
            rendered = Segment.apply_style(rendered, style)
        lines = []
        for line in Segment.split_lines(rendered):
            width = max(options.max_width, Segment.get_line_length(line))
            lines.append([*Segment.adjust_line_length(line, width, style=style, pad=pad),
                          *([Segment.line()] if new_lines else [])])  # fmt: skip
        return lines
