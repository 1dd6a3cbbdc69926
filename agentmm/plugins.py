"""Plugins: what other packages (and the user's tools folder) add to agentmm.

Two entry-point groups, read the way simonw/llm reads its own: ``agentmm.tools`` (LangChain
tools) and ``agentmm.personas`` (personas and cards; read by ``PersonaRegistry``). agentmm's
built-ins register through the same groups, so they are found by the same code as any plugin.
A plugin that fails to import or gives something unusable is one line in ``failures`` (and in
``problems``, the failures and notes ``tools list`` reports) and is skipped; it never stops the app.

A tool plugin (an entry point, or a name in a ``tools_dir`` file) is a ``BaseTool``, a list of
them, or a *tool factory*: a function marked with ``@tool_factory`` that is called with the
agent's ``Settings`` and its ``Runtime`` (where what the tools open belongs, closed with the
agent) and returns a tool or a list. A factory should open nothing itself: its tools open what
they need on their first call, in the runtime. A tool can also name the factory that rebuilds
it for an agent (``metadata[FACTORY_KEY] = "module:function"``): the built-in perception tools
do, so the module-level ``caption_image`` another app imports runs on the process's settings,
while an ``Agent`` given it (or naming it) gets one built over its own settings and runtime
(``build_tools``).

There is no group for turn graphs: the Agent, undo/retry, the rollback of a failed turn and the
trace all read the turn graph's own nodes and state, so a plugin's graph could not be run in its
place. A different graph embeds agentmm's turn as a subgraph (``examples/subgraph.py``) and is
served by naming it in its own ``langgraph.json``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import signal
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentmm.errors import SEE_TOOLS, AgentmmError

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

    from agentmm.runtime import Runtime
    from agentmm.settings import Settings

TOOLS_GROUP = "agentmm.tools"
PERSONAS_GROUP = "agentmm.personas"
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# In a tool's metadata: "module:function", the factory that builds this tool for settings and a runtime.
FACTORY_KEY = "agentmm_factory"
_FACTORY_MARK = "agentmm_tool_factory"

ToolFactory = Callable[["Settings", "Runtime | None"], Any]


def tool_factory(factory: ToolFactory) -> ToolFactory:
    """Mark ``factory(settings, runtime) -> BaseTool | list[BaseTool]`` as a tool factory, so a
    plugin gives it instead of a tool (unmarked, a plain function would be made a tool itself)."""
    setattr(factory, _FACTORY_MARK, True)
    return factory


def is_tool_factory(obj: Any) -> bool:
    return callable(obj) and getattr(obj, _FACTORY_MARK, False) is True


class ToolNotFoundError(AgentmmError):
    """A setting or flag names a tool that no plugin provides."""


def describe(exc: BaseException) -> str:
    """One line for a plugin's failure."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, AgentmmError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class CtrlC:
    """Whether the user pressed Ctrl-C while a plugin was imported, so a ``KeyboardInterrupt``
    the plugin's own code raised (``raise KeyboardInterrupt`` at import) is reported as a
    failure, as a ``SystemExit`` is, while a real Ctrl-C still stops the command: it made
    ``tools list`` exit 130 with nothing said. The SIGINT handler is wrapped to note the signal,
    then do what it did. Where that cannot be done (not the main thread, a handler not set from
    Python) every ``KeyboardInterrupt`` counts as the user's; where SIGINT is ignored or kills the
    process, none is."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous: Any = None

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is not threading.main_thread():
            self.pressed = True  # cannot tell
            return self
        previous = signal.getsignal(signal.SIGINT)
        if not callable(previous):  # SIG_IGN, SIG_DFL: no Ctrl-C raises; None: cannot tell
            self.pressed = previous is None
            return self
        self._previous = previous

        def noted(signum: int, frame: Any) -> Any:
            self.pressed = True
            return previous(signum, frame)

        signal.signal(signal.SIGINT, noted)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def by_user(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the user's Ctrl-C, to be raised on rather than reported."""
        return isinstance(exc, KeyboardInterrupt) and self.pressed


@dataclass
class Loaded:
    """One entry point's object, or why it could not be loaded."""

    name: str
    source: str  # the distribution that provides it ("agentmm" for the built-ins)
    value: Any = None
    problem: str | None = None


