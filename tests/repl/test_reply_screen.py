"""A reply as a person sees it on a terminal: what the chat wrote, played through a terminal
emulator (``tests.repl.screen``) that wraps at the edge as xterm does."""

from __future__ import annotations

import io
import random
from itertools import pairwise, takewhile
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console
from rich.markdown import Markdown

from agentmm.repl.terminal import Terminal
from agentmm.repl.word_wrap import CLOSING
from tests.repl.screen import Screen

STORY = (
    "The office is dark except for the desk lamp and the neon from the bar across the street, blinking "
    "BLUE HERON, BLUE HERON. Nora Quill has her feet on the desk and a case file on her lap.\n"
    "Door was open, so either you can read or you're lucky. Sit down. Whatever it is, start with the "
    "part you don't want to tell me. all the circumstances notwithstanding, okay?"
)


def terminal(width: int, *, live: bool = False, height: int = 200) -> Terminal:
    term = Terminal(editor=False, live=live, wrap=True)
    term.out = Console(file=io.StringIO(), width=width, height=height, force_terminal=live, highlight=False,
                       no_color=not live or None)  # fmt: skip
    term.err = term.out  # one terminal: both streams reach the same screen
    return term


def written(term: Terminal) -> str:
    return term.out.file.getvalue()  # type: ignore[attr-defined]


def stream(term: Terminal, text: str, seed: int, interrupted: bool = False) -> None:
    """``text`` in pieces of 1 to 7 characters, as tokens come."""
    pieces, rng, at = [], random.Random(seed), 0
    while at < len(text):
        size = rng.randint(1, 7)
        pieces.append(text[at : at + size])
        at += size
    term.reply_start()
    for piece in pieces:
        term.reply_chunk(piece)
    term.reply_end(interrupted)


@pytest.mark.parametrize("width", [17, 24, 40, 61, 100])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_plain_reply_wraps_at_word_boundaries_in_its_order(width: int, seed: int) -> None:
    term = terminal(width)
    stream(term, STORY, seed)
    rows = Screen(width).feed(written(term)).lines
    # Every word whole and in order: none was cut at the edge.
    assert " ".join(rows).split() == STORY.split()
    paragraphs = STORY.split("\n")
    for row, below in pairwise(rows):
        first = below.split()[0]
        # Broken only where the next word would not have fitted (or a paragraph ends).
        assert cell_len(row) + 1 + cell_len(first) > width or any(p.startswith(below) for p in paragraphs), (row, below)


def test_a_word_longer_than_a_row_is_broken_only_at_the_edge() -> None:
    word = "abcdefghij" * 5
    term = terminal(20)
    stream(term, f"see {word} then", seed=3)
    assert Screen(20).feed(written(term)).lines == ["see", word[:20], word[20:40], word[40:] + " then"]


@pytest.mark.parametrize("width", [15, 21, 30])
def test_two_column_characters_fill_rows_and_latin_words_stay_whole(width: int) -> None:
    text = "她说：" + "我们明天在车站见面吧" * 3 + " okay-then, sure " + "天气很好" * 4
    term = terminal(width)
    stream(term, text, seed=5)
    rows = Screen(width).feed(written(term)).lines
    assert "".join(rows).replace(" ", "") == text.replace(" ", "")  # nothing lost or moved
    assert any("okay-then," in row for row in rows)
    for row, below in pairwise(rows):  # a row ends only where what comes next would not fit
        latin = "".join(takewhile(lambda c: cell_len(c) == 1 and not c.isspace(), below))
        unit = below[0] + "".join(takewhile(CLOSING.__contains__, below[1:])) if cell_len(below[0]) == 2 else latin
        assert cell_len(row) + (row[-1].isascii() and unit.isascii()) + cell_len(unit) > width, (row, below)


URL = "https://example.com/a/very/long/path/that/keeps/going/and/going/index.html"


@pytest.mark.parametrize("width", [20, 33])
def test_a_url_longer_than_a_row_is_written_without_a_line_break_in_it(width: int) -> None:
    """The terminal wraps it (and joins its rows again for a copy or a click): a line break
    written inside it cut it to its first row."""
    term = terminal(width, live=True)
    term.out.file.write("you> hi\n")
    stream(term, f"*Sure*, see {URL} for more.", seed=4)
    assert URL in written(term)
    # The rows it took were counted all the same: the Markdown redraw leaves only itself.
    assert Screen(width).feed(written(term)).lines == ["you> hi", "Sure, see", *rows_of(URL, width), "for more."]


