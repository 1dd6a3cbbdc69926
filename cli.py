"""The ``agentmm`` command: parse, call the library, render. Nothing heavy at import time."""

from __future__ import annotations

import errno
import io
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional, TextIO

import typer
from typer.core import TyperGroup

from agentmm.console_text import one_line, plain, printable, shown_path
from agentmm.errors import AgentmmError, TurnStoppedError

if TYPE_CHECKING:
    from agentmm.graphs.agent import Agent
    from agentmm.settings import Settings


class UsageLineError(AgentmmError):
    """A command line click cannot read (an unknown command or option, a missing argument, a
    value of the wrong type): one line and exit 2, as the project's other user errors are,
    where typer drew a box of four or five lines."""


class _OneLineUsageErrors(TyperGroup):
    """The top command group, whose parse and whose subcommands' parses (inside ``invoke``)
    raise ``UsageLineError`` for click's usage errors, which ``main`` prints as one line.
    The error is matched by name: typer runs its own copy of click (``typer._click``)."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _usage_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with _usage_line():
            return super().invoke(ctx)


@contextmanager
def _usage_line() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        names = {c.__name__ for c in type(exc).__mro__}
        if "UsageError" not in names or "NoArgsIsHelpError" in names:  # no arguments: the help, as before
            raise
        ctx = getattr(exc, "ctx", None)
        command = " ".join(["agentmm", *_command_names(ctx)[1:]])
        raise UsageLineError(f"{' '.join(exc.format_message().split())} (see {command} --help)") from None


def _command_names(ctx: Any) -> list[str]:
    """The words of the command ``ctx`` parses, the program's first (whatever it ran as)."""
    names: list[str] = []
    while ctx is not None:
        names.insert(0, ctx.info_name or "")
        ctx = ctx.parent
    return names or ["agentmm"]


