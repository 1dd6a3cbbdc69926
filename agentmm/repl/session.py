"""One interactive chat: the loop, the state a user changes with slash commands (thread,
persona, attachments, model), and each command's handler.

Every handler turns a user's mistake into one line and returns to the prompt; only ``/exit``,
Ctrl-D and Ctrl-C at an empty prompt end the session.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentmm.console_text import one_line, plain, printable, shown_path
from agentmm.errors import AgentmmError, NothingToUndoError, ThreadNotFoundError, TurnStoppedError
from agentmm.repl.commands import COMMANDS, Parsed, UnknownCommand, index_arg, parse, path_arg
from agentmm.repl.terminal import Terminal, file_note, note_level, shown_calls, tool_note, user_note
from agentmm.repl.turns import ENDING_SIGNALS, Outcome, run_turn

if TYPE_CHECKING:
    from collections.abc import Sequence

    from agentmm.repl.ports import ChatAgent, ChatTurn, PersonaModel
    from agentmm.settings import Settings

HISTORY_FILE = "repl_history"
# Leaving a thread that was never saved (no turn kept in it): there is no thread to resume. "In
# this thread": after /new an earlier thread of the session may well have been saved.
_NOTHING_SAVED = "nothing was said in this thread, so it was not saved"


# What each kind of attachment is called in a message.
_KIND_NOUNS = {"image": "a picture", "audio": "audio", "video": "a video"}


def check_attachment_kind(path: Path, found: str, wanted: str, how: str) -> None:
    """Refuse a file attached as ``wanted`` (``image``/``audio``) whose bytes say it is ``found``:
    ``/audio`` and ``chat --audio`` alike (one accepted a picture, the other refused it as 'an
    image file, not audio'). ``how`` is ``/`` or ``--``, to name the command that fits."""
    if found == wanted:
        return
    what = f"{shown_path(path.name)} is {_KIND_NOUNS.get(found, found)}, not {_KIND_NOUNS.get(wanted, wanted)}"
    if found in ("image", "audio"):
        raise AgentmmError(f"{what}: attach it with {how}{found}")
    raise AgentmmError(f"{what}: only pictures and audio can be attached")


class ChatSession:
    """The interactive ``agentmm chat`` over an ``Agent``."""

    def __init__(self, agent: ChatAgent, terminal: Terminal, thread_id: str | None = None, *,
                 persona: str | None = None, greeting: int = 0, persona_model: PersonaModel,
                 yes: bool = False) -> None:  # fmt: skip
        from agentmm.threads import new_thread_id

        self.agent = agent
        # The agent the session was given: it owns the thread database and the memory store,
        # which the agents /model makes share; the caller closes it.
        self.owner = agent
        self.terminal = terminal
        self.resumed = thread_id is not None
        self.thread_id = thread_id or new_thread_id()
        # A persona asked for is passed with the next turn only: the thread remembers it.
        self.pending_persona = persona
        self.persona = played_persona(agent, persona, thread_id)
        # The model a persona asks for (``graphs.chat.persona_model``, passed in: this package
        # is under the graphs and cannot import them).
        self.persona_model = persona_model
        self.greeting = greeting
        self.yes = yes  # --yes: tool calls that ask first are allowed without asking
        self.attachments: list[Path] = []
        self.last_trace: dict[str, Any] | None = None
        self._warming: threading.Thread | None = None
        self._retries = 0
        self.ended_by: int | None = None  # SIGTERM or SIGHUP during a turn: the chat ends after it
        self._reading = False  # the prompt waits for a line (``_on_ending`` stops a plain one)

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        self._open_and_warm_up()
        self.terminal.setup_editor(self._completer(), self.toolbar)
        self._header()
        if self.resumed:
            self._show_recent()
        else:
            self._print_greeting()
        # The line editor reads Ctrl-C as a key; between a reply and the next prompt a late
        # press (the second of a double tap) must not end the process mid-save.
        previous = signal.signal(signal.SIGINT, _ignore) if self.terminal.editor else None
        # SIGTERM or SIGHUP between turns would kill the process with the editor's raw mode on
        # (no echo, no line editing left in the terminal), and a piped chat without a word of
        # what became of its thread: the chat ends as on Ctrl-D instead, says so as a turn
        # stopped by one does, and exits 128 + the signal's number. A turn puts its own
        # handlers in (run_turn).
        before_ending = {number: signal.signal(number, self._on_ending) for number in ENDING_SIGNALS}
        try:
            while self.ended_by is None:
                try:
                    self._reading = True
                    line = self.terminal.read()
                except _EndingSignal:  # a plain read (no line editor to leave) interrupted
                    line = None
                finally:
                    self._reading = False
                if line is None or self.ended_by is not None:
                    break
                with self.terminal.busy():  # keys typed meanwhile: Ctrl-C stops a reply, the rest is type-ahead
                    if not self.handle(line) or self.ended_by is not None:
                        break
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            for number, handler in before_ending.items():
                signal.signal(number, handler)
            if self.agent is not self.owner:
                self.agent.close()
        if self.ended_by is not None:
            self._end_for_signal(self.ended_by)
        # Ctrl-D, /exit: the thread to resume, if there is one (a new thread is saved with its
        # first turn; naming one that never was sent the user to a /resume that finds nothing).
        self.terminal.info(f"[thread {self.thread_id}]" if self._saved() else f"[{_NOTHING_SAVED}]")

    def _on_ending(self, signum: int, frame: Any) -> None:
        """SIGTERM or SIGHUP outside a turn: the prompt returns as on Ctrl-D (a command under
        way finishes first), and ``run`` ends for the signal."""
        self.ended_by = signum
        self.terminal.leave_prompt()
        if self._reading and not self.terminal.editor:  # a plain read waits on: stop it here
            raise _EndingSignal

    def _end_for_signal(self, signum: int) -> None:
        """The turn a SIGTERM or SIGHUP stopped is saved: end as the signal would have, exit
        128 + its number, saying so in one line where a terminal is still there (not after
        SIGHUP: it has gone)."""
        if signum != getattr(signal, "SIGHUP", None):
            line = self._what_was_saved()
            with contextlib.suppress(OSError, ValueError):
                self.terminal.info(f"[terminated: {line}]")
        raise SystemExit(128 + signum)

    def _what_was_saved(self) -> str:
        """The thread that keeps what was said, or nothing: a new thread is saved with its first
        turn, so one ended before any (or whose only turn was stopped before anything was kept)
        is not there to resume. The first agent's database: it stays open (``owner``)."""
        if self._saved():
            return f"what was said so far is saved in thread {self.thread_id}"
        return "nothing was said, so nothing was saved"

    def _saved(self) -> bool:
        """Whether this session's thread is in the database (see ``_what_was_saved``)."""
        from agentmm.threads import thread_exists

        return thread_exists(self.owner.checkpointer, self.thread_id)

    def handle(self, line: str) -> bool:
        """Act on one line; False when the session should end. An empty line sends what is
        attached, alone (a voice note sent with no typed text is the message); with nothing
        attached it does nothing."""
        if not line.strip() and not self.attachments:
            return True
        try:
            parsed = parse(line) if line.strip() else ""
        except UnknownCommand as exc:
            self.terminal.error(str(exc))
            return True
        try:
            if isinstance(parsed, Parsed):
                if parsed.name == "exit":
                    return False
                getattr(self, f"cmd_{parsed.name}")(parsed.arg)
            else:
                self.send(parsed)
        except AgentmmError as exc:
            self.terminal.error(str(exc))
        except BrokenPipeError:
            raise  # the chat's output has no reader left (| head): nothing more can be said
        except OSError as exc:
            self.terminal.error(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        return True

    def send(self, text: str) -> Outcome | None:
        """One turn: stream the reply; a failure is one line and the thread is left as it was."""
        try:
            turn = self.agent.stream(text, self.thread_id, persona=self.pending_persona, greeting=self.greeting,
                                     attachments=self.attachments)  # fmt: skip
        except AgentmmError as exc:
            self.terminal.error(str(exc))
            return None
        outcome = self._play(turn)
        if outcome.error is None:
            self.pending_persona = None
            self.attachments = []
        elif isinstance(outcome.error, TurnStoppedError):  # stopped on purpose: not sent again
            self.attachments = []
        return outcome

    def _play(self, turn: ChatTurn) -> Outcome:
        """Show ``turn`` as it streams; its error, if any, as one line (the turn itself restored
        the thread)."""
        outcome = run_turn(turn, self.terminal, loading=self._loading, show_observations=self._show_observations,
                           show_tool_calls=self._show_tool_calls, yes=self.yes,
                           perceiving=self._perceiving(turn))  # fmt: skip
        self.ended_by = outcome.ended_by
        if outcome.hung_up:
            return outcome  # nobody to show anything to: the turn is saved, the chat ends
        if outcome.error is not None:
            error = outcome.error
            if isinstance(error, TurnStoppedError):  # Ctrl-C while perceiving: the turn was rolled back
                self.terminal.info(f"[{error}: nothing was sent or remembered]")
            elif isinstance(error, AgentmmError):
                self.terminal.error(str(error))
            elif isinstance(error, KeyboardInterrupt):
                self.terminal.error("stopped")
            else:
                self.terminal.error(f"the turn failed: {type(error).__name__}: {error}")
            return outcome
        self.last_trace = outcome.result.trace
        self.persona = outcome.result.trace.get("persona") or self.persona
        return outcome

    def _perceiving(self, turn: ChatTurn) -> str:
        """What the spinner says while ``turn``'s attachments are perceived ("" for none)."""
        context = getattr(turn, "context", None)  # a test's fake turn may have none
        return perceiving_text(self.agent, getattr(context, "attachments", None) or [])

    # ------------------------------------------------------------------ start-up

    def _open_and_warm_up(self) -> None:
        # Opened here, so a memory store held by another process is said at once.
        _ = self.agent.checkpointer, self.agent.store
        if self.terminal.interactive:  # load the models while the user types the first message
            self._warm_up(self.agent)

    def _warm_up(self, agent: ChatAgent) -> None:
        def work() -> None:
            with contextlib.suppress(Exception):  # the first turn reports it, with its one line
                agent.warm_up()

        self._warming = threading.Thread(target=work, daemon=True, name="agentmm-warm-up")
        self._warming.start()

    def _loading(self) -> bool:
        return self._warming is not None and self._warming.is_alive()

    def _header(self) -> None:
        """Who the chat is with, and the keys; for a person at a terminal (plain on TERM=dumb,
        whose plain line input has no new-line key), not for a script piped in."""
        if not self.terminal.interactive:
            return
        who = f" · persona [bold]{_escape(self.persona)}[/]" if self.persona else ""
        new_line = " · Alt-Enter or Ctrl-J for a new line" if self.terminal.editor else ""
        self.terminal.note(
            f"[bold]agentmm[/] · model {_escape(self.agent.settings.model)}{who} · thread {self.thread_id}\n"
            f"[dim]/help for commands{new_line} · Ctrl-C stops a reply · Ctrl-D leaves[/]"
        )

    def toolbar(self, width: int | None = None) -> str:
        """The status line under the prompt: model, persona, thread, context use, attachments.
        Wider than the terminal (``width``: its columns), whole fields give way, the thread id
        first (the header and /threads show it), then the persona, the context use and the
        attachments: the line editor cut it mid-number ('context 259/102' for 259/1024). Fitting
        is by terminal cells, not characters: a CJK persona name or an emoji takes two a character."""
        from rich.cells import cell_len

        bits = [f" {self.agent.settings.model}" + (" (loading…)" if self._loading() else "")]
        if self.persona:
            bits.append(self.persona)
        bits.append(f"thread {self.thread_id}")
        n_ctx = self.agent.settings.n_ctx
        if self.last_trace:
            usage, budget = self.last_trace.get("usage") or {}, self.last_trace.get("budget") or {}
            n_ctx = int(budget.get("n_ctx") or n_ctx)
            prompt = max(int(usage.get("prompt_tokens", 0)), int(budget.get("prompt_tokens", 0)))
            used = prompt + int(usage.get("completion_tokens", 0))
            bits.append(f"context {used}/{n_ctx} ({100 * used // max(n_ctx, 1)}%)")
        else:
            bits.append(f"context 0/{n_ctx}")
        if self.attachments:
            bits.append("attached: " + ", ".join(p.name for p in self.attachments))
        columns = width if width is not None else shutil.get_terminal_size().columns
        context = next(bit for bit in bits if bit.startswith("context "))
        attached = bits[-1] if self.attachments else None
        for field in (f"thread {self.thread_id}", self.persona, context, attached):
            if cell_len(" · ".join(bits)) <= columns:
                break
            if field and field in bits[1:]:
                bits.remove(field)
        return " · ".join(bits)

    def _completer(self) -> Any:
        if not self.terminal.editor:
            return None
        from agentmm.repl.completion import make_completer

        return make_completer({"persona": self._persona_names, "thread": self._thread_ids,
                               "model": self._model_names})  # fmt: skip

    def _persona_names(self) -> list[str]:
        return self.agent.personas.names()

    def _thread_ids(self) -> list[str]:
        from agentmm.threads import thread_ids

        return thread_ids(self.agent.checkpointer)

    def _model_names(self) -> list[str]:
        from agentmm.models import SHIPPED_MODELS

        return list(SHIPPED_MODELS)

    def _thread_values(self) -> dict[str, Any]:
        return saved_values(self.agent, self.thread_id)

    def _print_greeting(self) -> None:
        """Show the greeting that will open the thread (the first turn stores the same text)."""
        if not self.persona or self._thread_values().get("messages"):
            return
        from agentmm.personas import greeting

        words = greeting(self.agent.personas.get(self.persona), self.greeting, self.agent.settings.user_name,
                         seed=self.thread_id, now=datetime.now(UTC))  # fmt: skip
        if words:
            self.terminal.show_markdown(words)

    def _show_recent(self, keep: int = 2) -> None:
        messages = self._thread_values().get("messages", [])
        if not messages:
            return
        if len(messages) > keep:
            self.terminal.info(f"… {len(messages) - keep} earlier messages (/save FILE writes them all)")
        for m in messages[-keep:]:
            who = self.agent.settings.user_name if m.type == "human" else (self.persona or "assistant")
            mark = " [interrupted]" if m.response_metadata.get("interrupted") else ""
            self.terminal.info(f"{who}> {m.text}{mark}")

    def _show_observations(self, observations: list[dict[str, Any]]) -> None:
        say = {"error": self.terminal.error, "note": self.terminal.warn, "info": self.terminal.info}
        for o in observations:
            say[note_level(o)](user_note(o)[1])
            if note := file_note(o):
                self.terminal.warn(note)

    def _show_tool_calls(self, calls: list[dict[str, Any]]) -> None:
        for call in shown_calls(calls):
            failed, text = tool_note(call)
            (self.terminal.error if failed else self.terminal.info)(text)

    # ------------------------------------------------------------------ commands

    def cmd_help(self, arg: str) -> None:
        from rich.table import Table

        table = Table(show_header=False, show_edge=False, pad_edge=False, box=None)
        table.add_column(style="bold")
        table.add_column()
        for c in COMMANDS:
            table.add_row(f"/{c.name} {c.args}".rstrip(), c.help)
        table.add_row("", "")
        table.add_row("keys", "Enter sends · Alt-Enter or Ctrl-J: new line · Tab completes · Up/Ctrl-R: history")
        table.add_row(
            "", "Ctrl-C stops a reply (kept, marked interrupted) · Ctrl-D leaves · Ctrl-Z suspends · //text sends /text"
        )
        self.terminal.show(table)

    def cmd_persona(self, arg: str) -> None:
        if not arg:
            names = self.agent.personas.names()
            current = self.persona or "none"
            self.terminal.show(f"playing: {current}\npersonas: " + ", ".join(names))
            return
        chosen = self.agent.personas.resolve(arg)  # as chat -p reads it
        self._follow_persona_model(chosen)  # first: a model that cannot load leaves the persona too
        self.pending_persona = self.persona = chosen.name
        if self._thread_values().get("messages"):
            self.terminal.info(f"{chosen.name} plays from your next message on")
        else:
            self.terminal.info(f"playing {chosen.name}")
            self._print_greeting()

    def cmd_greeting(self, arg: str) -> None:
        if not self.persona:
            raise AgentmmError("no persona: /persona NAME first")
        persona = self.agent.personas.get(self.persona)
        if not arg:
            from agentmm.personas import greeting

            for i in range(len(persona.greetings)):  # as the thread would open: macros filled
                words = greeting(persona, i, self.agent.settings.user_name, seed=self.thread_id, now=datetime.now(UTC))
                self.terminal.show(plain(f"[{i}] {' '.join(words.split())[:160]}"))
            if not persona.greetings:
                self.terminal.show(f"{persona.name} has no greetings")
            return
        n = index_arg(arg)
        if n is None:
            raise AgentmmError(f"/greeting takes a number, 0 to {max(len(persona.greetings) - 1, 0)}")
        if not persona.greetings:
            raise AgentmmError(f"{persona.name} has no greetings: a new thread starts with your message")
        if self._thread_values().get("messages"):
            raise AgentmmError("a greeting opens a thread: /new first, then /greeting N")
        if n >= max(len(persona.greetings), 1):
            raise AgentmmError(f"{persona.name} has {len(persona.greetings)} greetings (0 to "
                               f"{max(len(persona.greetings) - 1, 0)})")  # fmt: skip
        self.greeting = n
        self.pending_persona = self.persona
        self._print_greeting()

    def _attach(self, arg: str, kind: str) -> None:
        if not arg:
            raise AgentmmError(f"/{kind} needs a file: /{kind} PATH")
        path = path_arg(arg)
        if not path.is_file():
            raise AgentmmError(f"{shown_path(path)}: {'not a file' if path.exists() else 'no such file'}")
        check_attachment_kind(path, self.agent.attachment_kind(path), kind, "/")
        if any(path.resolve() == attached.resolve() for attached in self.attachments):
            self.terminal.info(f"{shown_path(path.name)} is attached already: it goes with your next message")
            return
        self.attachments.append(path)
        self.terminal.info(f"attached {shown_path(path.name)}: it goes with your next message")

    def cmd_image(self, arg: str) -> None:
        self._attach(arg, "image")

    def cmd_audio(self, arg: str) -> None:
        self._attach(arg, "audio")

    def _store(self) -> Any:
        store = self.agent.store
        if store is None:
            raise AgentmmError("long-term memory is off (the memory setting, or AGENTMM_MEMORY=false)")
        return store

    def cmd_memory(self, arg: str) -> None:
        from rich.table import Table

        store = self._store()
        user = self.agent.settings.user_id
        if arg:
            from agentmm.memory.conversation import recall
            from agentmm.memory.manage import user_scopes

            rows = [r.as_trace() for r in recall(store, user_scopes(store, user, self.persona), arg, k=10,
                                                  min_similarity=0.0)]  # fmt: skip
        else:
            from agentmm.memory.manage import list_memories

            rows = list_memories(store, user, self.persona, limit=20)
        if not rows:
            self.terminal.show("no memories" + (" match" if arg else " yet"))
            return
        from agentmm.console_text import key_column

        ids = key_column("id", [printable(row["id"]) for row in rows])  # /forget takes it whole
        table = Table(ids, "when", "text", *(["score"] if arg else []), show_edge=False, pad_edge=False)
        for row in rows:
            value = row.get("value", row)
            text = value.get("content") or row.get("text", "")  # a search row holds the indexed text
            cells = [plain(row["id"]), str(value.get("when", ""))[:16], plain(" ".join(str(text).split())[:80])]
            if arg:
                cells.append(plain(f"{row.get('score', 0):.4f}"))
            table.add_row(*cells)
        self.terminal.show(table)

    def cmd_remember(self, arg: str) -> None:
        from agentmm.memory.manage import add_memory, remembered_line

        settings = self.agent.settings
        row = add_memory(self._store(), settings.user_id, self.persona, arg, speaker=settings.user_name,
                         max_tokens=settings.memory_max_tokens)  # fmt: skip
        self.terminal.info(remembered_line(row, settings.memory_max_tokens))

    def cmd_forget(self, arg: str) -> None:
        if not arg:
            raise AgentmmError("/forget needs a memory id (see /memory)")
        from agentmm.memory.manage import forget, forgot_line

        row = forget(self._store(), self.agent.settings.user_id, None, arg)
        self.terminal.info(forgot_line(row))

    def cmd_why(self, arg: str) -> None:
        trace = self.last_trace or self._thread_values().get("trace")
        if not trace:
            raise AgentmmError("no turn yet in this thread: /why explains the last reply")
        from agentmm.repl.why import render_trace

        self.terminal.show(render_trace(trace))

    def cmd_threads(self, arg: str) -> None:
        from rich.table import Table

        from agentmm.threads import list_threads

        threads = list_threads(self.agent.checkpointer)
        if not threads:
            self.terminal.show("no saved threads yet")
            return
        from agentmm.console_text import key_column

        shown = threads[:30]
        ids = key_column("thread", [printable(t.thread_id) for t in shown])  # /resume takes it: never cut
        table = Table("", ids, "turns", "updated", "first message", show_edge=False, pad_edge=False)
        for t in shown:
            mark = "*" if t.thread_id == self.thread_id else ""
            title = plain(t.title)
            title.no_wrap, title.overflow = True, "ellipsis"  # one line a thread: the title gives way
            table.add_row(mark, plain(t.thread_id), str(t.turns), t.updated_at, title)
        self.terminal.show(table)

    def cmd_resume(self, arg: str) -> None:
        if not arg:
            raise AgentmmError("/resume needs a thread id (see /threads)")
        from agentmm.errors import Hint
        from agentmm.threads import match_thread_id

        self._switch_thread(match_thread_id(self._thread_ids(), arg, see=Hint(cli="see /threads")), resumed=True)
        self.terminal.info(f"resumed thread {self.thread_id}" + (f" · persona {self.persona}" if self.persona else ""))
        self._show_recent()

    def cmd_new(self, arg: str) -> None:
        from agentmm.threads import new_thread_id

        self._switch_thread(new_thread_id(), resumed=False)
        self.terminal.info(f"new thread {self.thread_id}" + (f" · persona {self.persona}" if self.persona else ""))
        self._print_greeting()

    def _switch_thread(self, thread_id: str, *, resumed: bool) -> None:
        self.thread_id = thread_id
        self.last_trace = None
        self.attachments = []
        self.greeting = 0
        if resumed:
            self.pending_persona = None
            self.persona = thread_persona(self.agent, self.thread_id)
        else:
            self.pending_persona = self.persona

    def cmd_undo(self, arg: str) -> None:
        try:
            undone = self.agent.undo(self.thread_id)
        except ThreadNotFoundError:  # this session's thread, not saved until its first message
            raise NothingToUndoError("nothing to undo in this thread") from None
        self.last_trace = None
        forgot = f", forgot {len(undone.memories_forgotten)} memories" if undone.memories_forgotten else ""
        self.terminal.info(
            f"undone: {_said(undone.text, undone.attachments)} ({undone.messages_removed} messages{forgot})"
        )

    def cmd_retry(self, arg: str) -> None:
        try:
            turn = self.agent.retry(self.thread_id)
        except ThreadNotFoundError:
            raise NothingToUndoError("nothing to retry in this thread") from None
        self.last_trace = None
        self.terminal.info(f"retrying: {_said(turn.text, turn.context.attachments)}")
        self._play(turn)

    def cmd_save(self, arg: str) -> None:
        if not arg:
            raise AgentmmError("/save needs a file name ending in .md or .json")
        from agentmm.repl.transcript import format_of, save, transcript

        path = path_arg(arg)
        format_of(path)
        values = self._thread_values()
        if not values.get("messages"):
            raise AgentmmError("nothing to save yet: the thread is empty")
        doc = transcript(self.thread_id, values, model=self.agent.settings.model,
                         user_name=self.agent.settings.user_name)  # fmt: skip
        fmt = save(path, doc)
        self.terminal.info(f"saved {len(doc['messages'])} messages to {shown_path(path)} ({fmt})")

    def cmd_model(self, arg: str) -> None:
        settings = self.agent.settings
        if not arg:
            self.terminal.show(
                f"model {settings.model} · n_ctx {settings.n_ctx} · max_tokens {settings.max_tokens} · "
                f"temperature {settings.temperature} · gpu layers {settings.n_gpu_layers}"
                + (" (loading…)" if self._loading() else "")
            )
            return
        self._switch_model(settings.updated(model=arg))
        self.terminal.info(f"model {arg}: loading in the background; this thread goes on with it")

    def _follow_persona_model(self, persona: Any) -> None:
        """A persona switched to runs on its own model where it names one, and the one the chat
        was set up with where it does not; unless the user chose the model (flag, environment,
        /model), which then stays."""
        settings = self.agent.settings
        wanted = self.persona_model(settings, persona) or self.agent.configured_model
        if wanted == settings.model:
            return
        self._switch_model(settings.updated(origin="persona", model=wanted), configured=self.agent.configured_model)
        self.terminal.info(f"model {wanted} for {persona.name}: loading in the background")

    def _switch_model(self, settings: Settings, configured: str | None = None) -> None:
        """Go on with another agent on ``settings.model``, sharing the thread database and memory."""
        agent = type(self.agent)(settings, checkpointer=self.agent.checkpointer, store=self.agent.store)
        _ = agent.model  # resolves the name: a bad one is one line, and the old model stays
        if configured is not None:
            agent.configured_model = configured
        previous, self.agent = self.agent, agent
        if previous is not self.owner:
            # An agent /model made owns only its model and what its turns opened (the thread
            # database and the memory store are the first agent's, passed in): free them now.
            previous.close()
        from agentmm.doctor import missing_template

        if (why := missing_template(agent.model)) is not None:  # as the chat's start says it
            self.terminal.warn(f"{settings.model}: {why}")
        self._warm_up(agent)


def _escape(text: str) -> str:
    """A name shown in a line of rich markup: its brackets are text (``[v2]`` vanished)."""
    from rich.markup import escape

    return escape(printable(text))


class _EndingSignal(Exception):
    """SIGTERM or SIGHUP while a plain read (``input``) waits for a line: it would wait on after
    the handler returned, so the handler raises this, and ``run`` ends for the signal."""


def _ignore(signum: int, frame: Any) -> None:
    """SIGINT outside a reply, while the editor is not reading: nothing to stop."""


def _clip(text: str, width: int = 60) -> str:
    return one_line(text, width)


def perceiving_text(agent: ChatAgent, attachments: Sequence[str | Path]) -> str:
    """What a spinner says while ``attachments`` are perceived ("transcribing note.wav…"; ""
    for none): the chat's and ``chat -m``'s alike."""
    verbs = {"audio": "transcribing", "image": "looking at"}
    doing = []
    for path in map(Path, attachments):
        try:
            kind = agent.attachment_kind(path)
        except (AgentmmError, OSError):  # perception says what is wrong with it, in its line
            kind = ""
        doing.append(f"{verbs.get(kind, 'reading')} {shown_path(path.name)}")
    return ", ".join(doing) + "…" if doing else ""


def _said(text: str, attachments: list[str]) -> str:
    """A message as the chat shows it in one line: its words, else the files it sent."""
    return _clip(text) or ", ".join(Path(a).name for a in attachments)


def played_persona(agent: ChatAgent, chosen: str | None, thread_id: str | None) -> str | None:
    """The persona a chat plays: the one chosen (``-p``), else the thread's when it goes on
    with one, else the configured one for a new thread (``thread_id`` None)."""
    if chosen:
        return chosen
    return agent.settings.persona if thread_id is None else thread_persona(agent, thread_id)


def thread_persona(agent: ChatAgent, thread_id: str) -> str | None:
    """The persona a saved thread plays (None for none, or a thread not saved yet)."""
    return saved_values(agent, thread_id).get("persona") or None


def saved_values(agent: ChatAgent, thread_id: str) -> dict[str, Any]:
    """A thread's saved state ({} for one not saved yet: a new thread's first message saves it)."""
    from agentmm.threads import thread_exists, thread_values

    if not thread_exists(agent.checkpointer, thread_id):
        return {}
    return thread_values(agent.checkpointer, thread_id)[0]


def run_chat(agent: ChatAgent, thread_id: str | None, persona: str | None, greeting: int, *,
             persona_model: PersonaModel, terminal: Terminal | None = None, yes: bool = False) -> None:  # fmt: skip
    """The interactive chat: a line editor on a terminal, plain lines when piped; ``yes``: tool
    calls that ask first are allowed without asking (``--yes``)."""
    history = Path(agent.settings.data_dir) / HISTORY_FILE
    ChatSession(agent, terminal or Terminal.detect(history), thread_id, persona=persona, greeting=greeting,
                persona_model=persona_model, yes=yes).run()  # fmt: skip
