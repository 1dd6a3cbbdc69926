"""Standalone lorebook files: SillyTavern world info JSON, or a bare ``character_book``.

SillyTavern keeps world info as ``{"entries": {"0": {"key": [...], "keysecondary": [...],
"content": ..., "order": ..., "disable": ..., ...}}}``. Each entry is translated to the
``character_book`` entry shape the way SillyTavern does when it embeds a world into a card
(its own settings go under ``extensions``), then read by the same code as card lorebooks,
so a world loaded here exports into a card exactly as SillyTavern would have written it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentmm.personas._fields import Reader, size_text
from agentmm.personas.cards import DEFAULT_LIMITS, Limits, parse_json_object
from agentmm.personas.character_book import book_from_raw
from agentmm.personas.errors import CardError, LorebookError
from agentmm.personas.model import Lorebook, LoreEntry, Persona

# SillyTavern world-info field -> character_book ``extensions`` field.
_ST_EXTENSIONS = {
    "position": "position",
    "excludeRecursion": "exclude_recursion",
    "preventRecursion": "prevent_recursion",
    "delayUntilRecursion": "delay_until_recursion",
    "displayIndex": "display_index",
    "probability": "probability",
    "useProbability": "useProbability",
    "depth": "depth",
    "selectiveLogic": "selectiveLogic",
    "group": "group",
    "groupOverride": "group_override",
    "groupWeight": "group_weight",
    "scanDepth": "scan_depth",
    "caseSensitive": "case_sensitive",
    "matchWholeWords": "match_whole_words",
    "useGroupScoring": "use_group_scoring",
    "automationId": "automation_id",
    "role": "role",
    "vectorized": "vectorized",
    "sticky": "sticky",
    "cooldown": "cooldown",
    "delay": "delay",
}


def _st_entry_to_card(st: Mapping[str, Any], where: str) -> dict[str, Any]:
    r = Reader(st, where, LorebookError)
    position = r.integer("position", default=0)
    out: dict[str, Any] = {
        "id": st.get("uid"),
        "keys": r.text_list("key"),
        "secondary_keys": r.text_list("keysecondary"),
        "comment": r.text("comment"),
        "content": r.text("content"),
        "constant": r.flag("constant"),
        "selective": r.flag("selective", default=True),
        "insertion_order": r.integer("order", default=100),
        "enabled": not r.flag("disable"),
        "position": "before_char" if position == 0 else "after_char",
        "extensions": {ext: st[k] for k, ext in _ST_EXTENSIONS.items() if k in st},
    }
    if out["id"] is None:
        del out["id"]
    return out


def world_info_to_book(obj: Mapping[str, Any], *, where: str = "world info", name: str = "") -> Lorebook:
    """A parsed world-info (or ``character_book``) object -> Lorebook."""
    entries = obj.get("entries")
    if isinstance(entries, dict):
        items = list(entries.values())
    elif isinstance(entries, list):
        items = entries
    else:
        raise LorebookError(f"{where}: not a lorebook (no 'entries' object or list)")
    if any(not isinstance(e, dict) for e in items):
        raise LorebookError(f"{where}: every entry must be an object")
    st_style = any("key" in e or "keysecondary" in e or "uid" in e for e in items)
    if st_style:
        cards = [_st_entry_to_card(e, f"{where} entry {i}") for i, e in enumerate(items)]
        raw = {"name": obj.get("name") or name, "entries": cards, "extensions": {}}
    else:
        raw = {**obj, "entries": items}
        if name and not raw.get("name"):
            raw["name"] = name
    try:
        return book_from_raw(raw, where)
    except CardError as exc:
        raise LorebookError(str(exc)) from None


def load_world_info(source: str | Path | bytes, *, limits: Limits = DEFAULT_LIMITS) -> Lorebook:
    """A world-info JSON file (path) or its bytes -> Lorebook, named after the file."""
    if isinstance(source, bytes):
        where, name, data = "world info", "", source
    else:
        path = Path(source)
        where, name = str(path), path.stem
        try:
            if path.stat().st_size > limits.max_card_bytes:
                raise LorebookError(f"{where}: file is over the {size_text(limits.max_card_bytes)} limit")
            data = path.read_bytes()
        except OSError as exc:
            raise LorebookError(f"{where}: cannot read ({exc.strerror or exc})") from None
    try:
        obj = parse_json_object(data, where=where, limits=limits, error=LorebookError)
    except CardError as exc:
        raise LorebookError(str(exc)) from None
    return world_info_to_book(obj, where=where, name=name)


def with_world_info(persona: Persona, books: Sequence[Lorebook]) -> Persona:
    """``persona`` with each world's entries added to its own lorebook, after its own.

    SillyTavern scans a character's embedded book and its linked worlds together; one book
    here does the same. The persona's book-level settings (scan depth, budget, recursion)
    stay when it has a book; a persona without one takes the first world's. A world entry
    whose id the persona's book (or an earlier world) already uses, or whose id is no
    non-negative integer (none, "abc", -3, 1.5: SillyTavern numbers its entries), gets the next
    free number, so exported cards keep one number per entry.
    """
    if not books:
        return persona
    own = persona.lorebook
    base = own if own != Lorebook() else books[0].model_copy(update={"entries": []})
    entries = list(own.entries)
    taken = {entry.id for entry in entries if entry.id is not None}
    for book in books:
        for entry in book.entries:
            if not _entry_number(entry) or entry.id in taken:
                entry = _renumbered(entry, taken)
            taken.add(entry.id)  # type: ignore[arg-type]
            entries.append(entry)
    return persona.model_copy(update={"lorebook": base.model_copy(update={"entries": entries})})


def _renumbered(entry: LoreEntry, taken: set[int | str]) -> LoreEntry:
    """``entry`` under the integer after the highest in ``taken`` (its raw dict too, as export
    reads it): world entries keep their order after the card's own."""
    free = max((i for i in taken if isinstance(i, int)), default=-1) + 1
    raw = {**entry.raw, "id": free} if entry.raw else entry.raw
    return entry.model_copy(update={"id": free, "raw": raw})


def _entry_number(entry: LoreEntry) -> bool:
    """Whether the entry's id is a number SillyTavern could have given it, in the raw card too
    (a raw 1.5 is read as no id): a non-negative integer."""
    ids = [entry.id, entry.raw.get("id", entry.id)]
    return all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