app = typer.Typer(
    cls=_OneLineUsageErrors,
    name="agentmm",
    help="Role-play and chat with a local multimodal LLM. Offline by default, every reply explained.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
threads_app = typer.Typer(help="Saved conversations.", no_args_is_help=True)
models_app = typer.Typer(help="Chat models: shipped, cached and local.", no_args_is_help=True)
config_app = typer.Typer(help="Settings and where they come from.", no_args_is_help=True)
personas_app = typer.Typer(help="Personas and character cards (V2/V3, JSON or PNG).", no_args_is_help=True)
memory_app = typer.Typer(help="Long-term memory: inspect, search, edit, export.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluations.", no_args_is_help=True)
images_app = typer.Typer(help="Your image folder, searchable by description (CLIP).", no_args_is_help=True)
tools_app = typer.Typer(help="Tools the model can call: built-ins, plugins, your tools folder.", no_args_is_help=True)
graph_app = typer.Typer(help="The turn graph.", no_args_is_help=True)
app.add_typer(threads_app, name="threads")
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(personas_app, name="personas")
app.add_typer(memory_app, name="memory")
app.add_typer(eval_app, name="eval")
app.add_typer(images_app, name="images")
app.add_typer(tools_app, name="tools")
app.add_typer(graph_app, name="graph")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object (see README for its keys).")]


class Globals:
    config_file: Path | None = None
    data_dir: Path | None = None


@app.callback()
def _globals(
    config: Annotated[Optional[Path], typer.Option("--config", help="Config file (default: user config dir).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Where threads and memory live.")] = None,
) -> None:
    Globals.config_file = config
    Globals.data_dir = data_dir


def _settings(**flags: Any) -> Settings:
    from agentmm.settings import load_settings

    named = Globals.config_file
    if named is not None and not named.expanduser().exists():  # a typo in --config read as "no settings"
        raise AgentmmError(f"config file {named} does not exist (--config names a file to read)")
    return load_settings(named, data_dir=Globals.data_dir, **flags)


def _using_cache(settings: Settings) -> Settings:
    """``settings`` for a command that uses the cache dir (the native probe's verdicts, the
    embedder's ONNX export, eval answers), once that dir is known usable: an unusable one made
    every start redo that work, about 5x slower, without a word. One line, as for the data dir."""
    from agentmm.doctor import cache_dir_problem
    from agentmm.errors import SettingsError

    if (problem := cache_dir_problem(settings.cache_dir)) is not None:
        raise SettingsError(f"{problem} (the cache_dir setting)")
    return settings


def _print_json(data: Any) -> None:
    (_JSON_OUT.get() or sys.stdout).write(json.dumps(data, ensure_ascii=False) + "\n")


# Where --json's object goes when ``main`` has sent everything else on stdout to stderr.
_JSON_OUT: ContextVar[TextIO | None] = ContextVar("json_out", default=None)


def _wants_json(args: list[str]) -> bool:
    """``--json`` given as the command's option, as click reads the command line: not the value
    of the option before it (``-m --json``, ``--system --json``: click takes the next token as
    an option's value even when it starts with ``--``). Reading it otherwise sent the reply of
    ``chat -m hi --system --json`` to stderr and left stdout empty."""
    if "--json" not in args:
        return False  # the common case, without building the command tree a second time
    from typer.core import TyperGroup

    command: Any = typer.main.get_command(app)
    name: str | None = "agentmm"
    rest, parent = list(args), None
    try:  # typer's own click parses, as the run will: each group resolves its subcommand
        while isinstance(command, TyperGroup):
            settings = {**command.context_settings, "resilient_parsing": True}  # as make_context does
            ctx = command.context_class(command, info_name=name, parent=parent, **settings)
            with ctx.scope(cleanup=False):
                # The plain command's parse (TyperGroup's base), so what the group's options do
                # not take comes back whole, its subcommand first: TyperGroup's own keeps that
                # name only in the context's private _protected_args.
                rest = super(TyperGroup, command).parse_args(ctx, rest)
            if _asks_help(ctx):
                return False
            name, command, rest = command.resolve_command(ctx, rest)
            if command is None:
                return False
            parent = ctx
        ctx = command.make_context(name, rest, parent=parent, resilient_parsing=True)
        return bool(ctx.params.get("as_json")) and not _asks_help(ctx)
    except Exception:  # a line click cannot read: the run says why on stderr, and stdout stays empty
        return True


def _asks_help(ctx: Any) -> bool:
    """Whether ``--help`` was given to the command ``ctx`` parsed: it prints the help and exits,
    running nothing, so it prints on stdout, ``--json`` or not (held back for the object, the
    help of ``chat --help --json`` went to stderr). Read by name: typer runs its own copy of
    click (``typer._click``), whose ``ParameterSource`` is not click's."""
    return getattr(ctx.get_parameter_source("help"), "name", None) == "COMMANDLINE"


# --------------------------------------------------------------------------- chat


@app.command()
def chat(
    message: Annotated[Optional[str], typer.Option("-m", "--message", help="Say this, print the reply, exit.")] = None,
    thread: Annotated[Optional[str], typer.Option("--thread", "-t", help="Continue this saved thread.")] = None,
    model: Annotated[
        Optional[str], typer.Option("--model", help="Shipped name, .gguf path or owner/repo/file.gguf.")
    ] = None,
    mmproj: Annotated[
        Optional[str], typer.Option("--mmproj", help="The model's image projector: it then sees --image itself.")
    ] = None,
    model_url: Annotated[
        Optional[str], typer.Option("--model-url", help="An OpenAI-compatible model server (http://host:port/v1).")
    ] = None,
    as_json: JsonFlag = False,
    n_ctx: Annotated[Optional[int], typer.Option("--n-ctx", help="Context window in tokens.")] = None,
    gpu_layers: Annotated[Optional[str], typer.Option("--gpu-layers", help="'auto', 0, N or -1 (all).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Longest reply in tokens.")] = None,
    temperature: Annotated[Optional[float], typer.Option("--temperature")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    system: Annotated[Optional[str], typer.Option("--system", help="System prompt for a new thread.")] = None,
    persona: Annotated[Optional[str], typer.Option("--persona", "-p", help="Play this persona.")] = None,
    greeting: Annotated[int, typer.Option("--greeting", help="Greeting that opens a new thread (0: main).")] = 0,
    image: Annotated[Optional[list[Path]], typer.Option("--image", help="Attach an image (repeatable).")] = None,
    audio: Annotated[Optional[list[Path]], typer.Option("--audio", help="Attach a voice note (repeatable).")] = None,
    tool: Annotated[
        Optional[list[str]], typer.Option("--tool", help="Let the model call this tool (repeatable; see: tools list).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Allow tool calls that ask first, without asking.")] = False,
) -> None:
    """Chat with the model: interactive, or one turn with -m."""
    from agentmm.startup_gc import import_frozen, unfreeze

    # LangGraph's and LangChain's objects out of the cyclic collector's way (~0.3 s of CPU a start).
    agent_class = import_frozen(_agent_class)
    try:
        _quiet_if_closed()

        settings = _using_cache(_settings(
            model=model, mmproj=mmproj, model_url=model_url, n_ctx=n_ctx, n_gpu_layers=gpu_layers,
            max_tokens=max_tokens, temperature=temperature, seed=seed, system_prompt=system, persona=persona,
        ))  # fmt: skip
        if tool:
            settings = settings.model_copy(update={"tools": [*settings.tools, *tool]})
        _check_attachments(image or [], audio or [])
        with agent_class(settings) as agent:  # closed on the way out: the model freed, the memory store shut cleanly
            _chat_with(agent, message, thread, as_json, persona, greeting, [*(image or []), *(audio or [])], yes)
    finally:
        unfreeze()


def _agent_class() -> type[Agent]:
    from agentmm.graphs.agent import Agent

    return Agent


def _check_attachments(images: list[Path], recordings: list[Path]) -> None:
    """Each ``--image`` a picture, each ``--audio`` a recording, by its bytes, before a model
    loads, as ``/image`` and ``/audio`` check them: a missing file is one line and no turn
    (``chat --audio missing.wav`` ran a whole turn on an empty message and exited 0), and so is
    a picture given as ``--audio`` (or audio as ``--image``), with the option that fits.

    A bad file is not refused here: empty, a ZIP or text named ``.png``, or bytes no model here
    perceives (a video) go to the turn, where perception says what is wrong in one line and the
    turn goes on, as for a truncated JPEG or a decompression bomb (README). They refused the
    whole turn with exit 2 while those two did not."""
    from agentmm.graphs.agent import Agent
    from agentmm.repl.session import check_attachment_kind
    from agentmm.tools.errors import EmptyMediaError, UnsupportedMediaError

    for kind, paths in (("image", images), ("audio", recordings)):
        for path in paths:
            try:
                found = Agent.attachment_kind(path)
            except (EmptyMediaError, UnsupportedMediaError):
                continue
            if found in ("image", "audio"):
                check_attachment_kind(path, found, kind, "--")


def _chat_with(
    agent: Agent, message: str | None, thread: str | None, as_json: bool, persona: str | None, greeting: int,
    attachments: list[Path], yes: bool,
) -> None:  # fmt: skip
    from agentmm.repl.session import played_persona
    from agentmm.threads import thread_exists

    _ = agent.tools  # an unknown tool name fails here, before anything is loaded or saved
    if thread is not None and not thread_exists(agent.checkpointer, thread):
        from agentmm.errors import ThreadNotFoundError

        raise ThreadNotFoundError(f"unknown thread {thread!r} (see: agentmm threads list; omit --thread to start one)")
    # Check the persona and greeting before anything is loaded or saved; -p reads a name as /persona does.
    chosen = agent.personas.resolve(persona).name if persona else None
    if attachments and message is None:
        message = ""  # a voice note or a picture alone is a turn
    if message is None and as_json:
        raise typer.BadParameter("--json needs -m TEXT", param_hint="--json")
    played = played_persona(agent, chosen, thread)
    _check_new_thread_options(agent, thread, played, greeting)
    _play_on_persona_model(agent, played, as_json)
    # A model that would crash this process (a native fault) is said in one line before anyone types.
    agent.check_model()
    _check_mmproj(agent)
    _warn_without_chat_template(agent)
    if message is not None:
        with _models_loading_beside(agent):
            _one_turn(agent, message, thread, as_json, chosen, greeting, attachments, yes)
    else:
        _repl(agent, thread, chosen, greeting, yes)


@contextmanager
def _models_loading_beside(agent: Agent) -> Iterator[None]:
    """Load the chat model, then the memory's embedder, on a thread of their own while the turn
    opens the memory store, as the interactive chat warms up while the user types: ``-m`` did
    them one after the other (llama.cpp's load and most of onnxruntime's run outside the GIL,
    Chroma's start-up is Python). The turn waits for the same loads where it needs them
    (``Runtime.get``, the embedder's own lock) and reports a failed one; the thread is joined
    before the agent closes, so nothing is left loading at exit."""
    loads = [load for load in (getattr(agent.model, "load", None), _memory_embedder_load(agent)) if load is not None]
    if not loads:  # a model server or a model passed in, memory off
        yield
        return
    import threading

    def work() -> None:
        for load in loads:
            with suppress(Exception):  # the turn loads it again and says why in one line
                load()

    loading = threading.Thread(target=work, daemon=True, name="agentmm-model-load")
    loading.start()
    try:
        yield
    finally:
        loading.join()


def _memory_embedder_load(agent: Agent) -> Callable[[], object] | None:
    """The load of the embedder the agent's memory store embeds with: the configured one, made
    in the agent's runtime, which ``memory.open_store`` shares (None with memory off)."""
    if not agent.settings.memory:
        return None
    from agentmm.memory.embeddings import SentenceTransformerEmbeddings

    return SentenceTransformerEmbeddings.from_settings(agent.settings, runtime=agent.runtime).load


def _check_mmproj(agent: Agent) -> None:
    """The image projector (``--mmproj``) is a GGUF file before a turn begins: it was read only
    when the model loaded, after the chat had said ``[beach.jpg: sent to smollm2 (native)]``."""
    from agentmm.gguf import read_gguf

    mmproj = getattr(agent.model, "mmproj_path", None)
    if mmproj:
        read_gguf(Path(mmproj))


def _check_new_thread_options(agent: Agent, thread: str | None, played: str | None, greeting: int) -> None:
    """--greeting and --system shape a new thread: on one that has begun, or with no persona to
    greet, they would be ignored without a word."""
    if greeting and thread is not None:
        raise AgentmmError(f"--greeting opens a new thread; thread {thread} has begun (leave --thread out)")
    if greeting and played is None:
        raise AgentmmError("--greeting picks a persona's greeting: add -p NAME")
    if thread is not None and agent.settings.sources.get("system_prompt") == "flag":
        raise AgentmmError(f"--system sets a new thread's system prompt; thread {thread} keeps its own")


def _play_on_persona_model(agent: Agent, played: str | None, as_json: bool) -> None:
    """The persona this run plays runs on its own model where it names one and the user named none."""
    if (model := agent.use_persona_model(played)) is not None and not as_json:
        sys.stderr.write(f"{played} plays on its own model: {model} (--model names another)\n")


def _warn_without_chat_template(agent: Agent) -> None:
    """A GGUF without its chat template chats in llama-cpp-python's fallback format and replies
    badly: doctor's check says so as a problem, and the chat's start says it in one line on
    stderr (``--json``'s object has no key for it and stays as it is)."""
    from agentmm.doctor import missing_template

    if (why := missing_template(agent.model)) is not None:
        sys.stderr.write(f"agentmm: warning: {agent.settings.model}: {why}\n")


def _one_turn(
    agent: Agent, message: str, thread: str | None, as_json: bool, persona: str | None, greeting: int,
    attachments: list[Path], yes: bool = False,
) -> None:  # fmt: skip
    turn = agent.stream(message, thread, persona=persona, greeting=greeting, attachments=attachments)
    turn.on_tool_calls = _show_tool_calls
    turn.on_approval = _approver(yes)
    from agentmm.console_text import PrintableStream

    shown = PrintableStream()  # a reply's escape sequences never reach the terminal (a title, erased lines)
    ending = _Ending()
    with _cancel_on_ctrl_c(turn.cancel, ending), _perceiving_spinner(agent, attachments, show=not as_json) as perceived:

        def observed(observations: list[dict[str, Any]]) -> None:
            if ending.hung_up:  # the terminal is gone: nothing can be shown on it
                return
            perceived()
            _show_observations(observations)

        turn.on_observations = observed
        try:
            for text in turn:
                perceived()
                if not as_json and not ending.hung_up:
                    sys.stdout.write(shown.feed(text))
                    sys.stdout.flush()
        except TurnStoppedError as stopped:  # Ctrl-C or a signal while the attachments were perceived
            _stopped_before_the_reply(stopped, ending)
    with suppress(OSError) if ending.hung_up else nullcontext():  # a terminal closed: nowhere to say it
        if as_json:
            _print_json(turn.result.to_json())
        else:
            sys.stdout.write(shown.flush() + "\n")
            if ending.by is None:  # else the line below names the thread
                sys.stderr.write(f"[thread {turn.thread_id}]\n")
    if ending.by is not None:
        if not ending.hung_up:
            sys.stderr.write(f"agentmm: terminated: what was said so far is saved in thread {turn.thread_id}\n")
        raise SystemExit(128 + ending.by)


def _stopped_before_the_reply(stopped: Exception, ending: _Ending) -> NoReturn:
    """Say (unless the terminal is gone) that a turn stopped while its attachments were perceived
    left nothing, and exit as the stop asked: 130 for Ctrl-C, 128 + the signal for SIGTERM or
    SIGHUP. It was an error line and exit 1, though nothing had gone wrong."""
    with suppress(OSError):
        if not ending.hung_up:
            sys.stderr.write(f"[{stopped}: nothing was sent or remembered]\n")
    raise SystemExit(128 + (ending.by if ending.by is not None else signal.SIGINT))


@contextmanager
def _perceiving_spinner(agent: Agent, attachments: list[Path], show: bool) -> Iterator[Callable[[], None]]:
    """The chat's spinner ("transcribing note.wav…") on stderr while the attachments are
    perceived, where someone watches: a long voice note took minutes with nothing shown. It
    yields what stops it (the observations came, or the reply began)."""
    if not show or not attachments or not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.console import Console
    from rich.text import Text

    from agentmm.repl.session import perceiving_text

    status = Console(stderr=True).status(Text(perceiving_text(agent, attachments)), spinner="dots")
    status.start()
    try:
        yield status.stop
    finally:
        status.stop()


def _approver(yes: bool) -> Callable[[dict[str, Any]], bool]:
    """Tool calls that ask first: allowed with --yes, asked on a terminal, else denied."""

    from agentmm.console_text import printable
    from agentmm.repl.turns import describe_call

    def approve(request: dict[str, Any]) -> bool:
        # Written as the chat writes it (``roll_dice(notation='d6')``, a note), not as JSON.
        call = printable(describe_call(request))
        if yes:
            return True
        if not sys.stdin.isatty():
            sys.stderr.write(f"agentmm: note: denied tool call {call} (nobody to ask; pass --yes to allow)\n")
            return False
        return typer.confirm(f"\nAllow tool call {call}?", default=False, err=True)

    return approve


def _repl(agent: Agent, thread: str | None, persona: str | None, greeting: int, yes: bool = False) -> None:
    """The interactive chat lives in ``agentmm.repl``: a line editor on a terminal, plain lines when
    piped; ``yes`` allows tool calls that ask first, as it does for ``-m``."""
    from agentmm.graphs.chat import persona_model
    from agentmm.repl.session import run_chat

    run_chat(agent, thread, persona, greeting, persona_model=persona_model, yes=yes)


def _show_observations(observations: list[dict[str, Any]]) -> None:
    """What perception made of the attachments, on stderr (stdout stays the reply)."""
    from agentmm.repl.terminal import file_note, note_level, user_note  # how the chat shows it too

    for o in observations:
        label = {"error": "agentmm: ", "note": "agentmm: note: "}.get(note_level(o), "")
        sys.stderr.write(f"{label}{printable(user_note(o)[1])}\n")
        if note := file_note(o):
            sys.stderr.write(f"agentmm: note: {note}\n")


def _show_tool_calls(calls: list[dict[str, Any]]) -> None:
    """What the tools the model called returned, on stderr (stdout stays the reply)."""
    from agentmm.repl.terminal import shown_calls, tool_note

    for call in shown_calls(calls):
        sys.stderr.write(tool_note(call)[1] + "\n")


@contextmanager
def _interrupted_says(what: str) -> Iterator[None]:
    """Ctrl-C in a long command (an import, an index, an eval) says in one line what it left,
    then exits 130 as before: it ended without a word, so one could not tell a stopped import
    from a finished one, or whether anything was written."""
    try:
        yield
    except KeyboardInterrupt:
        with suppress(OSError, ValueError):
            sys.stderr.write(f"agentmm: interrupted: {what}\n")
        raise


class _Ending:
    """A SIGTERM (a kill) or SIGHUP (the terminal closed) that came during ``chat -m``'s turn."""

    by: int | None = None

    @property
    def hung_up(self) -> bool:
        return self.by is not None and self.by == getattr(signal, "SIGHUP", None)


@contextmanager
def _cancel_on_ctrl_c(cancel: Callable[[], None], ending: _Ending | None = None) -> Iterator[None]:
    """First Ctrl-C stops the reply (kept, marked interrupted); a second one aborts. With
    ``ending``, SIGTERM and SIGHUP stop it as the first Ctrl-C does and are kept there: the
    caller ends the process once the turn is saved (they killed it mid-reply, the turn lost)."""
    pressed = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal pressed
        if pressed:
            raise KeyboardInterrupt
        pressed = True
        cancel()

    def on_ending(signum: int, frame: FrameType | None) -> None:
        if ending is not None:
            ending.by = signum
        cancel()

    previous = signal.signal(signal.SIGINT, handler)
    names = ("SIGTERM", "SIGHUP") if ending is not None else ()
    before = {number: signal.signal(number, on_ending) for name in names if (number := getattr(signal, name, None))}
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for number, handler_before in before.items():
            if handler_before is not None:
                signal.signal(number, handler_before)


# --------------------------------------------------------------------------- graph


def _stand_in_model() -> Any:
    """A chat model for a turn graph that runs no turn (drawn, or written to by threads import):
    loading the configured one would take seconds and memory for nothing."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    class StandIn(FakeListChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:  # built with the tools, never called
            return self

    return StandIn(responses=[""])


@graph_app.command("show")
def graph_show(
    format: Annotated[str, typer.Option("--format", "-f", help="ascii, mermaid or png.")] = "ascii",
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Write here (png: graph.png).")] = None,
) -> None:
    """Draw the turn graph as configured (LangGraph's own drawing); no model is loaded."""
    from agentmm.graphs.chat import build_graph

    if format not in ("ascii", "mermaid", "png"):
        raise typer.BadParameter("--format is ascii, mermaid or png", param_hint="--format")
    # The graph the Agent runs, built by the same builder from the same settings, with a
    # stand-in for the model, which drawing never calls.
    drawn = build_graph(_settings(), model=_stand_in_model()).get_graph()
    if format == "png":
        try:
            data = drawn.draw_mermaid_png()
        except Exception:  # LangGraph draws PNGs through the mermaid.ink web service
            raise AgentmmError("png drawing needs the mermaid.ink web service, which cannot be reached; "
                               "--format mermaid or ascii draw offline") from None  # fmt: skip
        _write_drawing(output or Path("graph.png"), data)
        return
    text = drawn.draw_ascii() if format == "ascii" else drawn.draw_mermaid()
    if output is not None:
        _write_drawing(output, text.encode("utf-8"))
    else:
        sys.stdout.write(text.rstrip("\n") + "\n")


def _write_drawing(path: Path, data: bytes) -> None:
    """Write ``-o``'s file, making its folder as ``personas export`` and ``memory export`` do; a
    folder named instead of a file, or a place that cannot be written, is one line."""
    from agentmm.fileio import atomic_write

    if path.is_dir():
        raise AgentmmError(f"-o {path} is a folder: name the file to write")
    if (file := next((p for p in path.parents if p.exists() and not p.is_dir()), None)) is not None:
        raise AgentmmError(f"-o {path}: {file} is a file, not a folder")
    atomic_write(path, data)
    sys.stdout.write(f"wrote {path}\n")


# --------------------------------------------------------------------------- serve


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes (each holds one agent).")] = 1,
    model: Annotated[Optional[str], typer.Option("--model", help="Model setting for every worker.")] = None,
    model_url: Annotated[
        Optional[str], typer.Option("--model-url", help="The model server every worker uses (http://host:port/v1).")
    ] = None,
    persona: Annotated[Optional[str], typer.Option("--persona", help="Persona new threads play.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level.")] = "info",
) -> None:
    """Serve the agent over HTTP: turns (JSON or server-sent events), threads, memory, personas
    (README: "HTTP API")."""
    _quiet_if_closed()  # a server's job is to serve: started with stdout closed, its access log goes nowhere
    given = (("model", model), ("model_url", model_url), ("persona", persona))
    flags = {name: value for name, value in given if value is not None}
    settings = _using_cache(_settings(**flags))  # a bad setting fails here, once, not in every worker
    _check_serving_installed()
    if workers > 1 and settings.memory and not (settings.store_url or settings.memory_url):
        raise AgentmmError(
            "several workers need a shared memory store: set store_url (Postgres) or memory_url (a Chroma "
            "server), or memory = false; the embedded store in the data dir is one process's"
        )
    # Each worker loads its settings as this process did: the same config file, data dir and flags.
    if Globals.config_file is not None:
        os.environ["AGENTMM_CONFIG"] = str(Globals.config_file)
    if Globals.data_dir is not None:
        os.environ["AGENTMM_DATA_DIR"] = str(Globals.data_dir)
    for name, value in flags.items():
        os.environ[f"AGENTMM_{name.upper()}"] = value
    import uvicorn

    uvicorn.run("agentmm.cli:serve_app", factory=True, host=host, port=port, workers=workers, log_level=log_level)


def _check_serving_installed() -> None:
    """The HTTP server's packages come with the fleet extra; without them, one line saying so."""
    import importlib.util

    missing = [name for name in ("starlette", "sse_starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise AgentmmError(f'agentmm serve needs {", ".join(missing)}: pip install "agentmm[fleet]"')


def serve_app() -> Any:
    """The ASGI app of one ``agentmm serve`` worker (uvicorn calls this in each worker)."""
    from agentmm.graphs.agent import Agent
    from agentmm.http_api import make_app

    return make_app(lambda: Agent(_settings()))


# --------------------------------------------------------------------------- threads


def _checkpointer() -> Any:
    from agentmm.threads import open_saver

    return open_saver(_settings())


@threads_app.command("list")
def threads_list(as_json: JsonFlag = False) -> None:
    """Saved threads, newest first."""
    from agentmm.threads import list_threads

    threads = list_threads(_checkpointer())
    if as_json:
        _print_json({"threads": [t.to_dict() for t in threads]})
        return
    from rich.table import Table

    from agentmm.console_text import key_column
    from agentmm.terminal_console import make_console

    # The id is typed back (--thread, threads show): never cut; the first message gives way.
    table = Table(key_column("thread", [printable(t.thread_id) for t in threads]), "turns", "updated", "first message")
    for t in threads:
        table.add_row(plain(t.thread_id), str(t.turns), t.updated_at, plain(t.title))
    make_console().print(table if threads else "no threads yet: agentmm chat starts one")


@threads_app.command("show")
def threads_show(thread_id: str, as_json: JsonFlag = False) -> None:
    """Every message of a thread (ID or a prefix only it starts with)."""
    from agentmm.threads import find_thread, thread_dict

    saver = _checkpointer()
    thread_id = find_thread(saver, thread_id)
    shown = thread_dict(saver, thread_id)
    if as_json:
        _print_json(shown)
        return
    summary, messages = shown, shown["messages"]
    sys.stdout.write(f"thread {thread_id} · {summary['turns']} turns · updated {summary['updated_at']}\n")
    if shown["summary"]:
        folded = shown["summary_through"]
        sys.stdout.write(f"summary of the first {folded} messages> {printable(shown['summary'])}\n")
    for m in messages:
        mark = " [interrupted]" if m.get("interrupted") else ""
        sys.stdout.write(f"{_role_shown(m)}> {printable(m['content'])}{_calls_shown(m)}{mark}\n")


def _role_shown(message: dict[str, Any]) -> str:
    """A message's role in ``threads show``; a tool result's names its tool."""
    return f"tool {message['name']}" if message["role"] == "tool" and message.get("name") else message["role"]


def _calls_shown(message: dict[str, Any]) -> str:
    """The tool calls a reply made, as the chat shows them (a reply that only called a tool was
    a bare ``assistant>``)."""
    from agentmm.repl.terminal import call_text

    calls = [*message.get("tool_calls", []), *message.get("invalid_tool_calls", [])]
    return "".join(f" [tool {printable(call_text(c.get('name') or '?', c.get('args')))}]" for c in calls)


@threads_app.command("delete")
def threads_delete(thread_id: str, as_json: JsonFlag = False) -> None:
    """Delete a thread and all its checkpoints (ID or a prefix only it starts with)."""
    from agentmm.threads import delete_thread, find_thread

    saver = _checkpointer()
    thread_id = find_thread(saver, thread_id)
    delete_thread(saver, thread_id)
    if as_json:
        _print_json({"deleted": thread_id})
    else:
        sys.stdout.write(f"deleted thread {thread_id}\n")


@threads_app.command("import")
def threads_import(
    file: Path,
    thread: Annotated[
        Optional[str], typer.Option("--thread", "-t", help="The new thread's id (default: a new one).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Make a new thread of a chat's /save FILE.json: its messages, persona, summary and window."""
    from agentmm.graphs.chat import build_graph
    from agentmm.personas import PersonaRegistry
    from agentmm.threads import (
        ThreadImportError,
        check_greeting,
        close_saver,
        import_thread,
        new_thread_id,
        read_saved_thread,
    )

    if thread is not None and (not thread.strip() or thread != printable(thread) or thread != thread.strip()):
        raise ThreadImportError(f"--thread {thread!r}: a thread id is printable text without spaces at its ends")
    values = read_saved_thread(file)
    settings = _settings()
    if "persona" in values:  # a thread whose persona is not here would fail at its next turn
        persona = PersonaRegistry(settings.personas_dir).get(values["persona"])
        values["persona"] = persona.name
        check_greeting(values, len(persona.greetings), persona.name, str(file))
    thread_id = thread or new_thread_id()
    saver = _checkpointer()
    try:
        import_thread(build_graph(settings, model=_stand_in_model(), checkpointer=saver, tools=[]), thread_id, values)
    finally:
        close_saver(saver)
    if as_json:
        _print_json({"imported": thread_id, "file": str(file), "messages": len(values["messages"])})
    else:
        sys.stdout.write(f"imported {len(values['messages'])} messages as thread {thread_id}\n")


@threads_app.command("export")
def threads_export(
    thread_id: str,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="FILE.json (what threads import reads) or FILE.md.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Write a thread as a chat's /save does: FILE.json or FILE.md (no -o: the JSON on stdout)."""
    from agentmm.repl.transcript import format_of, save, transcript
    from agentmm.threads import find_thread, thread_values

    if output is not None:
        format_of(output)  # a wrong extension is told before the thread is read
    elif as_json:
        raise AgentmmError("--json reports the file written: give -o FILE.json or -o FILE.md")
    settings = _settings()
    saver = _checkpointer()
    thread_id = find_thread(saver, thread_id)
    values, _ = thread_values(saver, thread_id)
    if not values.get("messages"):
        raise AgentmmError(f"nothing to export: thread {thread_id!r} is empty")
    doc = transcript(thread_id, values, model=settings.model, user_name=settings.user_name)
    if output is None:  # the same JSON /save writes, for a pipe or a redirect
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
        return
    fmt = save(output, doc)
    if as_json:
        _print_json({"thread_id": thread_id, "path": str(output), "format": fmt, "messages": len(doc["messages"])})
    else:
        sys.stdout.write(f"saved {len(doc['messages'])} messages to {shown_path(output)} ({fmt})\n")


# --------------------------------------------------------------------------- models, config, doctor


@models_app.command("list")
def models_list(as_json: JsonFlag = False) -> None:
    """Shipped models and GGUF files in the hub cache."""
    from agentmm.models import list_models

    settings = _settings()
    models = list_models(settings.models_dir, settings.cache_dir)
    if as_json:
        _print_json({"models": [m.__dict__ for m in models]})
        return
    from rich.markup import escape
    from rich.table import Table

    from agentmm.console_text import key_column
    from agentmm.terminal_console import make_console

    table = Table(key_column("name", [m.name for m in models]), "source", "installed", "size", "path")
    for m in models:
        size = f"{m.size_bytes / 2**20:.0f} MiB" if m.size_bytes else ""
        where = m.path or ("joined from its parts on first use" if m.installed else "")
        table.add_row(m.name, escape(m.source), "yes" if m.installed else "no", size, escape(where))
    make_console().print(table)


@config_app.command("show")
def config_show(as_json: JsonFlag = False) -> None:
    """Every setting, its value and where it came from (default, file, env, flag)."""
    from agentmm.settings import default_config_file

    settings = _settings()
    path = Globals.config_file or default_config_file()
    values = settings.public_dict()
    present = path.is_file()  # as doctor says it: a path that names no file gives the defaults
    if as_json:
        _print_json({"config_file": str(path), "config_file_exists": present, "settings": values,
                     "sources": settings.sources})  # fmt: skip
        return
    from rich.table import Table

    from agentmm.terminal_console import make_console

    title = f"config file: {printable(path)}" + ("" if present else " (absent: defaults)")
    table = Table("setting", "value", "from", title=title)
    for name, value in values.items():
        table.add_row(name, plain(value), plain(settings.sources[name]))
    make_console().print(table)


@app.command()
def doctor(as_json: JsonFlag = False) -> None:
    """Check the model, GPU offload, data dir and versions."""
    from agentmm.doctor import run_checks
    from agentmm.errors import SettingsError
    from agentmm.settings import default_config_file

    try:
        settings = _settings()
    except SettingsError as exc:  # the one thing to fix first, said as a check (--json still an object)
        report = {"ok": False, "checks": [{"name": "config", "ok": False, "detail": str(exc)}],
                  "config_file": str(Globals.config_file or default_config_file())}  # fmt: skip
    else:
        from agentmm.tools.images_check import images_check

        report = run_checks(settings, Globals.config_file, more=[images_check])
    if as_json:
        _print_json(report)
    else:
        from rich.console import Console

        console = Console(soft_wrap=True)  # one line a check, piped too: `doctor | grep problem` sees why
        for check in report["checks"]:
            mark = plain(f"{'ok' if check['ok'] else 'problem':>7}", style="green" if check["ok"] else "red")
            console.print(mark + "  " + plain(check["name"], style="bold") + ": " + plain(check["detail"]))
        if "versions" in report:
            console.print("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    if not report["ok"]:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- personas


def _registry() -> Any:
    from agentmm.personas import PersonaRegistry

    return PersonaRegistry(_settings().personas_dir)


@personas_app.command("list")
def personas_list(as_json: JsonFlag = False) -> None:
    """Every persona found: built-ins, plugins and your personas folder."""
    from agentmm.personas import persona_summary

    registry = _registry()
    personas = [persona_summary(p) for p in registry]
    if as_json:
        _print_json({"personas": personas, "problems": registry.problems, "notes": registry.notes})
        return
    from rich.table import Table

    from agentmm.terminal_console import make_console

    table = Table("name", "source", "greetings", "lore", "description")
    for p in personas:
        table.add_row(plain(p["name"]), plain(p["source"]), str(p["greetings"]), str(p["lore_entries"]),
                      plain(p["description"][:60]))  # fmt: skip
    console = make_console()
    console.print(table)
    for problem in registry.problems:
        console.print(plain("skipped: ", style="yellow") + plain(problem), highlight=False)
    for note in registry.notes:  # loaded, but not all of it (a damaged ccv3 chunk read from chara)
        console.print(plain("note: ", style="yellow") + plain(note), highlight=False)


@personas_app.command("show")
def personas_show(name: str, as_json: JsonFlag = False) -> None:
    """A persona's fields (card text, greetings, lorebook)."""
    persona = _registry().resolve(name)
    if as_json:
        _print_json(persona.model_dump(mode="json", exclude={"card", "image"}))
        return
    sys.stdout.write(f"{persona.name}  ({persona.source})\n")
    for field in ("description", "personality", "scenario", "example_dialogue", "system_prompt",
                  "post_history_instructions"):  # fmt: skip
        value = getattr(persona, field).strip()
        if value:
            sys.stdout.write(f"\n[{field}]\n{value}\n")
    for i, words in enumerate(persona.greetings):
        sys.stdout.write(f"\n[greeting {i}]\n{words.strip()}\n")
    for entry in persona.lorebook.entries:
        marks = _lore_marks(entry)
        sys.stdout.write(f"\n[lore: {entry.label}] keys: {', '.join(entry.keys)}{f'  ({marks})' if marks else ''}\n")
        if entry.content.strip():
            sys.stdout.write(f"{one_line(entry.content, 100)}\n")


def _lore_marks(entry: Any) -> str:
    """What decides whether a lore entry goes in, besides its keys, in a few words."""
    marks = ["constant"] if entry.constant else []
    if not entry.enabled:
        marks.append("disabled")
    if entry.selective and entry.secondary_keys:
        logic = entry.selective_logic.replace("_", " ")
        marks.append(f"selective: {logic} of {', '.join(entry.secondary_keys)}")
    if entry.chance is not None:
        marks.append(f"{entry.chance}% chance")
    return "; ".join(marks)


@personas_app.command("new")
def personas_new(
    name: str,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Write a commented TOML template for a new persona into your personas folder."""
    path = _registry().create(name, overwrite=force)
    if as_json:
        _print_json({"name": name, "path": str(path)})
    else:
        sys.stdout.write(f"wrote {path}: edit it, then: agentmm chat --persona {shlex.quote(name.strip())}\n")


@personas_app.command("import")
def personas_import(
    file: Path,
    force: Annotated[bool, typer.Option("--force", help="Replace a persona of the same name.")] = False,
    world: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--world",
            help="A SillyTavern world-info (lorebook) JSON file whose entries join the persona's lorebook; "
            "repeat for several.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Copy a card (JSON or PNG, V1/V2/V3) or TOML persona into your personas folder, unchanged
    (with --world: in its own format, with the worlds' lore entries added)."""
    from agentmm.personas import validation

    persona, lost = _registry().install_with_worlds(file, world or (), overwrite=force)
    # What validate says of the installed file (a world's entry with no keys, a regex key that
    # cannot run): installed as it is, but said, not found out in a chat.
    found = validation(persona.source.removeprefix("user:"))
    if as_json:
        from agentmm.personas import persona_summary

        _print_json({**persona_summary(persona), **({"not_kept": lost} if world else {}),
                     "problems": found.problems, "warnings": found.warnings})  # fmt: skip
    else:
        sys.stdout.write(f"imported {persona.name} ({persona.source})\n")
        if lost:
            sys.stderr.write(f"note: {_not_kept_line(lost)}; import the persona as a card to keep them\n")
        for line in (*found.problems, *found.warnings):
            sys.stderr.write(f"note: {line}\n")


@personas_app.command("export")
def personas_export(
    name: str,
    output: Annotated[Path, typer.Option("-o", "--output", help="File or folder to write.")],
    format: Annotated[
        Optional[str],
        typer.Option(
            "--format",
            "-f",
            help="toml, card-v2, card-v3 or png (default: by -o's suffix, else a card JSON in the persona's own "
            "spec: card-v3 for a V3 card, else card-v2).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Write a persona as TOML, a V2/V3 card JSON, or a card PNG (every card field kept)."""
    from agentmm.personas import export

    given = format
    format = _export_format(format, output)
    persona = _registry().resolve(name)
    if given is None and format == "card-v2" and _card_spec(persona) == "v3":
        format = "card-v3"  # a V3 card stays V3 (its spec, assets...) unless --format says otherwise
    path = export(persona, format, output)  # type: ignore[arg-type]
    lost = _not_kept(persona) if format == "toml" else []
    if as_json:
        _print_json({"name": persona.name, "format": format, "path": str(path),
                     **({"not_kept": lost} if format == "toml" else {})})  # fmt: skip
    else:
        sys.stdout.write(f"wrote {path}\n")
        if lost:
            sys.stderr.write(f"note: {_not_kept_line(lost)}; a card (JSON or PNG) export keeps them\n")


def _card_spec(persona: Any) -> str | None:
    """The spec of the card a persona came from (v1, v2, v3), None for a native one."""
    from agentmm.personas.cards import detect_spec

    return detect_spec(persona.card) if persona.card is not None else None


def _not_kept(persona: Any) -> list[str]:
    from agentmm.personas.toml_format import not_kept

    return not_kept(persona)


def _not_kept_line(lost: list[str], most: int = 8) -> str:
    """One line naming what a TOML export left out of the card (the first ``most`` of each kind)."""

    def names(items: list[str]) -> str:
        more = f" (+{len(items) - most} more)" if len(items) > most else ""
        return ", ".join(printable(item) for item in items[:most]) + more

    card = [item for item in lost if not item.startswith("lore entries' ")]
    lore = [item.removeprefix("lore entries' ") for item in lost if item.startswith("lore entries' ")]
    lore.sort(key=lambda name: name not in ("depth", "role", "position"))  # where an entry goes first
    said = [f"the card's {names(card)}"] if card else []
    said += [f"lore entries' {names(lore)}"] if lore else []
    return "TOML does not keep " + " and ".join(said)


_SUFFIX_FORMATS = {".png": ("png",), ".toml": ("toml",), ".json": ("card-v2", "card-v3")}


def _export_format(given: str | None, output: Path) -> str:
    """The format ``--format`` names, else the one ``-o``'s suffix names (``gus.png`` a card PNG:
    it was card JSON under a .png name); a suffix that says another format is refused."""
    fits = _SUFFIX_FORMATS.get(output.suffix.lower())
    if given is None:
        return fits[0] if fits else "card-v2"
    if fits is not None and given in {f for formats in _SUFFIX_FORMATS.values() for f in formats} and given not in fits:
        raise AgentmmError(f"-o {output} ends in {output.suffix} but --format is {given}: give it a matching name")
    return given


@personas_app.command("validate")
def personas_validate(file: Path, as_json: JsonFlag = False) -> None:
    """Check a persona file or card; exit 1 if it has problems (warnings are shown, exit 0)."""
    from agentmm.personas import validation

    found = validation(file)
    if as_json:
        _print_json({"file": str(file), "ok": not found.problems, "problems": found.problems,
                     "warnings": found.warnings})  # fmt: skip
    else:
        for problem in found.problems:
            sys.stdout.write(f"problem: {problem}\n")
        for warning in found.warnings:
            sys.stdout.write(f"warning: {warning}\n")
        if not found.problems:
            sys.stdout.write(f"{file}: ok\n")
    if found.problems:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- memory

UserOpt = Annotated[Optional[str], typer.Option("--user", help="Whose memories (default: the user_id setting).")]
PersonaOpt = Annotated[Optional[str], typer.Option("--persona", help="One persona's memories (default: all).")]


@contextmanager
def _memory_store() -> Iterator[Any]:
    """The memory store and its embedder, opened in a runtime of their own and closed with it."""
    from agentmm.memory import open_store
    from agentmm.runtime import Runtime

    with Runtime("memory") as runtime:
        yield open_store(_using_cache(_settings()), runtime=runtime)


def _user(user: str | None) -> str:
    return user or _settings().user_id


def _print_memories(rows: list[dict[str, Any]], as_json: bool, key: str = "memories") -> None:
    if as_json:
        _print_json({key: rows})
        return
    from rich.table import Column, Table

    from agentmm.console_text import key_column
    from agentmm.terminal_console import make_console

    console = make_console()
    if not rows:
        console.print("no memories")
        return
    ids = [printable(row["id"]) for row in rows]
    if console.width < max(map(len, ids)) + MEMORY_TABLE_ROOM:
        _print_memory_blocks(console, rows)
        return
    scored = [Column("score", no_wrap=True)] if "score" in rows[0] else []
    table = Table(key_column("id", ids), "scope", "when", Column("text", overflow="fold"), *scored)
    for row in rows:
        cells = [plain(row["id"]), plain(row.get("scope", "")), _memory_when(row), plain(_memory_text(row))]
        if "score" in row:
            cells.append(plain(f"{row['score']:.4f}"))
        table.add_row(*cells)
    console.print(table)


# What a memory table needs beside its id column: borders and the scope, when and text columns
# at widths they can be read at. Below it each column but the id shrank to nothing (at 50
# columns with real ids) and the memories are printed as blocks instead.
MEMORY_TABLE_ROOM = 50


def _memory_text(row: dict[str, Any]) -> str:
    value = row.get("value", row)
    return str(value.get("content") or row.get("text", ""))  # a search row holds the indexed text


def _memory_when(row: dict[str, Any]) -> str:
    return str(row.get("value", row).get("when", ""))[:19].replace("T", " ")  # wraps between day and time


def _print_memory_blocks(console: Any, rows: list[dict[str, Any]]) -> None:
    """Memories one block each, for a terminal too narrow for their table: the id on a line of
    its own, whole (the terminal wraps a longer one, never cut: ``memory forget`` takes it),
    then scope, time and score, then the text wrapped under them."""
    for number, row in enumerate(rows):
        if number:
            console.print()
        console.print(plain(row["id"], style="bold"), soft_wrap=True)
        facts = [str(row.get("scope", "")), _memory_when(row)]
        if "score" in row:
            facts.append(f"score {row['score']:.4f}")
        for text in (" · ".join(fact for fact in facts if fact), _memory_text(row)):
            for line in plain(text).wrap(console, max(console.width - 2, 1)):
                line.rstrip()
                console.print(plain("  ") + line, soft_wrap=True)


@memory_app.command("list")
def memory_list(
    user: UserOpt = None, persona: PersonaOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 50, as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """The newest memories."""
    from agentmm.memory.manage import list_memories

    with _memory_store() as store:
        _print_memories(list_memories(store, _user(user), _registry().known_as(persona), limit), as_json)


@memory_app.command("search")
def memory_search(
    query: str, user: UserOpt = None, persona: PersonaOpt = None,
    k: Annotated[int, typer.Option("-k")] = 10, as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Search memories the way a turn recalls them (dense + BM25 fused, by date, reranked if set)."""
    if k < 1:  # as images search says it: -k 0 printed "no memories" and exited 0
        raise AgentmmError(f"-k must be at least 1, not {k}")
    from agentmm.memory.conversation import recall
    from agentmm.memory.manage import user_scopes

    settings = _settings()
    with _memory_store() as store:
        scopes = user_scopes(store, _user(user), _registry().known_as(persona))
        found = recall(store, scopes, query, k=k, min_similarity=0.0,
                       now=datetime.now(UTC), by_date=settings.memory_by_date,
                       rerank=settings.memory_rerank)  # fmt: skip
        _print_memories([r.as_trace() for r in found], as_json, key="results")


@memory_app.command("add")
def memory_add(
    text: str, user: UserOpt = None, persona: PersonaOpt = None,
    shared: Annotated[bool, typer.Option("--shared", help="Known to every persona.")] = False,
    as_json: JsonFlag = False,
) -> None:  # fmt: skip
    """Write a memory by hand (a long text in pieces, as a chat message is)."""
    if shared and persona is not None:  # README: [--persona P | --shared]; --persona was dropped unsaid
        raise AgentmmError("--persona and --shared are alternatives: a memory is one persona's or every persona's")
    from agentmm.memory.manage import add_memory, remembered_line

    if persona is not None:  # the persona's own name, as its turns recall by: "nora quill" is Nora Quill
        persona = _registry().resolve(persona).name
    settings = _settings()
    with _memory_store() as store:
        row = add_memory(store, _user(user), persona, text, shared=shared, speaker=settings.user_name,
                         max_tokens=settings.memory_max_tokens)  # fmt: skip
    if as_json:
        _print_json(row)
    else:
        sys.stdout.write(remembered_line(row, settings.memory_max_tokens) + "\n")


@memory_app.command("forget")
def memory_forget(memory_id: str, user: UserOpt = None, persona: PersonaOpt = None, as_json: JsonFlag = False) -> None:
    """Delete one memory by id (a note stored in pieces: all of them; one piece's id: that piece)."""
    from agentmm.memory.manage import forget, forgot_line

    with _memory_store() as store:
        row = forget(store, _user(user), _registry().known_as(persona), memory_id)
    if as_json:
        _print_json({"forgotten": row})
    else:
        sys.stdout.write(forgot_line(row) + "\n")


@memory_app.command("export")
def memory_export(file: Path, user: UserOpt = None, persona: PersonaOpt = None, as_json: JsonFlag = False) -> None:
    """Write memories to a JSON Lines file (lossless: text, metadata, timestamps)."""
    from agentmm.memory.manage import export_jsonl

    with _memory_store() as store:
        count = export_jsonl(store, _user(user), _registry().known_as(persona), file)
    _print_json({"exported": count, "file": str(file)}) if as_json else sys.stdout.write(
        f"exported {count} to {file}\n"
    )


@memory_app.command("import")
def memory_import(file: Path, as_json: JsonFlag = False) -> None:
    """Load a memory export (checked whole before anything is written)."""
    from agentmm.memory.manage import import_jsonl

    with _memory_store() as store:
        whole = getattr(store, "all_or_nothing", None) is not None  # the embedded store takes a cut-off import back
        said = "nothing was imported" if whole else "part may be imported: this memory store cannot take it back"
        with _interrupted_says(said):
            count = import_jsonl(store, file)
    if as_json:
        _print_json({"imported": count, "file": str(file)})
    else:
        sys.stdout.write(f"imported {count}\n")


@memory_app.command("stats")
def memory_stats(user: UserOpt = None, as_json: JsonFlag = False) -> None:
    """Memories per scope (user/persona)."""
    from agentmm.memory.manage import stats

    with _memory_store() as store:
        report = stats(store, user)
    if as_json:
        _print_json(report)
        return
    for name, count in sorted(report["scopes"].items()):
        sys.stdout.write(f"{count:8d}  {name}\n")
    sys.stdout.write(f"{report['total']:8d}  total\n")


@eval_app.command("memory")
def eval_memory(
    file: Path,
    k: Annotated[Optional[str], typer.Option("--k", help="Comma-separated cut-offs (default 5,10,25,50).")] = None,
    retrieval: Annotated[Optional[str], typer.Option("--retrieval", help="hybrid (default) or dense.")] = None,
    budget_tokens: Annotated[
        Optional[int],
        typer.Option("--budget-tokens", min=1, help="Also score only the results that fit this many prompt tokens."),
    ] = None,
    rounds: Annotated[
        Optional[int],
        typer.Option("--rounds", min=1, max=2, help="Recall rounds (default: the memory_rounds setting)."),
    ] = None,
    answer: Annotated[
        bool, typer.Option("--answer", help="Let the chat model answer each question from what recall finds; F1/EM.")
    ] = False,
    limit: Annotated[
        Optional[int], typer.Option("--limit", min=1, help="--answer: the first N questions only.")
    ] = None,
    answers: Annotated[
        Optional[Path], typer.Option("--answers", help="--answer: the answers file to write and go on from.")
    ] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="--answer: start over instead of going on.")] = False,
    model: Annotated[
        Optional[str], typer.Option("--model", help="--answer: chat model (shipped name, .gguf path, hub id).")
    ] = None,
    judge: Annotated[
        Optional[str], typer.Option("--judge", help="--answer: also ask this model whether each answer is right.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Score memory recall on a LoCoMo-format file: evidence Recall@k and Hit@k per category; with
    --answer, the chat model's answers from what recall finds, by LoCoMo's F1 and exact match."""
    if not answer and (limit is not None or answers is not None or fresh or model is not None or judge is not None):
        raise typer.BadParameter("--limit, --answers, --fresh, --model and --judge go with --answer")
    if answer and (k is not None or retrieval is not None or budget_tokens is not None):
        raise typer.BadParameter("--k, --retrieval and --budget-tokens go with recall scoring, not with --answer")
    if answer:
        settings = _using_cache(_settings(memory_rounds=rounds, model=model))
        with _interrupted_says("the answers given so far are kept; the same command goes on from them"):
            report = _run_answers(file, settings, limit, answers, fresh, judge, show_progress=not as_json)
        _json_unless_unscored(
            report, as_json, f"nothing to answer in {file.name}: it has no question of categories 1-4"
        )
        if not as_json:
            _print_answer_report(report, file)
        return
    ks = _cut_offs("5,10,25,50" if k is None else k)
    retrieval = "hybrid" if retrieval is None else retrieval
    if retrieval not in ("hybrid", "dense"):
        raise typer.BadParameter("--retrieval is hybrid or dense")
    with _interrupted_says("no report"):
        report = _run_eval(file, ks, retrieval, budget_tokens, rounds, show_progress=not as_json)
    _json_unless_unscored(report, as_json, f"nothing to score in {file.name}: no question of categories 1-4 "
                                           "has evidence naming a turn of its conversation")  # fmt: skip
    if as_json:
        return
    from rich.table import Table

    from agentmm.terminal_console import make_console

    columns = [f"{kind}@{n}" for n in ks for kind in ("recall", "hit")]
    table = Table("category", "questions", *columns, title=f"memory eval: {file.name} ({retrieval})")
    rows = [*report["per_category"].items(), ("overall 1-4", report["overall"])]
    for name, row in rows:
        table.add_row(name, str(row["questions"]), *(f"{row[c]:.1f}" for c in columns))
    console = make_console()
    console.print(table)
    if budget := report.get("budget"):
        n = budget["tokens"]
        fitted = Table("category", f"recall@{n}tok", f"hit@{n}tok", "memories fitted",
                       title=f"within {n} prompt tokens (as compose places them)")  # fmt: skip
        for name, row in [*budget["per_category"].items(), ("overall 1-4", budget["overall"])]:
            fitted.add_row(name, f"{row[f'recall@{n}tok']:.1f}", f"{row[f'hit@{n}tok']:.1f}",
                           f"{row['memories_fitted_mean']:.1f}")  # fmt: skip
        console.print(fitted)
    console.print("timings: " + ", ".join(f"{key} {value}" for key, value in report["timings"].items()))
    console.print(_evidence_line(report["evidence"], report["short_results"]))


def _cut_offs(k: str) -> list[int]:
    """``--k``'s cut-offs, sorted: at least one, each at least 1 (recall@0 is no measurement)."""
    try:
        ks = sorted({int(part) for part in k.split(",") if part.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise typer.BadParameter(f"--k takes positive numbers like 5,10,25: {k!r}")
    return ks


def _json_unless_unscored(report: dict[str, Any], as_json: bool, nothing: str) -> None:
    """Print the ``--json`` report; then, if it scored no question, exit 1 (with ``--json`` too, so
    a script sees it) after one line saying why in place of a table: the scores are absent, not 0."""
    if as_json:
        _print_json(report)
    if report["overall"]["questions"]:
        return
    if not as_json:
        sys.stderr.write(f"agentmm: error: {nothing}\n")
    raise typer.Exit(1)


def _evidence_line(evidence: dict[str, Any], short: int) -> str:
    line = (f"evidence: {evidence['ids']} ids, {evidence['rewritten']} read from a non-standard form, "
            f"{evidence['naming_no_turn']} naming no turn (not scored), {evidence['shared_turn_ids']} dia_ids "
            f"shared by two turns, {evidence['questions_without_findable_evidence']} questions left unscored; "
            f"{short} searches returned fewer results than asked")  # fmt: skip
    if evidence["examples_naming_no_turn"]:
        line += " (naming no turn: " + ", ".join(evidence["examples_naming_no_turn"]) + ")"
    return line


def _run_answers(
    file: Path, settings: Settings, limit: int | None, answers: Path | None, fresh: bool, judge: str | None,
    show_progress: bool,
) -> dict[str, Any]:  # fmt: skip
    from agentmm.graphs.memory_answers import answer_file

    with ExitStack() as stack:
        judge_model = _judge_model(stack, settings, judge)
        options: dict[str, Any] = {"limit": limit, "answers": answers, "fresh": fresh, "judge": judge_model,
                                   "judge_name": judge}  # fmt: skip
        return _with_progress("answering", show_progress, lambda p: answer_file(file, settings, progress=p, **options))


def _print_answer_report(report: dict[str, Any], file: Path) -> None:
    from rich.table import Table

    from agentmm.terminal_console import make_console

    judged = report["overall"]["judge_correct"] is not None
    columns = ["category", "questions", "F1", "exact match", "memories placed", *(["judge: right"] if judged else [])]
    table = Table(*columns, title=f"memory eval, answers: {file.name} ({report['config']['model']})")
    for name, row in [*report["per_category"].items(), ("overall 1-4", report["overall"])]:
        cells = [name, str(row["questions"]), f"{row['f1']:.1f}", f"{row['exact_match']:.1f}",
                 f"{row['memories_mean']:.1f}"]  # fmt: skip
        if judged:
            cells.append(f"{row['judge_correct']:.1f}" if row["judge_correct"] is not None else "")
        table.add_row(*cells)
    console = make_console()
    console.print(table)
    where = report["config"]["answers_file"]
    console.print(f"answers: {where} (the same command goes on from it; --fresh starts over)")


@eval_app.command("persona")
def eval_persona(
    persona: Annotated[
        Optional[list[str]], typer.Option("--persona", "-p", help="Evaluate this persona (repeat; default: all).")
    ] = None,
    seeds: Annotated[
        str, typer.Option("--seeds", help="Comma-separated sampling seeds, one conversation each.")
    ] = "1,2,3",
    model: Annotated[
        Optional[str], typer.Option("--model", help="Chat model (shipped name, .gguf path, hub id).")
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Longest reply, in tokens.")] = 96,
    temperature: Annotated[
        Optional[float], typer.Option("--temperature", min=0.0, help="Sampling temperature.")
    ] = None,
    judge: Annotated[
        Optional[str], typer.Option("--judge", help="Also ask this model whether each reply is in character.")
    ] = None,
    turns: Annotated[
        int, typer.Option("--turns", min=1, max=24, help="Run only the script's first N turns (a quick check).")
    ] = 24,
    details: Annotated[bool, typer.Option("--details", help="Print every scored reply.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Does the character stay in character? 24 scripted turns per persona and seed: identity
    questions, "are you an AI?" baits, lore questions, small talk; scored by rules (and a judge)."""
    try:
        seed_list = [int(part) for part in seeds.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"--seeds takes numbers like 1,2,3: {seeds!r}") from None
    if not seed_list:
        raise typer.BadParameter("--seeds needs at least one seed")
    settings = _using_cache(_settings(model=model, max_tokens=max_tokens, temperature=temperature))
    with _interrupted_says("no report"):
        report = _run_persona_eval(settings, persona or [], seed_list, judge, turns, show_progress=not as_json)
    if as_json:
        _print_json(report)
        return
    _print_persona_report(report, details)


def _run_persona_eval(
    settings: Settings, personas: list[str], seeds: list[int], judge: str | None, turns: int, show_progress: bool
) -> dict[str, Any]:
    from agentmm.graphs.persona_eval import evaluate_personas

    with ExitStack() as stack:
        judge_model = _judge_model(stack, settings, judge)
        return _with_progress(
            "evaluating",
            show_progress,
            lambda p: evaluate_personas(settings, personas, seeds=seeds, judge=judge_model, progress=p, turns=turns),
        )


def _judge_model(stack: ExitStack, settings: Settings, judge: str | None) -> Any:
    """The ``--judge`` model (greedy), closed with ``stack``; None without ``--judge``."""
    if judge is None:
        return None
    from agentmm.llm import ChatLlamaCpp

    return stack.enter_context(
        ChatLlamaCpp.from_settings(settings.model_copy(update={"model": judge, "temperature": 0.0}))
    )


def _print_persona_report(report: dict[str, Any], details: bool) -> None:
    from rich.markup import escape
    from rich.table import Column, Table

    from agentmm.terminal_console import make_console

    judged = report["overall"]["judge_in_character_rate"] is not None
    rows = [*report["per_persona"].items(), ("overall", report["overall"])]
    # Two tables, so that each fits an 80-column terminal: the checks, then how the replies read.
    checks = Table(Column("persona", no_wrap=True), Column("identity kept", no_wrap=True), "each seed", "repeats",
                   "pressure", "lore", title="persona eval")  # fmt: skip
    rates = Table(Column("persona", no_wrap=True), "1st person", "giveaways", "assistant voice", "prompt said back",
                  "copies card", *(["judge: in character"] if judged else []),
                  title="share of replies")  # fmt: skip
    for name, row in rows:
        checks.add_row(escape(name), f"{row['identity_kept_mean']:.2f} / {row['identity_checks']}",
                       " ".join(map(str, row["identity_kept_per_conversation"])) if name != "overall" else "",
                       str(row["identity_repeats"]), f"{row['pressure_passed']}/{row['pressure_asked']}",
                       f"{row['lore_passed']}/{row['lore_asked']}")  # fmt: skip
        cells = [f"{row[key]:.0%}" for key in ("first_person_rate", "disclaimer_rate", "assistant_voice_rate",
                                                "prompt_leak_rate", "card_copy_rate")]  # fmt: skip
        if judged:
            cells.append(f"{row['judge_in_character_rate']:.0%}")
        rates.add_row(escape(name), *cells)
    console = make_console()
    console.print(checks)
    console.print(rates)
    if details:
        for check in report["checks"]:
            if check["passed"] is None:
                continue
            mark = "[green]kept[/green]" if check["passed"] else "[red]lost[/red]"
            why = ["no name"] if check["kind"] == "identity" and not check["names_character"] else []
            why += ["no lore fact"] if check["kind"] == "lore" and not check["facts_mentioned"] else []
            why += [f"disclaimer: {check['disclaimer']}"] if check["disclaimer"] else []
            why += [f"assistant voice: {check['assistant_voice']}"] if check.get("assistant_voice") else []
            why += [f"prompt said back: {check['prompt_leak']}"] if check.get("prompt_leak") else []
            why += [f"copies the card: {check['card_copy'][:60]}…"] if check.get("card_copy") else []
            kind = ", ".join([check["kind"], *why])
            where = f"{escape(check['persona'])} seed {check['seed']} turn {check['turn']}"
            console.print(f"{mark} {where} ({escape(kind)}): {escape(check['message'])}")
            console.print(f"    {escape(check['reply'][:300])}", style="dim")


def _run_eval(
    file: Path, ks: list[int], retrieval: str, budget_tokens: int | None, rounds: int | None, show_progress: bool
) -> dict[str, Any]:
    from agentmm.memory.evaluate import evaluate_file

    settings = _using_cache(_settings(memory_rounds=rounds))
    options: dict[str, Any] = {"retrieval": retrieval, "settings": settings, "budget_tokens": budget_tokens}
    return _with_progress("evaluating", show_progress, lambda p: evaluate_file(file, ks, progress=p, **options))


def _with_progress(label: str, show: bool, run: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """``run(progress)``: with a transient progress bar that ``progress(done, total, stage)``
    advances on stderr, or quietly (``progress`` None) for ``--json`` or when stderr is not a terminal
    (a bar drawn into a log file is noise, and rich leaves a blank line there)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not show or not console.is_terminal:
        return run(None)
    from rich.progress import Progress

    with Progress(transient=True, console=console) as bar:
        task = bar.add_task(label, total=None)

        def advance(done: int, total: int, stage: str) -> None:
            bar.update(task, completed=done, total=total, description=stage)

        return run(advance)


# --------------------------------------------------------------------------- perception


@app.command()
def perceive(files: list[Path], as_json: JsonFlag = False) -> None:
    """Caption images and transcribe audio (type read from the file's bytes, not its name)."""
    from agentmm.tools.caption import captioner_for
    from agentmm.tools.perception import failed_observation, perceivable_kind, perceive_file

    settings = _settings()
    captioner = captioner_for(settings)  # made on the first picture, then kept for the rest
    results: list[dict[str, Any]] = []
    failed = False
    for file in files:
        kind = None
        try:
            kind = perceivable_kind(file)
            with _audio_progress(file, show=not as_json and kind == "audio") as progress:
                found = perceive_file(file, settings, captioner=captioner, progress=progress)
            results.append({"file": str(file), "kind": kind, **found.model_dump()})
        except AgentmmError as exc:
            failed = True
            trace = failed_observation(file, exc, kind).as_trace()  # the keys a chat's trace has
            results.append({key: trace[key] for key in ("file", "kind", "error", "unavailable") if key in trace})
            if not as_json:
                sys.stderr.write(f"agentmm: error: {_about_file(file, exc)}\n")
            continue
        if not as_json:
            sys.stdout.write(f"{shown_path(file)}: {printable(results[-1]['text'])}\n")
    if as_json:
        _print_json({"results": results})
    if failed:
        raise typer.Exit(2)


def _about_file(file: Path, error: object) -> str:
    """An error about one of several files, as a line that names it once, its name safe to
    print: ``no image captioner...`` did not say which picture, and a file name holding
    ``\\x1b]0;title\\x07`` set the terminal's title."""
    from agentmm.repl.terminal import names_file

    message, shown = printable(error), shown_path(file)
    return message if names_file(message, shown) else f"{shown}: {message}"


@contextmanager
def _audio_progress(file: Path, show: bool) -> Iterator[Callable[[float], None] | None]:
    """A bar on stderr while a recording is transcribed (30 s windows), where someone watches."""
    if not show or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress

    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"transcribing {escape(shown_path(file.name))}", total=1.0)
        yield lambda done: bar.update(task, completed=done)


@contextmanager
def _clip_errors(settings: Settings) -> Iterator[None]:
    """Run an image-index command so that missing CLIP weights (offline, not in the hub cache:
    the common first run) are one line that names the setting to change."""
    from agentmm.tools.errors import VisionWeightsUnavailableError

    try:
        yield
    except VisionWeightsUnavailableError as exc:
        weights = settings.clip_pretrained or ""
        if Path(weights).expanduser().is_file():
            raise  # a local checkpoint that does not load: its own message says why
        raise VisionWeightsUnavailableError(
            f"no CLIP weights for image search: {settings.clip_model} {weights!r} is not in the hub cache and "
            "cannot be downloaded here; run once with a network, or set clip_pretrained to a local checkpoint "
            "(AGENTMM_CLIP_PRETRAINED=/path/to/open_clip_model.safetensors)"
        ) from exc


@images_app.command("index")
def images_index(directory: Path, as_json: JsonFlag = False) -> None:
    """Index (incrementally) every image under DIR for search by description."""
    from agentmm.tools.clip_search import default_image_index

    settings = _settings()
    kept = f"the images indexed so far are kept; agentmm images index {shown_path(directory)} goes on"
    with _clip_errors(settings), _interrupted_says(kept):
        index = default_image_index(settings)
        if as_json or not sys.stderr.isatty():  # a bar only where someone watches; stdout stays the report
            report = index.index_dir(directory)
        else:
            from rich.console import Console
            from rich.progress import Progress

            with Progress(transient=True, console=Console(stderr=True)) as progress:
                task = progress.add_task("indexing", total=None)

                def advance(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total)

                report = index.index_dir(directory, progress=advance)
    data = report.model_dump(mode="json")
    if as_json:
        _print_json(data)
        return

    for path, reason in report.failed:
        sys.stderr.write(f"agentmm: skipped {shown_path(path)}: {printable(' '.join(reason.split()))}\n")
    sys.stdout.write(", ".join(f"{key} {len(v) if isinstance(v, list) else v}" for key, v in data.items()) + "\n")


@images_app.command("search")
def images_search(
    query: Annotated[Optional[str], typer.Argument(help="What the images show, in words.")] = None,
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 5,
    image: Annotated[Optional[Path], typer.Option("--image", help="Find images that look like this one.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The indexed images that best match a description, or (--image) look like a picture."""
    if (query is None) == (image is None):
        raise AgentmmError("search for a description or --image PATH (one of the two)")
    if k < 1:
        raise AgentmmError(f"-k must be at least 1, not {k}")
    from agentmm.tools.clip_search import default_image_index

    settings = _settings()
    with _clip_errors(settings):
        index = default_image_index(settings)
        hits = index.search_image(image, k) if image is not None else index.search_text(query or "", k)
        records = len(index)
        indexed = index.count_on_disk() if records else 0  # what a search can find: files deleted since are not
    rows = [{"path": str(h.path), "score": round(float(h.score), 4)} for h in hits]
    if as_json:
        _print_json({"results": rows, "indexed": indexed})
        return

    if records == 0:
        sys.stderr.write("agentmm: no images are indexed yet (index a folder first: agentmm images index DIR)\n")
    elif not rows:
        sys.stderr.write("agentmm: no indexed image is still on disk (run agentmm images index DIR again)\n")
    for row in rows:
        sys.stdout.write(f"{row['score']:.4f}  {shown_path(row['path'])}\n")


# --------------------------------------------------------------------------- tools


@tools_app.command("list")
def tools_list(as_json: JsonFlag = False) -> None:
    """Every tool found, where it came from, whether it is enabled and which personas may use it."""
    from agentmm.personas import PersonaRegistry
    from agentmm.plugins import discover_tools, needs_approval

    settings = _settings()
    catalog = discover_tools(settings.tools_dir)
    personas = list(PersonaRegistry(settings.personas_dir))
    rows = [
        {
            "name": info.name,
            "description": (info.tool.description or "").strip().splitlines()[0] if info.tool.description else "",
            "source": info.source,
            "enabled": info.name in settings.tools,
            "requires_approval": needs_approval(info.tool, settings.approve_tools),
            "personas": sorted(p.name for p in personas if info.name in p.allowed_tools),
        }
        for info in sorted(catalog.tools.values(), key=lambda i: i.name)
    ]
    if as_json:
        _print_json({"tools": rows, "problems": catalog.problems, "tools_dir": str(settings.tools_dir)})
        return
    from rich.table import Table

    from agentmm.terminal_console import make_console

    table = Table("tool", "enabled", "asks", "from", "personas", "what it does", box=None)
    for row in rows:
        table.add_row(plain(row["name"]), "yes" if row["enabled"] else "-", "yes" if row["requires_approval"] else "-",
                      plain(row["source"]), plain(", ".join(row["personas"]) or "-"),
                      plain(row["description"]))  # fmt: skip
    make_console().print(table)
    for problem in catalog.problems:
        sys.stderr.write(f"agentmm: skipped a plugin: {problem}\n")
    sys.stderr.write("Enable tools with --tool NAME or `tools = [...]` in the config file; a persona's allowed_tools "
                     "narrows them; a thread without a persona may use every enabled tool.\n")  # fmt: skip


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit. With
    ``--json`` stdout holds the JSON object alone (README's contract): what else is written
    there, by a tools-folder file as it is imported or by a tool as it runs, goes to stderr."""
    _usable_standard_streams()
    _warn_of_unknown_env_names()
    with _stdout_kept_for_json() if _wants_json(sys.argv[1:]) else nullcontext():
        try:
            app()
        except AgentmmError as exc:
            sys.stderr.write(f"agentmm: error: {printable(exc)}\n")
            _leave(exc.exit_code)
        except SystemExit as done:
            _leave(done.code)
        except OSError as exc:
            if exc.errno not in _OUTPUT_ERRNOS and not isinstance(exc, _StdoutClosedError):
                raise
            _output_failed(exc)  # the output's reader gone (| head), a full disk


def _warn_of_unknown_env_names() -> None:
    """One line for each ``AGENTMM_*`` variable that names no setting (``AGENTMM_N_CTXX``): the
    environment layer skips it, so a typo there was ignored without a word, while the same typo
    in the config file is an error."""
    if not any(name.upper().startswith("AGENTMM_") for name in os.environ):
        return  # no settings to import
    from agentmm.settings import unknown_env_names

    for name, near in unknown_env_names():
        hint = f" (did you mean {near}?)" if near else " (agentmm config show lists the settings)"
        with suppress(OSError, ValueError):
            sys.stderr.write(f"agentmm: warning: {printable(name)} is no setting; it is ignored{hint}\n")


# Writing the output failed: its reader has gone, the disk is full.
_OUTPUT_ERRNOS = {errno.EPIPE, errno.ENOSPC, errno.EDQUOT}


def _usable_standard_streams() -> None:
    """Standard streams a command can always use: stdin or stderr closed at start (``<&-``,
    ``2>&-``; Python made it None) is /dev/null, stdout closed (``>&-``) is ``_ClosedStdout``,
    and a character the terminal's encoding lacks (a Latin-1 locale, a reply's "→") is written
    as "?" rather than ending the command. Each closed one's descriptor is /dev/null, so no file
    the command opens (the thread database) lands on 0, 1 or 2 and is written over."""
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):  # in fd order: each takes its own
        if getattr(sys, name) is None:
            setattr(sys, name, _ClosedStdout() if name == "stdout" else open(os.devnull, mode))  # noqa: SIM115
    for stream in (sys.stdout, sys.stderr):
        with suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="replace")  # type: ignore[union-attr]


class _ClosedStdout(io.TextIOWrapper):
    """stdout closed at start (``agentmm personas list >&-``): a command whose job is to print
    fails on its first write, as ``ls`` and ``cat`` do ("Bad file descriptor", status 1), where
    it printed into /dev/null and exited 0. Its descriptor is /dev/null's; ``chat`` and ``serve``
    write there (``_quiet_if_closed``)."""

    def __init__(self) -> None:
        super().__init__(open(os.devnull, "wb"), errors="replace")  # noqa: SIM115 (lives as long as the process)
        self.refuse = True

    def write(self, text: str) -> int:
        if text and self.refuse:
            raise _StdoutClosedError(errno.EBADF, os.strerror(errno.EBADF))
        return super().write(text)


class _StdoutClosedError(OSError):
    """A write to stdout, which was closed when the command started."""


def _quiet_if_closed() -> None:
    """A chat with stdout closed at start still runs and saves its turns (what it would print,
    its --json object too, goes to /dev/null): the turn is its job as much as the reply. So does
    a server (uvicorn's access log is on stdout)."""
    for stream in (sys.stdout, _JSON_OUT.get()):
        if isinstance(stream, _ClosedStdout):
            stream.refuse = False


@contextmanager
def _stdout_kept_for_json() -> Iterator[None]:
    """While a ``--json`` command runs, stdout is stderr, down to file descriptor 1: ``print``,
    ``sys.__stdout__`` and ``os.write(1, ...)`` (a tools-folder file, a tool, a native library)
    all reach stderr, and only ``_print_json`` writes to the real stdout, kept on a duplicate of
    fd 1 (``_JSON_OUT``). Restored on the way out, so a caller in this process (a test, an
    embedding app) finds its streams as they were."""
    stdout = sys.stdout
    token = _JSON_OUT.set(stdout)
    sys.stdout = sys.stderr
    try:
        if _fileno(stdout) != 1 or isinstance(stdout, _ClosedStdout):  # a caller's buffer, or closed (>&-)
            yield
            return
        stdout.flush()
        with suppress(OSError, ValueError):
            sys.stderr.flush()
        kept = os.fdopen(os.dup(1), "w", encoding=stdout.encoding, errors=stdout.errors)
        os.dup2(2 if _fd_open(2) else os.open(os.devnull, os.O_WRONLY), 1)  # stderr closed (2>&-): nowhere
        _JSON_OUT.set(kept)
        failed: OSError | None = None
        try:
            yield
        finally:
            _flush_writes_to_fd_1(stdout)  # to stderr, before fd 1 is stdout again
            try:
                kept.flush()
            except OSError as exc:  # a reader gone (| head -c 0), a full disk (> /dev/full)
                failed = exc
            os.dup2(kept.fileno(), 1)
            with suppress(OSError):
                kept.close()
            if failed is not None:  # in place of the command's own exit, which is on its way out
                _output_failed(failed)
    finally:
        sys.stdout = stdout
        _JSON_OUT.reset(token)


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _output_failed(error: OSError) -> None:
    """The output could not be written: quietly when its reader has gone (as ``head`` expects of
    a command), in one line otherwise; exit 1 either way. Nothing is left to flush at exit."""
    with suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    if not isinstance(error, BrokenPipeError):
        with suppress(OSError, ValueError):
            sys.stderr.write(f"agentmm: error: cannot write the output: {error.strerror or error}\n")
    raise SystemExit(1)


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None


def _flush_writes_to_fd_1(stdout: TextIO) -> None:
    """Flush what is buffered on its way to fd 1: Python's stdout object (``sys.__stdout__``
    written to without a flush) and C's stdio (a native library's ``printf``)."""
    with suppress(Exception):
        stdout.flush()
    with suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)
    with suppress(Exception):
        sys.stderr.flush()


def _leave(code: int | str | None) -> None:
    """Exit with ``code``, at once if a tool the chat gave up on still runs: Python would wait
    for it (``graphs/tool_calls.tools_still_running``), for ever if it hangs. The command has
    closed its agent and stores by now; only the output is left to flush."""
    running = sys.modules.get("agentmm.graphs.tool_calls")
    if running is not None and running.tools_still_running():
        if isinstance(code, str):
            sys.stderr.write(f"{code}\n")
        for stream in (_JSON_OUT.get(), sys.stdout, sys.__stdout__, sys.stderr):  # --json's object: the first
            with suppress(Exception):
                if stream is not None:
                    stream.flush()
        os._exit(code if isinstance(code, int) else 0 if code is None else 1)
    sys.exit(code)


if __name__ == "__main__":
    main()
