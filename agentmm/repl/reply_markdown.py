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

from typing import TYPE_CHECKING, Any, ClassVar

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

from agentmm.repl.whole_words import whole_words

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
    from rich.style import Style


def reply_markdown(text: str) -> Markdown:
    """``text`` as Markdown whose long words are not broken (print it with ``crop=False``)."""
    return _WholeWordsMarkdown(text)


class _WholeWordsParagraph(Paragraph):
    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from whole_words(console, self.text, options.max_width, self.justify or "left")


class _WholeWordsHeading(Heading):
    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """rich's heading, its text wrapped as a paragraph's (a URL in it was folded)."""
        from rich.text import Text

        for part in super().__rich_console__(console, options):
            if isinstance(part, Text):
                yield from whole_words(console, part, options.max_width, part.justify or "left")
            else:  # a frame, where a rich release draws one around an h1
                yield part


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
