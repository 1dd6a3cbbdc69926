"""Persona files on disk: import (sniffing the real format), export, validate.

Formats are told apart by content, not by name: people rename files, and a card saved as
``.json`` by one tool is ``.png`` from another. Writes are atomic (temp file in the target
directory, then ``os.replace``), so a crash or a full disk never leaves half a persona behind.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agentmm.console_text import shown_name, shown_path
from agentmm.fileio import atomic_write as write_file_atomically
from agentmm.fileio import os_errors
from agentmm.personas import toml_format
from agentmm.personas._fields import size_text
from agentmm.personas.cards import (
    DEFAULT_LIMITS,
    Limits,
    card_from_persona,
    detect_spec,
    dumps_card,
    load_card_json,
)
from agentmm.personas.character_book import lenient_notes
from agentmm.personas.decorators import parse_decorators
from agentmm.personas.errors import (
    CardTooLargeError,
    NotAPNGError,
    PersonaError,
    PersonaNotFoundError,
    UnknownFormatError,
    UnsupportedExportError,
)
from agentmm.personas.lorebook import regex_key_error
from agentmm.personas.macros import unsupported
from agentmm.personas.model import Persona
from agentmm.personas.png import PNG_SIGNATURE, embed_cards, load_card_png, placeholder_png, sniff_kind

ExportFormat = Literal["toml", "card-v2", "card-v3", "png"]
EXPORT_FORMATS: dict[str, str] = {"toml": ".toml", "card-v2": ".json", "card-v3": ".json", "png": ".png"}
FileKind = Literal["png", "json", "toml"]
PERSONA_SUFFIXES = (".toml", ".json", ".png")
_IMAGE_KINDS = ("JPEG image", "WebP image", "GIF image")
# UTF-32 first: its little-endian mark starts with UTF-16's. Python's codecs read the mark.
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_BLANK = b"\xef\xbb\xbf \t\r\n"


def slug(name: str) -> str:
    """A file-name-safe form of a persona name: ``Ilse Varga`` -> ``ilse-varga``.

    A name with no letter or digit ("🐉", "???") gets ``persona-`` and a digest of the name,
    so two such names never share a file or answer to each other's lookups.
    """
    words = re.sub(r"[^\w]+", "-", name.casefold()).strip("-_")
    return words or "persona-" + hashlib.blake2b(name.strip().encode(), digest_size=4).hexdigest()


def persona_file(folder: Path, name: str, suffix: str, *, limits: Limits = DEFAULT_LIMITS) -> Path:
    """The file in ``folder`` that the persona ``name`` is written to (``import``, ``new``,
    ``export`` to a folder): ``<slug><suffix>``, unless a file of that stem (any persona format)
    holds a persona of another name, or one that does not load, then ``<slug>-<digest><suffix>``.

    Two names can share a slug (``a/b\\c`` and ``a-b-c``): writing one over the other's file lost
    that persona, ``--force`` or not. So a file is only ever written over when it holds the same
    persona (names compared as the registry compares them: case-insensitive, trimmed), and each
    stem names one persona. ``PersonaError`` naming what is there when both forms are taken.
    """
    key = name.casefold().strip()
    base = slug(name)
    digest = hashlib.blake2b(key.encode(), digest_size=4).hexdigest()
    taken: list[str] = []
    for stem in (base, f"{base}-{digest}"):
        others = [
            f"{shown_path(path)} holds {shown_name(held) if held is not None else 'a file that is no persona'}"
            for path in _files_of_stem(folder, stem)
            if (held := held_name(path, limits=limits)) is None or held.casefold().strip() != key
        ]
        if not others:
            return folder / (stem + suffix)
        taken += others
    raise PersonaError(f"no file name is free for {shown_name(name.strip())}: {'; '.join(taken)}")


def held_name(path: Path, *, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """The name of the persona in ``path``; None when it does not load as one."""
    try:
        return import_file(path, limits=limits).name
    except Exception:  # as the registry reads a folder: a file that does not load is no persona
        return None


def _files_of_stem(folder: Path, stem: str) -> list[Path]:
    """The persona files in ``folder`` the registry reads under ``stem`` (any format, any case
    of the file name: a case-insensitive disk has one file for both)."""
    try:
        entries = list(folder.iterdir())
    except OSError:  # no folder yet (the write makes it), or one the write will report
        return []
    return [
        p
        for p in entries
        if p.stem.casefold() == stem
        and p.suffix.lower() in PERSONA_SUFFIXES
        and not p.name.startswith(".")
        and p.is_file()
    ]


def as_utf8(data: bytes, where: str = "file") -> bytes:
    """Text saved as UTF-16 or UTF-32 with a byte order mark (Windows tools write cards so)
    as UTF-8; any other bytes as they are."""
    codec = next((name for bom, name in _WIDE_BOMS if data.startswith(bom)), None)
    if codec is None:
        return data
    try:
        return data.decode(codec).encode("utf-8")
    except UnicodeError:
        name = codec.upper()
        raise UnknownFormatError(
            f"{where}: starts like {name} text (byte order mark) but is not valid {name}"
        ) from None


def sniff(data: bytes, where: str = "file") -> FileKind:
    """Which persona format some bytes are, from their content."""
    return _kind_and_text(data, where)[0]


def _kind_and_text(data: bytes, where: str) -> tuple[FileKind, bytes]:
    """Which persona format some bytes are, and the bytes to read it from: a card's text as
    UTF-8 (a UTF-16 or UTF-32 one decoded here, once), a PNG's bytes as they are."""
    if data.startswith(PNG_SIGNATURE):
        return "png", data
    data = as_utf8(data, where)
    if not data.strip(_BLANK):  # else an empty .json reads as TOML: "missing field 'name'"
        error = NotAPNGError if where.lower().endswith(".png") else UnknownFormatError
        raise error(f"{where}: the file is empty")
    kind = sniff_kind(data)
    if kind in _IMAGE_KINDS:
        raise NotAPNGError(f"{where}: it is a {kind}; character card images must be PNG")
    if kind == "JSON text" or data.lstrip(_BLANK).startswith(b"{"):
        return "json", data
    if b"\0" in data[:4096]:
        if where.lower().endswith(".png"):
            raise NotAPNGError(f"{where}: not a PNG image (it is {kind})")
        raise UnknownFormatError(f"{where}: not a persona file (TOML, card JSON or card PNG); it is {kind}")
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if where.lower().endswith(".png"):
            raise NotAPNGError(f"{where}: not a PNG image (it is {kind})") from None
        raise UnknownFormatError(f"{where}: not a persona file (not UTF-8 text, JSON or PNG)") from None
    if where.lower().endswith(".png"):
        raise NotAPNGError(f"{where}: not a PNG image (it is text)")
    return "toml", data


