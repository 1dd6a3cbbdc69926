"""The two faces of the chat: a live terminal (line editor, colour, Markdown) or plain lines.

The REPL talks only to ``Terminal``; whether it reads through prompt_toolkit or ``input()``,
and whether replies are re-rendered as Markdown, is decided once here from the streams and
the environment, so ``agentmm chat < script.txt`` and ``NO_COLOR`` get plain text.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agentmm.console_text import PrintableStream, printable, shown_path
from agentmm.repl.word_wrap import WordWrap
from agentmm.terminal_console import make_console

# Markup worth re-rendering a reply for (role-play's *actions* included).
_MARKDOWN = re.compile(
    r"\*\*|__|`|^\s{0,3}#{1,6} |^\s*[-*+] |^\s*\d+\. |^\s*> |\[[^\]]+\]\([^)]+\)|^\|.*\|\s*$"
    r"|(?<![\w*])\*[^*\s][^*\n]*\*(?![\w*])|(?<!\w)_[^_\s][^_\n]*_(?!\w)",
    re.MULTILINE,
)
# Emoji a terminal draws in other widths than rich counts, so the rows a reply took are not known:
# a flag (two regional indicators, 1 column each to rich), a symbol made emoji by U+FE0F (❤️) or a
# keycap, a skin tone (0 columns to rich; 2 drawn), a U+200D sequence (one glyph in many terminals).
_MISCOUNTED = re.compile("[\U0001f1e6-\U0001f1ff\ufe0f\u20e3\U0001f3fb-\U0001f3ff\u200d]")
HISTORY_LIMIT = 20_000  # longer inputs (pastes) are not kept in the line history
# A Ctrl-C this soon after one stopped a reply is the same double tap, not "leave": the stopped
# turn saves in a few hundred ms, and a second press 150-300 ms after the first met the prompt.
STOP_GRACE_S = 1.0

Toolbar = Callable[[], str]


def looks_like_markdown(text: str) -> bool:
    return bool(_MARKDOWN.search(text))


class Terminal:
    """Reads the user's lines and shows replies, notices and errors.

    ``editor``: read through prompt_toolkit (history, completion, multi-line, toolbar);
    ``live``: colour, a spinner and Markdown re-rendering of finished replies; ``wrap`` (stdout
    is a terminal; ``live`` by default): replies are word-wrapped at its width as they stream;
    ``interactive`` (both ends are a terminal, a line editor or not; ``editor`` by default): a
    person is there, so the chat greets them and loads the model while they type. ``asks``
    (stdin is a terminal): a y/N question can be answered; from a script its next line would be
    taken for the answer, so a tool call that asks first is denied instead.
    Notices and errors go to stderr, so stdout holds the conversation when it is piped.
    """

    def __init__(self, *, editor: bool, live: bool, history_file: Path | None = None,
                 wrap: bool | None = None, interactive: bool | None = None, asks: bool = True) -> None:  # fmt: skip
        self.editor = editor
        self.asks = asks
        self.live = live
        self.wrap = live if wrap is None else wrap
        self.interactive = editor if interactive is None else interactive
        self.history_file = history_file
        self.out = make_console(highlight=False, soft_wrap=not live, no_color=not live or None)
        self.err = make_console(stderr=True, highlight=False, no_color=not live or None)
        self._session: Any = None
        self._busy: Any = None  # BusyKeys while the chat works on a line
        self._streamed: list[str] = []  # the reply as shown: without control characters
        self._shown = PrintableStream()
        self._rows = WordWrap()  # where the reply's text is on the screen
        self._replying = False  # between reply_start and reply_end or reply_abort
        self._cut = False  # something else was written in the middle of the reply
        self._width = 0  # the terminal's width when the reply began
        self._resized = False  # the width changed since: the terminal may have re-wrapped its rows
        self._spinner: Any = None
        self._stopped_at = -STOP_GRACE_S  # time.monotonic() when a reply was last stopped

    @classmethod
    def detect(cls, history_file: Path | None = None) -> Terminal:
        """A line editor when both ends are a terminal; colour unless NO_COLOR or TERM=dumb.
        Replies are word-wrapped on a terminal but a dumb one: the one that sets TERM=dumb
        (Emacs' M-x shell) wraps lines itself, at its own width, again when its window is
        resized. Tables are drawn at its width all the same (``make_console``)."""
        tty = sys.stdin.isatty() and sys.stdout.isatty()
        dumb = os.environ.get("TERM", "") == "dumb"
        return cls(editor=tty and not dumb, live=tty and not dumb and not os.environ.get("NO_COLOR"),
                   history_file=history_file, wrap=sys.stdout.isatty() and not dumb, interactive=tty,
                   asks=sys.stdin.isatty())  # fmt: skip

    # ------------------------------------------------------------------ input

    def setup_editor(self, completer: Any, toolbar: Toolbar) -> None:
        """Build the prompt_toolkit session (imported only now: the REPL has started)."""
        if not self.editor:
            return
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import InMemoryHistory
        from prompt_toolkit.output import ColorDepth

        keys = self._suspend_key()

        @keys.add("escape", "enter")  # Alt-Enter
        @keys.add("c-j")
        def _newline(event: Any) -> None:
            event.current_buffer.insert_text("\n")

        @keys.add("c-c")
        def _clear_or_leave(event: Any) -> None:
            buffer = event.current_buffer
            if buffer.text:
                buffer.reset()
            elif not self.just_stopped():
                event.app.exit(exception=EOFError)

        history: Any = InMemoryHistory()
        if self.history_file is not None:
            try:
                self.history_file.parent.mkdir(parents=True, exist_ok=True)
                history = _BoundedFileHistory(str(self.history_file))
            except OSError:
                pass
        self._session = PromptSession(
            history=history,
            completer=completer,
            complete_while_typing=True,
            key_bindings=keys,
            bottom_toolbar=(lambda: toolbar()) if self.live else None,
            refresh_interval=0.5 if self.live else 0,
            color_depth=None if self.live else ColorDepth.MONOCHROME,
            enable_history_search=True,
            enable_suspend=False,  # Ctrl-Z is _suspend_key's: it says so where it stopped nothing
            prompt_continuation=lambda width, line, wrap: "." * (width - 1) + " ",
        )

    def read(self) -> str | None:
        """The next line the user sent, or None when they leave (Ctrl-D, Ctrl-C, end of input)."""
        try:
            if self._session is not None:
                from agentmm.repl.busy_keys import take_cooked_keys

                take_cooked_keys(self._session.input)  # typed before this prompt: Enter sends it
                return str(self._session.prompt([("class:prompt bold ansigreen", "you> ")]))
            return input("you> " if sys.stdin.isatty() else "")
        except (EOFError, KeyboardInterrupt):
            if sys.stdin.isatty():
                self.err.print()
            return None

    def leave_prompt(self) -> None:
        """Make the line editor's prompt, if one is reading, return as on Ctrl-D; a signal
        handler's call (it runs between the editor's steps, so the exit is scheduled on its
        loop): the editor then gives the terminal back as it found it."""
        app = self._session.app if self._session is not None else None
        if app is None or not app.is_running or app.loop is None:
            return

        def leave() -> None:
            if app.is_running and not app.is_done:
                app.exit(exception=EOFError)

        app.loop.call_soon_threadsafe(leave)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """While the chat works on a line: the line editor's keys are read here, not echoed;
        Ctrl-C is seen by ``ctrl_c_presses`` and the rest waits for the next prompt."""
        if self._session is None or self._busy is not None:
            yield
            return
        from agentmm.repl.busy_keys import BusyKeys

        with BusyKeys(self._session.input) as self._busy:
            try:
                yield
            finally:
                self._busy = None

    @property
    def holds_keys(self) -> bool:
        return self._busy is not None

    def ctrl_c_presses(self) -> int:
        """Ctrl-C presses since the last call, while ``busy`` (a signal does it otherwise). A
        Ctrl-Z among the keys stopped the chat meanwhile: the shell wrote its lines, and the reply
        goes on from the start of a row (and is not redrawn: its rows are no longer known); where
        there is no job control nothing stopped, and a line says so."""
        if self._busy is None:
            return 0
        presses = int(self._busy.poll())
        if self._busy.suspended and self._replying:
            self._rows.at_row_start()
            self._cut = self._cut or bool(self._streamed)
        if self._busy.not_suspended:  # the reply's rows are where they were: only this line is new
            from agentmm.repl.busy_keys import NO_JOB_CONTROL

            self.interject(NO_JOB_CONTROL)
        return presses

    def confirm(self, question: str) -> bool:
        """A y/N question (tool approval); anything but y/yes is no.

        The line editor is given the whole question to draw: it draws its prompt from the start
        of the row, so a question printed before it was drawn over (the answer typed landed in
        it, and only `` [y/N] y`` stayed in the scrollback). Ctrl-Z suspends the chat here too
        (it was typed into the answer as ``^Z``, a no)."""
        self.stop_spinner()
        self._end_reply_row()
        ask = f"{printable(question).strip()} [y/N] "
        try:
            if self._session is not None:
                from prompt_toolkit import prompt
                from prompt_toolkit.formatted_text import FormattedText
                from prompt_toolkit.input.typeahead import get_typeahead

                self.err.file.flush()
                answer = prompt(FormattedText([("", ask)]), key_bindings=self._suspend_key())  # Ctrl-Z as at the prompt
                if self._busy is not None:  # what was typed after the answer goes to the next prompt
                    self._busy.keep(get_typeahead(self._session.input))
            else:
                self.err.print(ask, end="", highlight=False, markup=False)
                answer = input()
        except (EOFError, KeyboardInterrupt):
            return False
        return answer.strip().lower() in {"y", "yes"}

    def _suspend_key(self) -> Any:
        """Key bindings with Ctrl-Z: the chat stops as a shell's job (``fg`` brings it back), as
        prompt_toolkit's own Ctrl-Z does; where no shell can continue it (no job control) the
        kernel discards the stop, and a line says so, as during a reply (it said nothing)."""
        from prompt_toolkit.application import run_in_terminal
        from prompt_toolkit.key_binding import KeyBindings

        keys = KeyBindings()
        if not hasattr(signal, "SIGTSTP"):  # no job control on this system: Ctrl-Z is no key
            return keys

        @keys.add("c-z")
        def _suspend(event: Any) -> None:
            from agentmm.repl.busy_keys import NO_JOB_CONTROL, stop_job

            def stop() -> None:  # the line editor's screen handed to the shell meanwhile
                if not stop_job():
                    self._say(NO_JOB_CONTROL)

            run_in_terminal(stop)

        return keys

    # ------------------------------------------------------------------ replies

    def reply_start(self) -> None:
        self._streamed = []
        self._shown = PrintableStream()
        self._rows = WordWrap()
        self._replying, self._cut = True, False
        self._width, self._resized = self.out.size.width, False

    def reply_chunk(self, text: str) -> None:
        """Show a piece of the reply; escape sequences and control characters in it (a title
        change, a line erased) are the model's text, never the terminal's commands."""
        if not self._streamed:
            self.stop_spinner()
        self._write_reply(self._shown.feed(text))

    def _write_reply(self, text: str, end: bool = False) -> None:
        """Show ``text`` (``end``: the last of the reply), word-wrapped on a terminal."""
        if text:
            self._streamed.append(text)
        shown = text
        if self.wrap:
            width = self._reply_width()
            shown = self._rows.feed(text, width) + (self._rows.flush(width) if end else "")
        if shown:
            self.out.file.write(shown)
            self.out.file.flush()

    def _reply_width(self) -> int:
        """The terminal's width now. Where it changed during the reply, tmux, GNOME Terminal,
        kitty and iTerm2 wrap the rows already shown again, to the new width: the rows counted
        are no longer where the reply is, and erasing them for the Markdown redraw left old text
        above it."""
        width = self.out.size.width
        self._resized = self._resized or width != self._width
        return width

    def _end_reply_row(self, *, keep_word: bool = False) -> None:
        """Before a notice or a question in the middle of a reply (a tool call's): the reply's
        row is ended, so they start on their own; the reply's text can then no longer be erased
        exactly, so it is not redrawn as Markdown. ``keep_word``: see ``WordWrap.end_row``."""
        if not (self._replying and self.wrap):
            return
        shown = self._rows.end_row(self._reply_width(), keep_word=keep_word)
        if shown:
            self.out.file.write(shown)
            self.out.file.flush()
        self._cut = self._cut or bool(self._streamed)

    def just_stopped(self) -> bool:
        """Whether a reply was stopped less than ``STOP_GRACE_S`` ago (Ctrl-C then does not leave)."""
        return time.monotonic() - self._stopped_at < STOP_GRACE_S

    def reply_end(self, interrupted: bool, out_of_character: bool = False) -> None:
        """Finish the reply: re-render it as Markdown on a live terminal, mark it if stopped or
        said out of character."""
        if interrupted:
            self._stopped_at = time.monotonic()
        self.stop_spinner()
        self._write_reply(self._shown.flush(), end=True)
        self._replying = False
        text = "".join(self._streamed)
        rendered = bool(self.live and text.strip() and looks_like_markdown(text) and self._erase(text))
        if rendered:
            self.show_markdown(text)
        lead = "" if rendered else self._lead(" [interrupted]")
        if interrupted and self.live:
            self.out.print(lead + "[dim yellow]\\[interrupted][/]")
        elif interrupted:
            self.out.file.write(lead + "[interrupted]\n")
        elif not rendered and self._row_open(text):
            self.out.file.write("\n")
        if out_of_character and self.live:
            self.out.print("[dim]\\[out of character][/]")
        elif out_of_character:
            self.out.file.write("[out of character]\n")
        self.out.file.flush()

    def reply_abort(self) -> None:
        """The turn failed: end the line it was writing, so the error starts on its own."""
        self.stop_spinner()
        self._write_reply(self._shown.flush(), end=True)
        self._replying = False
        if self._streamed and self._row_open("".join(self._streamed)):
            self.out.file.write("\n")
            self.out.file.flush()

    def _row_open(self, text: str) -> bool:
        """Whether the reply's last row needs a line break (an empty reply gets its empty row)."""
        if self.wrap and self._streamed:
            return self._rows.column > 0
        return not text.endswith("\n")

    def _lead(self, mark: str) -> str:
        """What goes before a mark after the reply's text: a blank, or a line break where the
        mark would not fit on the reply's last row."""
        if self.wrap and self._rows.column + len(mark) > self._reply_width():
            return "\n"
        return " "

    def _erase(self, text: str) -> bool:
        """Move back over the streamed text and clear it; False when it cannot be done exactly
        (it scrolled off the screen, has tabs or emoji drawn wider than counted, the
        terminal was resized meanwhile, or a notice was written after part of it)."""
        self._reply_width()
        if self._cut or self._resized or not self.wrap or "\t" in text or _MISCOUNTED.search(text):
            return False
        rows = self._rows.rows
        if rows >= self.out.size.height:
            return False
        self.out.file.write("\r" + (f"\x1b[{rows - 1}A" if rows > 1 else "") + "\x1b[J")
        return True

    def show_markdown(self, text: str, end: str = "\n") -> None:
        """``text`` rendered as Markdown on a live terminal; a word longer than a row (a URL) is
        written whole, wrapped by the terminal, as while it streamed (``reply_markdown``)."""
        from agentmm.repl.reply_markdown import reply_markdown

        text = printable(text)
        if self.live:
            self.out.print(reply_markdown(text), end=end, crop=False)
        else:
            self.out.file.write(text + end)

    # ------------------------------------------------------------------ notices

    def show(self, renderable: Any) -> None:
        """Command output (tables, /why): stdout, plain when piped."""
        self._end_reply_row()
        self.out.print(renderable)

    def info(self, text: str) -> None:
        self._end_reply_row()
        self._say(text)

    def interject(self, text: str) -> None:
        """A line about a key pressed while a reply streams (stopping it, Ctrl-Z): it comes
        between two tokens, in the middle of a word maybe, and the word goes whole after it."""
        self._end_reply_row(keep_word=True)
        self._say(text)

    def _say(self, text: str) -> None:
        """A notice, wrapped at its words; one longer than a row (a URL in a voice note's words
        or a tool's result) is written whole, as in a reply: rich broke it with a line break."""
        from rich.text import Text

        from agentmm.repl.whole_words import WholeWords

        self.err.print(WholeWords(Text(printable(text), style="dim" if self.live else "")), crop=False)

    def note(self, markup: str) -> None:
        """A notice with rich markup (the header, hints)."""
        self._end_reply_row()
        self.err.print(markup, highlight=False)

    def warn(self, text: str) -> None:
        """A note the user should act on, though nothing failed (no model here for a picture)."""
        self._labelled("note", "bold yellow", printable(text))

    def error(self, text: str) -> None:
        self._labelled("error", "bold red", printable(text))

    def _labelled(self, label: str, style: str, text: str) -> None:
        """One line on stderr: coloured on a live terminal, ``agentmm: LABEL: ...`` piped."""
        self.stop_spinner()
        self._end_reply_row()
        if self.live:
            self.err.print(f"[{style}]{label}:[/] {_escape(printable(text))}", highlight=False)
        else:
            self.err.file.write(f"agentmm: {label}: {text}\n")
            self.err.file.flush()

    def start_spinner(self, text: str) -> None:
        if self.live and self._spinner is None:
            self._spinner = self.err.status(text, spinner="dots")
            self._spinner.start()

    def stop_spinner(self) -> None:
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class _BoundedFileHistory:
    """FileHistory that skips very long entries, so a big paste does not bloat the file."""

    def __new__(cls, filename: str) -> Any:
        from prompt_toolkit.history import FileHistory

        class Bounded(FileHistory):
            def store_string(self, string: str) -> None:
                if len(string) <= HISTORY_LIMIT:
                    super().store_string(string)

        return Bounded(filename)


def note_level(observation: dict[str, Any]) -> str:
    """How loud a chat says one observation: ``error`` (the file could not be read), ``note`` (a
    good file no model here perceives, such as no image captioner offline: setup advice, the
    turn goes on) or ``info`` (what was seen or heard)."""
    if observation.get("unavailable"):
        return "note"
    return "error" if observation.get("error") else "info"


def names_file(message: str, name: str) -> bool:
    """Whether ``message`` already names the file ``name`` (``no such file: media/missing.jpg``)
    as a whole path part, so a line about it need not put the name in front again (it said
    ``missing.jpg: no such file: missing.jpg``)."""
    return bool(name) and re.search(rf"(?:^|[\s/'\"(]){re.escape(name)}(?:$|[\s:'\",)])", message) is not None


def user_note(observation: dict[str, Any]) -> tuple[bool, str]:
    """How a chat shows the user one observation (a trace dict): (is it an error, the line);
    ``note_level`` says whether a line that is no error is a note."""
    name = shown_path(Path(observation["file"]).name)
    if observation.get("error"):
        error = printable(observation["error"])
        # A quoted name is inside the quotes of the error's quoted path ('/x/a\\nb.png').
        named = names_file(error, name) or (name.startswith(("'", '"')) and names_file(error, name[1:-1]))
        return note_level(observation) == "error", error if named else f"{name}: {error}"
    if observation["kind"] == "audio":
        if not str(observation.get("text") or "").strip():
            return False, f"[no speech found in {name}]"
        return False, f"[you said ({name}): {printable(_as_sent(observation))}]"
    if observation.get("native"):  # the chat model sees the picture itself: no caption to show
        return False, f"[{name}: sent to {printable(observation.get('model', 'the model'))}]"
    return False, f"[{name}: {printable(observation['text'])}]"


def file_note(observation: dict[str, Any]) -> str | None:
    """What the user should know of a file perceived in part (a WAV cut short: the transcript
    is of the part that is there), said as a note after the observation's line; None if nothing."""
    note = observation.get("note")
    return printable(str(note)) if note else None


def _as_sent(observation: dict[str, Any]) -> str:
    """A voice note's words as the model got them: a note too long for the context was cut at a
    sentence (``sent_text``, which ``TurnStream`` adds; "" where none of it fit), and the whole
    transcript was shown as if the model had heard it all."""
    heard, sent = str(observation["text"]), observation.get("sent_text")
    if sent is None:
        return heard
    kept = len(str(sent).removesuffix("…").split())
    return f"{sent} (cut to fit: {kept:,} of {len(heard.split()):,} words)".lstrip()


TOOL_NOTE_LINES = 8


CALL_TEXT_CHARS = 80


def call_text(name: str, args: dict[str, Any] | str | None) -> str:
    """A tool call as the chat shows it: ``name(key='value', ...)``; a malformed call's
    arguments are the text the model wrote (not an object), shown as written, cut to
    ``CALL_TEXT_CHARS`` (showing it crashed the chat with an AttributeError)."""
    if isinstance(args, str):
        written = " ".join(args.split())
        cut = written if len(written) <= CALL_TEXT_CHARS else written[: CALL_TEXT_CHARS - 1] + "…"
        return f"{name}({cut})"
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in (args or {}).items())})"


