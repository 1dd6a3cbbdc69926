"""The REPL's slash commands: their names, arguments and help, and how a line is parsed.

One table feeds ``/help``, completion and the "did you mean" hint, so they cannot disagree.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from agentmm.errors import AgentmmError


@dataclass(frozen=True)
class Command:
    name: str
    args: str
    help: str
    # What completes the argument: "persona", "path", "thread", "model" or "".
    completes: str = ""

    @property
    def takes_name(self) -> bool:
        """Whether the argument is one name (a persona, file, id, number), which a user may quote
        (``/persona 'Bram'``, ``/save "my notes.md"``), not free text (/remember, /memory)."""
        return self.args.strip("[]") in {"NAME", "PATH", "FILE", "ID", "N"}


COMMANDS: tuple[Command, ...] = (
    Command("help", "", "this list"),
    Command("persona", "[NAME]", "the personas, or play NAME from your next message on", "persona"),
    Command("greeting", "[N]", "the persona's greetings, or open this new thread with greeting N"),
    Command("image", "PATH", "attach a picture to your next message", "path"),
    Command("audio", "PATH", "attach a voice note to your next message", "path"),
    Command("memory", "[QUERY]", "the newest memories, or those that match QUERY (with scores)"),
    Command("remember", "TEXT", "write a memory by hand"),
    Command("forget", "ID", "delete a memory by id (see /memory)"),
    Command("why", "", "the last turn: memories recalled, lore, observations, tool calls, tokens per part, timings"),
    Command("threads", "", "saved threads, newest first"),
    Command("resume", "ID", "continue a saved thread (a unique prefix of its id is enough)", "thread"),
    Command("new", "", "start a new thread"),
    Command("retry", "", "regenerate the last reply"),
    Command("undo", "", "remove the last exchange from the thread and from memory"),
    Command("save", "FILE", "write the transcript: Markdown (.md) or JSON (.json)", "path"),
    Command("model", "[NAME]", "the model in use, or switch to NAME (shipped name, .gguf path or hub id)", "model"),
    Command("exit", "", "leave (also /quit, Ctrl-D, or Ctrl-C at an empty prompt)"),
)
ALIASES = {"quit": "exit", "q": "exit", "h": "help", "?": "help"}
BY_NAME = {c.name: c for c in COMMANDS}


@dataclass(frozen=True)
class Parsed:
    """A line that is a command: its name (after aliases) and the rest as one argument."""

    name: str
    arg: str


class UnknownCommand(ValueError):
    """A ``/word`` that is not a command; the message suggests the closest one."""


def parse(line: str) -> Parsed | str:
    """A command, or the text to send (``//text`` sends ``/text``).

    Any whitespace ends the command's name (a tab, or a newline from a paste), so the name
    never swallows its argument, and the unknown-command line never holds a newline. The name
    follows the ``/`` directly: ``/ help`` is refused (with the command it may have meant), as
    a bare ``/`` is, not read as ``/help``. A name argument is read without the blanks inside
    its quotes (``/model ' fake '`` names ``fake``).
    """
    stripped = line.strip()
    if not stripped.startswith("/") or stripped.startswith("//"):
        return line.lstrip()[1:] if stripped.startswith("//") else line
    if not stripped[1:2].strip():  # "/", or blanks after it: no name to look up
        meant = stripped[1:].split(None, 1)[0].lower() if stripped[1:].strip() else ""
        if meant in BY_NAME or meant in ALIASES:
            raise UnknownCommand(f"a command's name goes right after the /: /{meant} "
                                 "(// sends a line beginning with /)")  # fmt: skip
        raise UnknownCommand("a command needs a name after /: /help lists them (// sends a line beginning with /)")
    word, *rest = stripped[1:].split(None, 1)
    name = ALIASES.get(word.lower(), word.lower())
    if name not in BY_NAME:
        raise UnknownCommand(unknown_message(word))
    arg = rest[0].strip() if rest else ""
    return Parsed(name, unquote(arg).strip() if BY_NAME[name].takes_name else arg)


def unquote(arg: str) -> str:
    """``arg`` without one pair of matching quotes around it, single or double (what is inside is
    kept as typed); an argument not quoted so, as it is."""
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "'\"":
        return arg[1:-1]
    return arg


def path_arg(arg: str) -> Path:
    """A file argument (``parse`` took its quotes off) as a path, ``~`` expanded. A name no file can
    have (a NUL byte) or a ``~user`` naming no user is one error line, not a ValueError or
    RuntimeError out of pathlib; so is a line break, which in a one-line command comes from a
    paste of several lines (and would split every message naming the file)."""
    text = arg
    if "\0" in text:
        raise AgentmmError(f"{text!r}: a file name cannot contain a NUL character")
    if "\n" in text or "\r" in text:
        raise AgentmmError(f"{text!r}: one file per command, on one line")
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise AgentmmError(f"{text.split('/', 1)[0]!r} names no user on this machine") from None


def index_arg(arg: str) -> int | None:
    """A number such as /greeting's N, typed in ASCII digits; None for anything else, including
    digits ``int()`` refuses ('²') and numbers too long to index anything."""
    return int(arg) if arg.isascii() and arg.isdigit() and len(arg) <= 9 else None


def unknown_message(word: str) -> str:
    close = difflib.get_close_matches(word.lower(), [*BY_NAME, *ALIASES], n=1, cutoff=0.5)
    if close:
        return f"unknown command /{word}: did you mean /{ALIASES.get(close[0], close[0])}? (/help lists them)"
    return f"unknown command /{word} (/help lists them; start with // to send a line beginning with /)"