def rows_of(text: str, width: int, start: int = 0) -> list[str]:
    """The rows a terminal wraps ``text`` onto, written from column ``start``."""
    rows, text = [text[: width - start]], text[width - start :]
    while text:
        rows.append(text[:width])
        text = text[width:]
    return rows


@pytest.mark.parametrize("width", [20, 33])
@pytest.mark.parametrize("kind", ["paragraph", "list", "quote"])
def test_the_markdown_redraw_writes_a_url_longer_than_a_row_whole(width: int, kind: str) -> None:
    """rich folded it with line breaks at the edge (cropped it in a list or a quote): the redraw
    cut a URL the streamed reply had kept whole. It goes whole onto a row of its own now, and
    the terminal's wrap shows the rest below."""
    lead = {"paragraph": "", "list": "- ", "quote": "> "}[kind]
    term = terminal(width, live=True)
    term.out.file.write("you> hi\n")
    stream(term, f"{lead}See *this*: {URL} now.", seed=4)
    redraw = written(term).rsplit("\x1b[J", 1)[1]
    assert URL in redraw  # one string: no line break or style change inside it
    prefix = {"paragraph": "", "list": " • ", "quote": "▌ "}[kind]
    indent = {"paragraph": "", "list": "   ", "quote": "▌ "}[kind]
    rows = [
        *([""] if lead else []),
        prefix + "See this:",
        *rows_of(indent + URL, width),
        indent + "now.",
    ]  # rich's blank row before a list or a quote
    assert Screen(width).feed(written(term)).lines == ["you> hi", *(row.rstrip() for row in rows)]


@pytest.mark.parametrize("width", [20, 33])
@pytest.mark.parametrize("fence", ["```", "```bash", "    "])
def test_the_markdown_redraw_writes_each_line_of_code_whole(width: int, fence: str) -> None:
    """rich word-wrapped a code block's long line with line breaks: "curl" on one row, the URL
    folded below it, so the command copied from the terminal came in pieces. Each line of
    code is written whole now, and the terminal's wrap shows the rest below."""
    block = f"{fence}\ncurl {URL}\n```" if fence.startswith("`") else f"{fence}curl {URL}"
    term = terminal(width, live=True)
    stream(term, f"Run *this*:\n\n{block}\n\nThen rest.", seed=4)
    redraw = written(term).rsplit("\x1b[J", 1)[1]
    assert f"curl {URL}" in Screen(10_000).feed(redraw).text  # no line break inside it
    assert Screen(width).feed(written(term)).lines == ["Run this:", "", "", *rows_of(f" curl {URL}", width), "", "",
                                                       "Then rest."]  # fmt: skip


def test_the_markdown_redraw_writes_a_url_in_a_heading_whole() -> None:
    """rich folded it with line breaks, as in a paragraph."""
    term = terminal(24, live=True)
    stream(term, f"## See {URL}\n\nmore.", seed=4)
    assert URL in written(term).rsplit("\x1b[J", 1)[1]  # one string: no line break inside it
    assert Screen(24).feed(written(term)).lines == ["See", *rows_of(URL, 24), "", "more."]


def test_the_markdown_redraw_shows_all_of_a_url_in_a_table() -> None:
    """rich cut a word longer than its column to "…": the URL was lost but for its start. It
    is folded in its cell now."""
    term = terminal(30, live=True)
    stream(term, f"| name | url |\n|---|---|\n| home | {URL} |\n", seed=4)
    rows = Screen(30).feed(written(term)).lines
    first = next(i for i, row in enumerate(rows) if "home" in row)
    column = rows[first].index("https")
    assert "".join(row[column:] for row in rows[first:]) == URL


@pytest.mark.parametrize("width", [30, 47])
def test_a_notice_writes_a_url_longer_than_a_row_whole(width: int) -> None:
    """The ``[you said (NOTE): ...]`` line of a voice note (and any notice) was wrapped by rich,
    which folded a word longer than a row with a line break: a URL said in the note came in
    pieces for a copy. It is written whole now, the terminal's wrap shows the rest."""
    from agentmm.repl.terminal import user_note

    term = terminal(width, live=True)
    term.info(user_note({"file": "/x/v.wav", "kind": "audio", "text": f"the page is {URL} okay"})[1])
    assert URL in written(term)
    assert Screen(width).feed(written(term)).lines == ["[you said (v.wav): the page is", *rows_of(URL, width), "okay]"]


def test_pyproject_asks_for_a_rich_with_what_the_redraw_imports() -> None:
    """The redraw subclasses ``rich.markdown.TableDataElement``, new in rich 13.4 (Markdown
    tables): "rich>=13" let an install keep a rich the chat could not import it from."""
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    rich = next(r for r in map(Requirement, pyproject["project"]["dependencies"]) if r.name == "rich")
    assert "13.4" in rich.specifier and "13.3" not in rich.specifier