def shown_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tool calls a chat shows: a denied one was said already, where it was denied (the
    user's own no, or the line saying nobody could be asked), and its ``[tool ... denied]``
    line was a second line, as an error, for the same call."""
    return [call for call in calls if call.get("status") != "denied"]


def tool_note(call: dict[str, Any]) -> tuple[bool, str]:
    """How a chat shows the user one tool call that ran (a trace entry): (did it fail, the text).

    The output is shown as the model got it (a few lines), so the user sees what was found
    (e.g. the paths of matching pictures) whatever the reply makes of it; without its escape
    sequences, as a reply is shown (a tool's ``ESC ]0;...`` set the terminal's title, ``ESC [2J``
    cleared it, on ``chat -m``'s stderr and a piped chat's).
    """
    output = printable(str(call.get("output") or "")).strip()
    if call.get("status") != "ok":  # the status says it already: "[tool x timeout: error: ...]"
        output = output.removeprefix("error: ")
    lines = output.splitlines()
    if len(lines) > TOOL_NOTE_LINES:
        lines = [*lines[:TOOL_NOTE_LINES], f"… {len(lines) - TOOL_NOTE_LINES} more lines"]
    shown = "\n  ".join(lines)
    failed = call.get("status") != "ok"
    status = f" {call.get('status')}" if failed else ""
    head = printable(f"[tool {call_text(call.get('name', '?'), call.get('args'))}{status}")
    return failed, f"{head}:\n  {shown}]" if len(lines) > 1 else f"{head}: {shown}]"
