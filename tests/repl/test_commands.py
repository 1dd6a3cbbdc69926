"""Slash command parsing: aliases, the // escape, and the closest-command hint."""

from __future__ import annotations

import pytest

from agentmm.repl.commands import COMMANDS, Parsed, UnknownCommand, parse
from agentmm.repl.terminal import looks_like_markdown
from agentmm.repl.word_wrap import WordWrap


def test_every_command_the_issue_lists_exists() -> None:
    wanted = {"persona", "greeting", "image", "audio", "memory", "remember", "forget", "why", "threads", "resume",
              "new", "retry", "undo", "save", "model", "exit", "help"}  # fmt: skip
    assert {c.name for c in COMMANDS} == wanted


def test_parse_commands_text_and_escape() -> None:
    assert parse("/save  out.md ") == Parsed("save", "out.md")
    assert parse("/QUIT") == Parsed("exit", "")
    assert parse("/remember Mira likes tea") == Parsed("remember", "Mira likes tea")
    assert parse("hello /why") == "hello /why"
    assert parse("//me waves") == "/me waves"


@pytest.mark.parametrize("line", ["/", "/   ", " /\t", "/\u3000", "/ /", "/ nope", "/\t//x"])
def test_a_bare_slash_is_one_line_not_a_crash(line: str) -> None:
    with pytest.raises(UnknownCommand, match="a command needs a name after /") as raised:
        parse(line)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("line", "meant"), [("/ help", "/help"), ("/  model qwen", "/model"), ("/\tQ", "/q")])
def test_a_blank_between_the_slash_and_a_name_is_refused_with_the_command_meant(line: str, meant: str) -> None:
    """``/ help`` ran /help, and ``/ /`` named ``//``: the name follows the / directly."""
    with pytest.raises(UnknownCommand, match=f"a command's name goes right after the /: {meant} ") as raised:
        parse(line)
    assert "\n" not in str(raised.value)


QUOTED = [
    ("/persona 'Bram'", Parsed("persona", "Bram")),
    ('/persona "Nora Quill"', Parsed("persona", "Nora Quill")),
    ('/model "qwen0.5b"', Parsed("model", "qwen0.5b")),
    ("/save 'my notes.md'", Parsed("save", "my notes.md")),
    ('/image "it\'s here.png"', Parsed("image", "it's here.png")),
    ("/resume '78fb9d'", Parsed("resume", "78fb9d")),
    ('/forget "note:1"', Parsed("forget", "note:1")),
    ("/greeting '1'", Parsed("greeting", "1")),
    ("/persona ''", Parsed("persona", "")),
    ("/model ' fake '", Parsed("model", "fake")),  # blanks inside the quotes are no part of a name
    ('/save " my notes.md\t"', Parsed("save", "my notes.md")),
    ("/persona ' '", Parsed("persona", "")),
    ("/persona 'Bram\"", Parsed("persona", "'Bram\"")),  # not a pair: kept
    ("/persona ''Bram''", Parsed("persona", "'Bram'")),  # one pair only
    ("/persona it's", Parsed("persona", "it's")),
    ("/remember 'tea' is her word", Parsed("remember", "'tea' is her word")),  # free text: as typed
    ('/remember "I like tea"', Parsed("remember", '"I like tea"')),
    ('/memory "tea"', Parsed("memory", '"tea"')),
]


@pytest.mark.parametrize(("line", "parsed"), QUOTED)
def test_one_pair_of_quotes_around_a_name_or_path_is_dropped(line: str, parsed: Parsed) -> None:
    assert parse(line) == parsed


HINTS = [("hepl", "did you mean /help?"), ("retyr", "did you mean /retry?"), ("resme", "did you mean /resume?"),
         ("zzzz", "/help lists them")]  # fmt: skip


@pytest.mark.parametrize(("word", "hint"), HINTS)
def test_unknown_command_suggests_the_closest(word: str, hint: str) -> None:
    with pytest.raises(UnknownCommand, match=hint.replace("?", r"\?")):
        parse(f"/{word} x")


def test_markdown_detection_and_row_count() -> None:
    assert looks_like_markdown("*waves at you* Hello!")
    assert looks_like_markdown("- one\n- two")
    assert looks_like_markdown("use `pip`")
    assert not looks_like_markdown("Hello there. 3 * 4 = 12, isn't it?")

    def rows_used(text: str, width: int) -> int:
        wrap = WordWrap()
        wrap.feed(text, width)
        wrap.flush(width)
        return wrap.rows

    assert rows_used("abc", 10) == 1
    assert rows_used("a" * 10, 10) == 1
    assert rows_used("a" * 11 + "\n\nb", 10) == 4
    assert rows_used("漢字" * 3, 4) == 3  # wide characters take two cells
    assert rows_used("漢" * 5, 5) == 3  # and never straddle the edge: a row of 5 holds two
    assert rows_used("one two three", 6) == 3  # words are not cut at the edge