def test_the_markdown_redraw_needs_nothing_private_of_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    """It broke a paragraph's rows with ``rich._wrap.divide_line``, private to rich: a rich
    release without it would have made every reply with a long URL fail to redraw."""
    import rich._wrap

    monkeypatch.delattr(rich._wrap, "divide_line")  # rich's own Text.wrap keeps the name it imported
    width = 20
    term = terminal(width, live=True)
    stream(term, f"See *this*: {URL} now.", seed=4)
    assert Screen(width).feed(written(term)).lines == ["See this:", *rows_of(URL, width), "now."]


@pytest.mark.parametrize("width", [2, 5, 9, 23, 40])
def test_the_redraw_breaks_rows_where_rich_does(width: int) -> None:
    """``word_breaks`` stands in for rich's private word wrap: each row as ``Text.wrap`` (which
    divides a line where that breaks it) makes it: CJK folded, a long word folded, blanks at the
    edge dropped."""
    from rich.text import Text

    from agentmm.repl.whole_words import word_breaks

    console = Console(file=io.StringIO(), width=width)
    for text in [*STORY.split("\n"), "  lead  and   many blanks  ", "今日は良い天気ですね。" * 3 + " ok a" + "字" * 9,
                 "x" * 30 + " then " + "漢字" * 7, "e\u0301t\u0301e\u0301 cafe\u0301s " * 4, ""]:  # fmt: skip
        ours = Text(text).divide(word_breaks(text, width))
        for line in ours:  # the rest of what Text.wrap does
            line.rstrip_end(width)
            line.truncate(width, overflow="fold")
        assert [line.plain for line in ours] == [line.plain for line in Text(text).wrap(console, width)], text


KOREAN = "안녕하세요, 저는 서울에서 왔습니다. 오늘 날씨가 정말 좋네요! 내일 도서관에서 만나요. " * 3


@pytest.mark.parametrize("width", [13, 20, 29])
def test_korean_words_wrap_as_words(width: int) -> None:
    """Korean is written with spaces between words: every 2-column character was a word of its
    own, and words were broken anywhere."""
    term = terminal(width)
    stream(term, KOREAN, seed=6)
    rows = Screen(width).feed(written(term)).lines
    assert " ".join(rows).split() == KOREAN.split()  # every word whole on its row
    for row, below in pairwise(rows):
        assert cell_len(row) + 1 + cell_len(below.split()[0]) > width, (row, below)


@pytest.mark.parametrize("width", range(10, 31))
def test_a_row_never_begins_with_a_closing_mark(width: int) -> None:
    text = "「今日は良い天気ですね。」と彼女は言った、そして笑った。" * 2 + "本当に（たぶん）。"
    term = terminal(width)
    stream(term, text, seed=7)
    rows = Screen(width).feed(written(term)).lines
    assert "".join(rows) == text
    assert not [row for row in rows if row[0] in CLOSING], rows


def test_a_notice_in_the_middle_of_a_reply_starts_on_its_own_row() -> None:
    term = terminal(40)
    term.reply_start()
    term.reply_chunk("Let me roll")
    term.info("[tool roll_dice(expr='2d6'): 7]")
    term.reply_chunk(" a seven.")
    term.reply_end(False)
    assert Screen(40).feed(written(term)).lines == ["Let me roll", "[tool roll_dice(expr='2d6'): 7]", "a seven."]


def test_after_a_ctrl_z_and_fg_the_reply_goes_on_from_the_row_the_shell_left_and_is_not_redrawn() -> None:
    class Suspended:  # BusyKeys after a Ctrl-Z stopped the chat and fg continued it
        suspended = True
        not_suspended = False

        def poll(self) -> int:
            return 0

    term = terminal(40, live=True)
    term.reply_start()
    term.reply_chunk("Let me *roll*")
    term._busy = Suspended()
    assert term.ctrl_c_presses() == 0
    term.out.file.write("\n[1]+  Stopped  agentmm chat\n$ fg\nagentmm chat\n")  # what the shell wrote
    term._busy = None
    term.reply_chunk(" a seven.")
    term.reply_end(False)
    assert Screen(40).feed(written(term)).lines == [
        "Let me",  # the word not ended yet comes with the rest of the reply
        "[1]+  Stopped  agentmm chat",
        "$ fg",
        "agentmm chat",
        "*roll* a seven.",
    ]