def load_entry_points(group: str) -> Iterator[Loaded]:
    """Every entry point of ``group``, loaded, sorted by name; failures carry their problem."""
    try:
        eps = importlib.metadata.entry_points(group=group)
    except Exception as exc:  # broken metadata of some unrelated distribution
        yield Loaded("?", "?", problem=f"entry points: {describe(exc)}")
        return
    for ep in sorted(eps, key=lambda e: e.name):
        source = ep.dist.name if ep.dist is not None else "?"
        with CtrlC() as ctrl_c:
            try:
                loaded = Loaded(ep.name, source, value=ep.load())
            except BaseException as exc:  # third-party code: report it, never crash (SystemExit included)
                if ctrl_c.by_user(exc):
                    raise
                loaded = Loaded(ep.name, source, problem=f"{ep.name} ({ep.value}, from {source}): {describe(exc)}")
        yield loaded


def needs_approval(tool: BaseTool, approve: Collection[str] = ()) -> bool:
    """Whether a call must be allowed by the user first: its author marked it
    (``metadata={"requires_approval": True}``) or the user listed it (``approve_tools``)."""
    return tool.name in approve or bool((tool.metadata or {}).get("requires_approval"))


def enabled_tools(settings: Settings, runtime: Runtime | None = None) -> list[BaseTool]:
    """The tools the settings enable (``tools``), found among every source and built for
    ``settings`` and ``runtime`` (``build_tools``); an unknown name is a ``ToolNotFoundError``."""
    if not settings.tools:
        return []
    catalog = discover_tools(settings.tools_dir, settings=settings, runtime=runtime)
    return build_tools(catalog.select(settings.tools), settings, runtime)


def build_tools(tools: Sequence[BaseTool], settings: Settings, runtime: Runtime | None = None) -> list[BaseTool]:
    """``tools`` with each one that names its factory (``metadata[FACTORY_KEY]``) built again by
    it for ``settings`` and ``runtime``, carrying what the original's author set on it (errors
    handled, approval metadata, tags); every other tool is kept as it is."""
    built = []
    for tool in tools:
        path = (tool.metadata or {}).get(FACTORY_KEY)
        if not isinstance(path, str):
            built.append(tool)
            continue
        module, _, name = path.partition(":")
        made = getattr(importlib.import_module(module), name)(settings, runtime)
        made.handle_tool_error = tool.handle_tool_error
        made.metadata = {**(made.metadata or {}), **(tool.metadata or {})}
        made.tags = list(tool.tags) if tool.tags else None
        built.append(made)
    return built


@dataclass
class ToolInfo:
    tool: BaseTool
    source: str  # "agentmm" (built-in), a distribution name, or a file in the tools folder

    @property
    def name(self) -> str:
        return self.tool.name

    @property
    def requires_approval(self) -> bool:
        return needs_approval(self.tool)


@dataclass
class ToolCatalog:
    """Every tool found, by name; the plugins that could not be used (``failures``), and the
    tools a later source replaced (``notes``: the later one is used, nothing failed)."""

    tools: dict[str, ToolInfo] = field(default_factory=dict)
    # What a tool factory is called with (settings: the process's when not given).
    settings: Settings | None = None
    runtime: Runtime | None = None
    # Each failure and note as it was found: (is it a note, its line).
    _reported: list[tuple[bool, str]] = field(default_factory=list, init=False, repr=False)

    @property
    def failures(self) -> list[str]:
        return [line for note, line in self._reported if not note]

    @property
    def notes(self) -> list[str]:
        return [line for note, line in self._reported if note]

    @property
    def problems(self) -> list[str]:
        """Failures and notes together, in the order found: what ``agentmm tools list`` reports
        (its ``--json`` key ``problems``)."""
        return [line for _, line in self._reported]

    def fail(self, line: str) -> None:
        """Report a plugin (a file, an entry point, a factory, a tool) that could not be used."""
        self._reported.append((False, line))

    def add(self, tool: Any, source: str, where: str) -> None:
        if is_tool_factory(tool):
            try:
                made = tool(self._settings(), self.runtime)
            except Exception as exc:  # third-party code: report it, never crash
                self.fail(f"{where}: {describe(exc)}")
                return
            for each in made if isinstance(made, list | tuple) else [made]:
                self.add(each, source, where)
            return
        try:
            checked = check_tool(tool)
        except (TypeError, ValueError) as exc:
            self.fail(f"{where}: {describe(exc)}")
            return
        if (before := self.tools.get(checked.name)) is not None:  # later sources override earlier ones
            self._reported.append((True, f"{before.source}'s tool {checked.name!r} is not used: {where} replaces it"))
        self.tools[checked.name] = ToolInfo(checked, source)

    def _settings(self) -> Settings:
        if self.settings is None:
            from agentmm.settings import load_settings

            self.settings = load_settings()
        return self.settings

    def select(self, names: Iterable[str]) -> list[BaseTool]:
        """The named tools, in order; an unknown name is a ``ToolNotFoundError``."""
        chosen = []
        for name in names:
            info = self.tools.get(name)
            if info is None:
                known = ", ".join(sorted(self.tools)) or "none"
                failed = sorted({_file_of(p) for p in self.failures})
                more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
                why = (
                    f"; it may be in a tool file that could not be loaded: {', '.join(failed[:3])}{more}"
                    if failed
                    else ""
                )
                raise ToolNotFoundError(f"unknown tool {name!r} (found: {known}){why}", see=SEE_TOOLS)
            chosen.append(info.tool)
        return chosen


