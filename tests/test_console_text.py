"""Text from users and models as the terminal shows it: escape sequences are text, never commands."""

from __future__ import annotations

import pytest

from agentmm.console_text import PrintableStream, printable

HOSTILE = "\x1b]0;PWNED\x07 a \x1b[1A\x1b[2K b\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ \x9b31m\r\n\tend\x07"
SHOWN = " a  blink 31m\n\tend"


def test_printable_drops_escapes_and_controls_but_keeps_newlines_tabs_and_unicode() -> None:
    assert printable(HOSTILE) == SHOWN
    assert printable("漢字 é 🙂 ‽") == "漢字 é 🙂 ‽"


@pytest.mark.parametrize("size", range(1, len(HOSTILE) + 1))
def test_a_stream_in_pieces_of_any_size_shows_what_the_whole_shows(size: int) -> None:
    stream = PrintableStream()
    shown = "".join(stream.feed(HOSTILE[i : i + size]) for i in range(0, len(HOSTILE), size)) + stream.flush()
    assert shown == SHOWN


def test_a_sequence_never_finished_is_dropped_at_the_end_and_holds_back_no_more_than_a_limit() -> None:
    stream = PrintableStream()
    assert stream.feed("a\x1b[3") == "a"
    assert stream.flush() == ""  # a CSI never ended goes whole: "[3" was left as text
    assert printable("a\x1b[3") == "a" and printable("a\x1b[1;2 ") == "a"
    assert stream.feed("b\x1b]0;title without end") == "b"
    # Past the limit the open OSC is let go: its introducer goes, what followed it is text.
    assert stream.feed("x" * 5000) == "0;title without end" + "x" * 5000
    assert stream.feed("c") == "c"


def test_an_osc_that_never_ends_hides_nothing_after_it() -> None:
    """Its pattern's terminator was optional: it took the rest of the reply (and of the .md)."""
    assert printable("Hello \x1b]0;oops the rest\nmore") == "Hello 0;oops the rest\nmore"
    stream = PrintableStream()
    shown = stream.feed("Hello \x1b]0;oops") + stream.feed(" the rest of a long answer") + stream.flush()
    assert shown == "Hello 0;oops the rest of a long answer"


def test_a_name_is_quoted_as_written_and_repr_only_for_controls() -> None:
    from agentmm.console_text import shown_name

    assert shown_name("a/b\\c") == "'a/b\\c'"  # repr doubled the backslash
    assert shown_name("Nora O'Brien") == '"Nora O\'Brien"' and shown_name("漢字 🙂") == "'漢字 🙂'"
    assert shown_name("x\ny\x1b[2J") == repr("x\ny\x1b[2J")
