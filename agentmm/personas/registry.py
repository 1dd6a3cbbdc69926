"""Finding personas: built-ins, the user's personas folder, and plugin entry points.

Later sources override earlier ones by name: built-ins, then ``agentmm.personas`` entry
points, then the user's folder, so a user can shadow any persona by saving their own copy.
Built-ins ship as TOML in ``agentmm/personas_data`` and load like any user file.

A broken file or plugin never takes the registry down: it is reported as one line in
``registry.problems`` and skipped, because one bad card in a folder of fifty should not stop
anyone from chatting with the other forty-nine. A file that loads but only in part (a card
PNG whose ``ccv3`` chunk is damaged, read from its ``chara`` chunk) is kept and reported in
``registry.notes``.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import importlib.metadata
import importlib.resources
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agentmm.console_text import shown_name
from agentmm.errors import Hint
from agentmm.personas import toml_format
from agentmm.personas.cards import DEFAULT_LIMITS, Limits, detect_spec
from agentmm.personas.errors import PersonaError, PersonaNotFoundError
from agentmm.personas.files import (
    PERSONA_SUFFIXES,
    ExportFormat,
    FileKind,
    atomic_write,
    export,
    held_name,
    import_file,
    persona_file,
    read_limited,
    read_persona,
    render,
    slug,
    validate,
)
from agentmm.personas.model import Persona
from agentmm.personas.worldinfo import load_world_info, with_world_info

ENTRY_POINT_GROUP = "agentmm.personas"
BUILTIN_PACKAGE = "agentmm.personas_data"
_KIND_SUFFIX = {"png": ".png", "json": ".json", "toml": ".toml"}
# atomic_write renames its temporary file over a persona within milliseconds: one this old
# was left by a process killed before the rename.
DEAD_WRITE_S = 60.0

__all__ = ["PersonaRegistry", "export", "import_file", "validate"]


def _describe(exc: BaseException) -> str:
    """One line for a problem: our own errors already say what and where."""
    if isinstance(exc, PersonaError):
        return str(exc)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _problem(where: str, exc: BaseException) -> str:
    """One line naming ``where`` once: most of our errors already start with the file."""
    text = _describe(exc)
    return text if text.startswith(f"{where}: ") else f"{where}: {text}"


class PersonaRegistry:
    """All personas this installation can play, looked up by name (case-insensitive), by
    file stem, by slug (``ilse-varga``) or by a V3 card's nickname. Loads lazily on first use;
    ``reload`` rescans. ``personas`` (and ``add``) are played as they are, from Python, with
    no file: they win over a file's persona of the same name."""

    def __init__(
        self,
        user_dir: str | os.PathLike[str] | None = None,
        *,
        builtins: bool = True,
        entry_points: bool = True,
        limits: Limits = DEFAULT_LIMITS,
        personas: Sequence[Persona] = (),
    ) -> None:
        self.user_dir = Path(user_dir) if user_dir is not None else None
        self._given: list[Persona] = []
        for persona in personas:
            self.add(persona)
        self.builtins = builtins
        self.entry_points = entry_points
        self.limits = limits
        self.problems: list[str] = []
        self.notes: list[str] = []
        self._personas: dict[str, Persona] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = False

    # -- loading ---------------------------------------------------------------------------

    def reload(self) -> None:
        """Scan every source again (after files were added, edited or removed)."""
        self.problems = []
        found: list[tuple[Persona, str, list[str]]] = []  # persona, source kind, aliases
        if self.builtins:
            found += [(p, "builtin", a) for p, a in self._load_builtins()]
        if self.entry_points:
            found += [(p, "entrypoint", a) for p, a in self._load_entry_points()]
        if self.user_dir is not None:
            found += [(p, "user", a) for p, a in self._load_user_dir()]
        found += [(p, "given", []) for p in self._given]

        personas: dict[str, tuple[Persona, str, list[str]]] = {}
        for persona, kind, aliases in found:
            key = persona.name.casefold().strip()
            previous = personas.get(key)
            if previous is not None and previous[1] == kind:
                self.problems.append(
                    f"{persona.source}: duplicate persona name {shown_name(persona.name)} "
                    f"(also in {previous[0].source}); keeping the first"
                )
                continue
            personas[key] = (persona, kind, aliases)
        self._personas = {k: v[0] for k, v in personas.items()}
        self.notes = [note for persona in self._personas.values() for note in persona.notes]
        self._aliases = {}
        for key, (persona, _, aliases) in personas.items():
            for alias in (slug(persona.name), persona.nickname, *aliases):
                alias = alias.casefold().strip()
                if alias and alias not in self._personas:
                    self._aliases.setdefault(alias, key)
        self._loaded = True

    def _ensure(self) -> None:
        if not self._loaded:
            self.reload()

    def add(self, persona: Persona) -> Persona:
        """Play ``persona`` (built in Python) as if installed; one of the same name given before
        is replaced. Not written anywhere: it lasts as long as this registry."""
        if not isinstance(persona, Persona):
            raise PersonaError(f"add takes a Persona, not {type(persona).__name__}")
        persona = persona if persona.source else persona.model_copy(update={"source": "given"})
        key = persona.name.casefold().strip()
        self._given = [p for p in self._given if p.name.casefold().strip() != key] + [persona]
        self._loaded = False
        return persona

    def _load_builtins(self) -> Iterator[tuple[Persona, list[str]]]:
        try:
            files = sorted(importlib.resources.files(BUILTIN_PACKAGE).iterdir(), key=lambda f: f.name)
        except (ModuleNotFoundError, OSError) as exc:
            self.problems.append(f"built-in personas: {_describe(exc)}")
            return
        for item in files:
            if not item.name.endswith(".toml"):
                continue
            where = f"builtin:{item.name}"
            try:
                persona = toml_format.loads(item.read_text("utf-8"), where=where, source=where)
            except Exception as exc:  # a packaging mistake must not stop the others
                self.problems.append(_problem(where, exc))
                continue
            yield persona, [item.name.rsplit(".", 1)[0]]

    def _load_entry_points(self) -> Iterator[tuple[Persona, list[str]]]:
        from agentmm.plugins import PERSONAS_GROUP, load_entry_points

        for loaded in load_entry_points(PERSONAS_GROUP):
            if loaded.problem is not None:
                self.problems.append(f"entrypoint:{loaded.problem}")
                continue
            where = f"entrypoint:{loaded.name}"
            try:
                personas = self._resolve(loaded.value, where, depth=0)
            except Exception as exc:  # plugins are third-party code: report, never crash
                self.problems.append(_problem(where, exc))
                continue
            for persona in personas:
                yield persona, [loaded.name] if len(personas) == 1 else []

    def _resolve(self, obj: Any, where: str, depth: int) -> list[Persona]:
        """An entry point's object -> personas: a Persona, a path (file or folder), a callable
        returning either, or a list of them."""
        if depth > 3:
            raise PersonaError(f"{where}: entry point nests callables or lists too deeply")
        if isinstance(obj, Persona):
            return [obj if obj.source else obj.model_copy(update={"source": where})]
        if isinstance(obj, str | os.PathLike):
            path = Path(obj)
            if path.is_dir():
                return [p for p, _ in self._load_folder(path, where)]
            return [import_file(path, source=f"{where}:{path}", limits=self.limits)]
        if isinstance(obj, list | tuple):
            return [p for item in obj for p in self._resolve(item, where, depth + 1)]
        if callable(obj):
            return self._resolve(obj(), where, depth + 1)
        raise PersonaError(
            f"{where}: entry point gave a {type(obj).__name__}; expected a Persona, a path, or a callable returning one"
        )

    def _load_user_dir(self) -> Iterator[tuple[Persona, list[str]]]:
        assert self.user_dir is not None
        if not self.user_dir.exists():
            return
        if not self.user_dir.is_dir():
            self.problems.append(f"{self.user_dir}: personas folder is not a directory")
            return
        yield from self._load_folder(self.user_dir, "user")

    def _load_folder(self, folder: Path, kind: str) -> Iterator[tuple[Persona, list[str]]]:
        try:
            files = sorted(
                p
                for p in folder.iterdir()
                if p.suffix.lower() in PERSONA_SUFFIXES and not p.name.startswith(".") and p.is_file()
            )
        except OSError as exc:
            self.problems.append(f"{folder}: cannot list ({exc.strerror or exc})")
            return
        for path in files:
            try:
                persona = import_file(path, source=f"{kind}:{path}", limits=self.limits)
            except Exception as exc:  # one bad file must not hide the others
                self.problems.append(_problem(str(path), exc))
                continue
            yield persona, [path.stem]

    # -- lookup ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Persona]:
        self._ensure()
        return iter(sorted(self._personas.values(), key=lambda p: p.name.casefold()))

    def __len__(self) -> int:
        self._ensure()
        return len(self._personas)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def names(self) -> list[str]:
        """Every persona's name, sorted."""
        return [p.name for p in self]

    def find(self, name: str) -> Persona | None:
        """The persona called ``name`` (or with that file stem / slug), or None."""
        self._ensure()
        key = name.casefold().strip()
        if key in self._personas:
            return self._personas[key]
        alias = self._aliases.get(key) or self._aliases.get(slug(name))
        return self._personas[alias] if alias else None

    def known_as(self, name: str | None) -> str | None:
        """``name`` as an installed persona calls itself ("nora quill" and "nora" are Nora
        Quill, as ``resolve`` reads them), the name its memories are kept under; a name no
        persona has now (one deleted since) as it is given. A first name several share is
        ``resolve``'s error, naming them."""
        if not name:
            return name
        found = self.find(name)
        return found.name if found is not None else self._meant(name) or name

    def resolve(self, name: str) -> Persona:
        """The persona a person means by ``name``, as ``chat -p`` and ``/persona`` read it: by
        name, file stem, slug or nickname, else by a first word or the start of one name ("nora"
        is Nora Quill). A word several names share is refused, naming them; no match is
        ``get``'s error."""
        found = self.find(name)
        if found is not None:
            return found
        return self.get(self._meant(name) or name)

    def _meant(self, name: str) -> str | None:
        """The one persona name ``name`` is the first word or the start of; None for none;
        ``PersonaNotFoundError`` naming them when several are."""
        folded = " ".join(name.casefold().split())
        close = [n for n in self.names() if folded and (n.casefold().startswith(folded)
                 or folded in (w.casefold() for w in n.split()))]  # fmt: skip
        if len(close) > 1:
            raise PersonaNotFoundError(f"{shown_name(name)} could be {_either(close)}: give more of the name")
        return close[0] if close else None

    def get(self, name: str) -> Persona:
        """Like ``find`` but raises PersonaNotFoundError, suggesting close names."""
        persona = self.find(name)
        if persona is not None:
            return persona
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(shown_name, close))}?" if close else ""
        known = f"known: {', '.join(names)}" if names and not close and len(names) <= 12 else ""
        see = Hint(known, known) if known else None
        raise PersonaNotFoundError(f"no persona named {shown_name(name)}{hint}", see=see)

    # -- changing the user folder -------------------------------------------------------

    def _user_folder(self) -> Path:
        if self.user_dir is None:
            raise PersonaError("no user personas folder is configured")
        return self.user_dir

    def install(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Persona:
        """Copy a persona file (validated first, format kept) into the user folder."""
        return self.install_with_worlds(path, (), overwrite=overwrite)[0]

    def install_with_worlds(
        self, path: str | os.PathLike[str], worlds: Sequence[str | os.PathLike[str]], *, overwrite: bool = False
    ) -> tuple[Persona, list[str]]:
        """``install``, with each world-info file's entries added to the persona's lorebook.

        The file is rewritten in its own format (a PNG card stays a PNG with its image, a V3
        card stays V3); without worlds it is copied byte for byte. Returns the installed
        persona and what a TOML persona could not keep of the worlds' entries
        (``toml_format.not_kept``), empty for cards, which keep everything.
        """
        src = Path(path)
        data = read_limited(src, self.limits)
        persona, kind = read_persona(data, where=str(src), limits=self.limits)
        lost: list[str] = []
        if worlds:
            books = [load_world_info(world, limits=self.limits) for world in worlds]
            persona = with_world_info(persona, books)
            data = render(persona, _written_format(persona, kind))
            lost = toml_format.not_kept(persona) if kind == "toml" else []
        self._install_bytes(data, persona.name, kind, overwrite)
        return self.get(persona.name), lost

    def _install_bytes(self, data: bytes, name: str, kind: FileKind, overwrite: bool) -> None:
        dest = persona_file(self._user_folder(), name, _KIND_SUFFIX[kind], limits=self.limits)
        self._write(dest, data, name, overwrite)
        self.reload()

    def _write(self, dest: Path, data: bytes, name: str, overwrite: bool) -> None:
        """Write the persona ``name`` to ``dest`` (``persona_file``'s: a file of another persona
        is never it); without ``overwrite``, refuse if a persona of that name is installed (in
        any format) or ``dest`` is taken. With it, the file the name was in goes, once the new
        one is whole (never neither)."""
        replaced = self._installed_file(name)
        if not overwrite:
            if replaced is not None:
                raise PersonaError(f"{shown_name(name)} is already installed ({replaced}); --force replaces it")
            if dest.exists():
                held = held_name(dest, limits=self.limits)
                there = f"persona {shown_name(held)}" if held is not None else "a file that is no persona"
                raise PersonaError(f"{dest}: already exists (it holds {there}); --force replaces it")
        _sweep_dead_writes(dest)
        atomic_write(dest, data)
        if replaced is not None and replaced != dest:
            replaced.unlink(missing_ok=True)

    def _installed_file(self, name: str) -> Path | None:
        """The user-folder file that holds a persona of this name (any format), if one does."""
        self._ensure()
        persona = self._personas.get(name.casefold().strip())
        prefix = "user:"
        if persona is None or not persona.source.startswith(prefix):
            return None
        return Path(persona.source.removeprefix(prefix))

    def create(self, name: str, *, overwrite: bool = False) -> Path:
        """Write a commented template for a new persona into the user folder."""
        if not name.strip():
            raise PersonaError("a persona needs a name")
        dest = persona_file(self._user_folder(), name.strip(), ".toml", limits=self.limits)
        self._write(dest, toml_format.template(name).encode("utf-8"), name.strip(), overwrite)
        self._loaded = False
        return dest


def _written_format(persona: Persona, kind: FileKind) -> ExportFormat:
    """The export format that keeps a persona file's kind (and a card's spec)."""
    if kind != "json":
        return "png" if kind == "png" else "toml"
    return "card-v3" if persona.card is not None and detect_spec(persona.card) == "v3" else "card-v2"


def _either(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}"


def _sweep_dead_writes(dest: Path) -> None:
    """Delete the temporary files killed writes of personas left in ``dest``'s folder
    (``atomic_write``'s ``.NAME.*.tmp``, older than ``DEAD_WRITE_S``) before writing another.
    The registry never reads them, but each import killed mid-write left one for good
    (benchmarks/soak.py: 2 in 15 killed imports)."""
    cutoff = time.time() - DEAD_WRITE_S
    for suffix in PERSONA_SUFFIXES:
        for leftover in dest.parent.glob(f".*{glob.escape(suffix)}.*.tmp"):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()


def persona_summary(persona: Persona) -> dict[str, Any]:
    """A persona in one line's worth of fields, as ``personas list --json`` (and the HTTP API)
    give it."""
    from agentmm.personas.macros import expand

    description = expand(persona.description, char=persona.display_name, user="you")
    return {
        "name": persona.name,
        "source": persona.source,
        "description": " ".join(description.split())[:200],
        "greetings": len(persona.greetings),
        "lore_entries": len(persona.lorebook.entries),
        "allowed_tools": persona.allowed_tools,
        "tags": persona.tags,
    }