def test_the_interrupted_mark_goes_to_the_next_row_when_it_does_not_fit() -> None:
    term = terminal(20)
    stream(term, "one two three four", seed=0, interrupted=True)
    assert Screen(20).feed(written(term)).lines == ["one two three four", "[interrupted]"]


def rendered(text: str, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, force_terminal=True, highlight=False)
    console.print(Markdown(text))
    return Screen(width).feed(console.file.getvalue()).lines  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "width"),
    [
        ("漢" * 21 + "\n*waves* back", 21),  # the edge leaves one column a 2-column character cannot use
        ("*nods* " + "今日は良い天気ですね。" * 4, 23),
        (STORY.replace("lucky", "*lucky*"), 37),
        # A row of 2-column characters that ends in a blank: the blank spilled past the edge
        # (rich drops blanks past it by characters, not cells) and the redraw had an empty row.
        ("*Sure* " + "天気" * 5 + " okay then", 20),  # the 天気 row fills 20 columns
        ("- *Sure* " + "天気" * 5 + " okay then", 23),
        # What fits is drawn as rich draws it: a heading, code, a table.
        ("# Notes\n\n## Sub\n\n```python\ndef f():\n    return 1\n```\n\n| a | b |\n|---|---:|\n| 1 | two |", 30),
    ],
)
def test_the_markdown_redraw_leaves_only_the_rendered_reply(text: str, width: int) -> None:
    term = terminal(width, live=True)
    term.out.file.write("you> hi\n")
    stream(term, text, seed=2)
    assert Screen(width).feed(written(term)).lines == ["you> hi", *rendered(text, width)]


def test_a_reply_the_terminal_was_resized_during_is_not_redrawn() -> None:
    """Terminals that wrap their rows again on a resize (tmux, GNOME Terminal, kitty) moved the
    reply: the rows counted at the old width were erased, and old text stayed above the redraw."""
    term = terminal(40, live=True)
    term.reply_start()
    term.reply_chunk("She *smiles* and the lamp ")
    term.out.width = 24  # the window made narrower
    term.reply_chunk("flickers once more.")
    term.reply_end(False)
    assert "\x1b[J" not in written(term)  # nothing erased
    assert Screen(40).feed(written(term)).text == "She *smiles* and the lamp\nflickers once more."  # as written


def test_under_term_dumb_a_reply_is_written_as_it_came(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich sizes a dumb terminal 80 columns whatever the window: replies were broken at 80 in a
    wider Emacs M-x shell, which wraps long lines itself."""
    import sys

    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    term = Terminal.detect()
    term.out = Console(file=io.StringIO(), width=80, highlight=False, no_color=True)
    stream(term, STORY, seed=1)
    assert written(term) == STORY + "\n"


@pytest.mark.parametrize("emoji", ["🇫🇷", "❤️", "👍🏽", "👩‍🍳", "1️⃣"])
def test_a_reply_with_an_emoji_drawn_wider_than_counted_is_not_redrawn(emoji: str) -> None:
    """Rich counts a flag or ❤️ 1 column and a skin tone 0, terminals draw 2: the rows counted
    were fewer than the reply took, and a stray row stayed above the redraw."""
    term = terminal(20, live=True)
    stream(term, f"*grins* {emoji} " * 6, seed=0)
    assert "\x1b[J" not in written(term)


def test_the_stopping_notice_of_a_second_ctrl_c_leaves_the_word_being_written_whole() -> None:
    """The word held back was written before the notice and its rest after it ("tok", then
    "en3"): it goes whole after the notice."""
    import threading
    from types import SimpleNamespace

    from agentmm.repl.turns import run_turn

    pressed, told = threading.Event(), threading.Event()

    class Turn:  # tokens still come after the first Ctrl-C, until the model stops
        on_observations = None
        result = None

        def cancel(self) -> None:
            pass

        def __iter__(self) -> Any:
            yield "token1 token2 tok"
            pressed.set()
            told.wait(10)
            yield "en3 token4"
            self.result = SimpleNamespace(interrupted=True, trace={})

    term = terminal(60)
    term._busy = object()  # the line editor's keys are held: Ctrl-C is read as a key

    def presses() -> int:  # a double tap once "tok" is on the screen
        if pressed.is_set() and term._streamed and not told.is_set():
            told.set()
            return 2
        return 0

    term.ctrl_c_presses = presses  # type: ignore[method-assign]
    run_turn(Turn(), term)
    assert Screen(60).feed(written(term)).lines == [
        "token1 token2",
        "(stopping: saving what was written first)",
        "token3 token4 [interrupted]",
    ]