def _file_of(problem: str) -> str:
    """The file (or plugin) a catalog failure is about: ``/t/a.py: SyntaxError`` and
    ``/t/a.py:tool: ...`` are both about ``/t/a.py``."""
    where = problem.split(": ", 1)[0]
    cut = where.find(".py:")
    return where[: cut + 3] if cut >= 0 else where


def check_tool(obj: Any) -> BaseTool:
    """A LangChain tool with a usable name and JSON schema (a plain function is wrapped)."""
    from langchain_core.tools import BaseTool, tool
    from langchain_core.utils.function_calling import convert_to_openai_tool

    if not isinstance(obj, BaseTool):
        if not callable(obj):
            raise TypeError(f"gave a {type(obj).__name__}; expected a LangChain tool or a function")
        obj = tool(obj)
    if not TOOL_NAME.match(obj.name):
        raise ValueError(f"tool name {obj.name!r} must be 1-64 letters, digits, '_' or '-'")
    try:
        schema = convert_to_openai_tool(obj)
    except Exception as exc:  # LangChain raises several kinds on schemas it cannot convert
        raise ValueError(f"tool {obj.name!r} has an invalid schema: {describe(exc)}") from exc
    _check_constrainable(schema)
    return obj


def _check_constrainable(schema: dict[str, Any]) -> None:
    """The local model constrains arguments with a grammar from the schema: check it converts."""
    from agentmm.tool_calling import check_schema

    if importlib.util.find_spec("llama_cpp") is not None:
        check_schema(schema)


def discover_tools(
    tools_dir: Path | None = None,
    *,
    entry_points: bool = True,
    settings: Settings | None = None,
    runtime: Runtime | None = None,
) -> ToolCatalog:
    """Built-ins and ``agentmm.tools`` entry points, then the ``*.py`` files of ``tools_dir``;
    tool factories among them are called with ``settings`` (default: the process's) and
    ``runtime``."""
    catalog = ToolCatalog(settings=settings, runtime=runtime)
    if entry_points:
        for loaded in load_entry_points(TOOLS_GROUP):
            if loaded.problem is not None:
                catalog.fail(loaded.problem)
                continue
            for item in loaded.value if isinstance(loaded.value, list | tuple) else [loaded.value]:
                catalog.add(item, loaded.source, f"{loaded.name} (from {loaded.source})")
    if tools_dir is not None and tools_dir.is_dir():
        for path in sorted(tools_dir.glob("*.py")):
            with CtrlC() as ctrl_c:
                try:
                    found = tools_in_file(path)
                except BaseException as exc:  # a user's file: report it, never crash
                    if ctrl_c.by_user(exc):
                        raise
                    catalog.fail(f"{path}: {describe(exc)}")
                    continue
            for item in found:
                catalog.add(item, str(path), f"{path}:{getattr(item, 'name', '?')}")
    return catalog


def tools_in_file(path: Path) -> list[Any]:
    """The LangChain tools and tool factories a Python file defines at module level (``__all__``
    if it has one)."""
    from langchain_core.tools import BaseTool

    module_name = f"agentmm_user_tools.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    return [obj for n in names if isinstance(obj := getattr(module, n, None), BaseTool) or is_tool_factory(obj)]