def read_limited(path: Path, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """A file's bytes, refusing files over the size cap before reading them."""
    with os_errors(missing=lambda: PersonaNotFoundError(f"{path}: no such file"),
                   folder=lambda: PersonaError(f"{path}: is a directory, not a persona file"),
                   other=lambda why: PersonaError(f"{path}: cannot read ({why})")):  # fmt: skip
        size = path.stat().st_size
        if size > limits.max_file_bytes:
            raise CardTooLargeError(
                f"{path}: file is {size_text(size)}, over the {size_text(limits.max_file_bytes)} limit"
            )
        return path.read_bytes()


def import_bytes(data: bytes, *, where: str = "persona", source: str = "", limits: Limits = DEFAULT_LIMITS) -> Persona:
    """Bytes of a persona TOML, card JSON or card PNG -> Persona."""
    return read_persona(data, where=where, source=source, limits=limits)[0]


def read_persona(
    data: bytes, *, where: str = "persona", source: str = "", limits: Limits = DEFAULT_LIMITS
) -> tuple[Persona, FileKind]:
    """``import_bytes``, and which format the bytes were in (``PersonaRegistry.install`` keeps it)."""
    kind, data = _kind_and_text(data, where)
    if kind == "png":
        return load_card_png(data, where=where, source=source, limits=limits), kind
    if kind == "json":
        return load_card_json(data, where=where, source=source, limits=limits), kind
    if len(data) > limits.max_card_bytes:
        raise CardTooLargeError(f"{where}: persona file is over the {size_text(limits.max_card_bytes)} limit")
    return toml_format.loads(data.decode("utf-8-sig"), where=where, source=source), kind


def import_file(path: str | os.PathLike[str], *, source: str | None = None, limits: Limits = DEFAULT_LIMITS) -> Persona:
    """Read a persona from a TOML, card JSON (V1/V2/V3) or card PNG file."""
    p = Path(path)
    return import_bytes(read_limited(p, limits), where=str(p), source=source or str(p), limits=limits)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once or not at all (errors as ``PersonaError``)."""
    write_file_atomically(path, data, PersonaError)


def render(persona: Persona, format: ExportFormat, *, spec: Literal["v2", "v3"] | None = None) -> bytes:
    """The bytes ``export`` writes.

    For ``png``, ``spec`` None keeps the card's own spec (V1/V2 -> V2, V3 or native -> V3);
    V3 writes both a ``chara`` (V2) and a ``ccv3`` chunk, as SillyTavern does, so V2-only
    readers still see the card.
    """
    if format == "toml":
        return toml_format.dumps(persona).encode("utf-8")
    if format in ("card-v2", "card-v3"):
        card = card_from_persona(persona, "v2" if format == "card-v2" else "v3")
        return (dumps_card(card) + "\n").encode("utf-8")
    if format == "png":
        if spec is None:
            own = detect_spec(persona.card) if persona.card is not None else "v3"
            spec = "v3" if own == "v3" else "v2"
        cards = {"chara": card_from_persona(persona, "v2")}
        if spec == "v3":
            cards["ccv3"] = card_from_persona(persona, "v3")
        image = persona.image or placeholder_png(persona.name)
        return embed_cards(image, cards, where=f"{persona.name} image")
    choices = ", ".join(EXPORT_FORMATS)
    raise UnsupportedExportError(f"cannot export as {format!r}; choose one of {choices}")


def export(
    persona: Persona,
    format: ExportFormat,
    out_path: str | os.PathLike[str],
    *,
    spec: Literal["v2", "v3"] | None = None,
) -> Path:
    """Write ``persona`` as ``format`` to ``out_path`` (a directory gets ``<slug>.<ext>``, or
    ``persona_file``'s other name where that file holds another persona)."""
    if format not in EXPORT_FORMATS:
        choices = ", ".join(EXPORT_FORMATS)
        raise UnsupportedExportError(f"cannot export as {format!r}; choose one of {choices}")
    out = Path(out_path)
    if out.is_dir():
        out = persona_file(out, persona.name, EXPORT_FORMATS[format])
    atomic_write(out, render(persona, format, spec=spec))
    return out


async def aimport_file(
    path: str | os.PathLike[str], *, source: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> Persona:
    """``import_file`` in a worker thread, for async callers (file I/O and parsing)."""
    return await asyncio.to_thread(import_file, path, source=source, limits=limits)


async def aexport(
    persona: Persona,
    format: ExportFormat,
    out_path: str | os.PathLike[str],
    *,
    spec: Literal["v2", "v3"] | None = None,
) -> Path:
    """``export`` in a worker thread, for async callers."""
    return await asyncio.to_thread(export, persona, format, out_path, spec=spec)


def lint(persona: Persona) -> list[str]:
    """Things that load but will not work as the author probably meant."""
    return [line for line, _ in _lint(persona)]


def _lint(persona: Persona) -> list[tuple[str, bool]]:
    """``lint``'s lines, each with whether it is only a warning: a field read as SillyTavern reads
    it (``enabled: "yes"``, a timed effect that is no number of messages), a SillyTavern macro or
    decorator agentmm leaves as written or out, where the card still works as it does in SillyTavern.
    The rest (an entry that never fires, a regex that cannot run...) are problems."""
    lines = [(line, False) for line in _problems(persona)]
    for i, entry in enumerate(persona.lorebook.entries):
        label = entry.label or f"#{i}"
        lines.extend((f"lorebook entry {label!r}: {note}", True) for note in lenient_notes(entry.raw))
        for name in dict.fromkeys(parse_decorators(entry.content).unknown):
            lines.append((f"lorebook entry {label!r}: decorator {name} is not supported (its line is left out)", True))
    lines.extend((line, True) for line in _unsupported_macros(persona))
    return lines


def _problems(persona: Persona) -> list[str]:
    problems = []
    if not persona.description.strip() and not persona.personality.strip():
        problems.append("no description or personality: the model has nothing to play")
    if not persona.greetings:
        problems.append("no greeting: a new chat starts with the user speaking first")
    for i, entry in enumerate(persona.lorebook.entries):
        label = entry.label or f"#{i}"
        if not entry.constant and not any(k.strip() for k in entry.keys):
            problems.append(f"lorebook entry {label!r} has no keys and is not constant: it never fires")
        if not entry.content.strip():
            problems.append(f"lorebook entry {label!r} has no content")
        if entry.chance == 0:
            problems.append(f"lorebook entry {label!r} has a 0% chance (probability = 0): it never goes in")
        for key in (*entry.keys, *entry.secondary_keys):
            if (error := regex_key_error(key.strip())) is not None:
                problems.append(f"lorebook entry {label!r}: key {key.strip()} is not a regex agentmm can run ({error})")
    return problems


def _unsupported_macros(persona: Persona) -> list[str]:
    """One line for each SillyTavern macro in the persona's prompt text that agentmm sends as
    written (``{{setvar}}``, ``{{lastMessage}}``...): the model would read it raw."""
    texts = {
        "description": persona.description,
        "personality": persona.personality,
        "scenario": persona.scenario,
        "example dialogue": persona.example_dialogue,
        "system prompt": persona.system_prompt,
        "post-history instructions": persona.post_history_instructions,
        **{f"greeting {i}": greeting for i, greeting in enumerate(persona.greetings)},
        **{f"lorebook entry {e.label or f'#{i}'!r}": e.content for i, e in enumerate(persona.lorebook.entries)},
    }
    return [
        f"{field}: macro {{{{{name}}}}} is not supported (the model reads it as written)"
        for field, text in texts.items()
        for name in unsupported(text)
    ]


def validate(path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Problems with a persona file, one line each (every one found, not only the first);
    empty when it is fine. Warnings too: ``validation`` tells them apart."""
    found = validation(path, limits=limits)
    return [*found.problems, *found.warnings]


@dataclass(frozen=True)
class Validation:
    """``personas validate``'s answer: ``problems`` (a file that does not load, or will not work
    as meant: exit 1) and ``warnings`` (read as SillyTavern reads it, or a SillyTavern feature
    agentmm leaves as written: the card works; exit 0)."""

    problems: list[str]
    warnings: list[str]


def validation(path: str | os.PathLike[str], *, limits: Limits = DEFAULT_LIMITS) -> Validation:
    """The problems and warnings of a persona file, one line each (every one found)."""
    try:
        persona = import_file(path, limits=limits)
    except PersonaError as exc:
        return Validation(list(exc.problems), [])
    lines = _lint(persona)
    problems = [f"{path}: {line}" for line, warning in lines if not warning]
    return Validation([*persona.notes, *problems], [f"{path}: {line}" for line, warning in lines if warning])
