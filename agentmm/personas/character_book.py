"""Lorebook <-> a card's ``character_book`` (V2/V3), SillyTavern's extension fields included.

Entries keep their raw dict (``LoreEntry.raw``) and export overlays only changed values on
it, so unknown entry fields and other apps' ``extensions`` survive a round trip. Settings
agentmm adds (selective logic, whole-word matching, recursion guards) are read from and
written to the places SillyTavern uses under ``extensions``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from agentmm.personas._fields import MISSING, CardPath, Reader, describe_validation_errors, overlay
from agentmm.personas.errors import CardSpecError
from agentmm.personas.model import Lorebook, LoreEntry

_LOGIC_FROM_ST = {0: "and_any", 1: "not_all", 2: "not_any", 3: "and_all"}
_LOGIC_TO_ST = {v: k for k, v in _LOGIC_FROM_ST.items()}
ENTRY_REQUIRED: tuple[CardPath, ...] = (
    ("keys",),
    ("content",),
    ("enabled",),
    ("insertion_order",),
)
BOOK_REQUIRED: tuple[CardPath, ...] = ()


def entry_from_raw(raw: Mapping[str, Any], where: str, problems: list[str] | None = None) -> LoreEntry:
    """One ``character_book`` entry -> LoreEntry (SillyTavern's extension fields included); a
    bad field raises, or is added to ``problems`` when given."""
    r = Reader(raw, where, CardSpecError, problems)
    position = r.get(("position",))
    if position not in ("before_char", "after_char"):
        position = "after_char" if r.integer("extensions", "position", default=0) == 1 else None
    case = r.get(("case_sensitive",))
    case_sensitive = (
        r.flag("case_sensitive") if case is not MISSING and case is not None else r.flag("extensions", "case_sensitive")
    )
    entry_id = raw.get("id")
    fields = {
        "keys": r.text_list("keys"),
        "secondary_keys": r.text_list("secondary_keys"),
        "selective": r.flag("selective"),
        "selective_logic": _LOGIC_FROM_ST.get(r.integer("extensions", "selectiveLogic", default=0) or 0, "and_any"),
        "content": r.text("content"),
        "name": r.text("name"),
        "comment": r.text("comment"),
        "id": entry_id if isinstance(entry_id, int | str) and not isinstance(entry_id, bool) else None,
        "enabled": _enabled(raw.get("enabled", MISSING)),
        "constant": r.flag("constant"),
        "case_sensitive": case_sensitive,
        "match_whole_words": r.flag("extensions", "match_whole_words"),
        "use_regex": r.flag("use_regex"),
        "insertion_order": r.integer("insertion_order", default=100),
        "priority": _priority(raw, where),
        "position": position or "before_char",
        "scan_depth": _non_negative(r.integer("extensions", "scan_depth")),
        "exclude_recursion": r.flag("extensions", "exclude_recursion"),
        "prevent_recursion": r.flag("extensions", "prevent_recursion"),
        # SillyTavern's delayUntilRecursion: true, or a recursion level (a number); any level
        # is read as "in a recursion pass" (the number itself stays in the raw entry).
        "delay_until_recursion": r.flag("extensions", "delay_until_recursion"),
        # SillyTavern clamps "trigger %" to 0..100 and takes a missing useProbability as true.
        "probability": min(100, max(0, r.integer("extensions", "probability", default=100) or 0)),
        "use_probability": r.flag("extensions", "useProbability", default=True),
        "delay": timed_effect(raw, "delay"),
        "sticky": timed_effect(raw, "sticky"),
        "cooldown": timed_effect(raw, "cooldown"),
    }
    try:
        return LoreEntry(**fields, raw=dict(raw))
    except ValidationError as exc:
        _say(CardSpecError.listing(where, describe_validation_errors(exc)), problems)
        return LoreEntry(raw=dict(raw))


_TIMED_EFFECTS = ("sticky", "cooldown", "delay")


def timed_effect(raw: Mapping[str, Any], name: str) -> int:
    """A SillyTavern timed effect (``extensions.sticky``, ``cooldown``, ``delay``) as a number of
    messages: SillyTavern writes a number or null, and reads anything it cannot take as a number
    of at least 1 as off, so such a value is 0 here, never a card that does not load
    (``lenient_notes`` names it)."""
    value = Reader(raw, "entry", CardSpecError, []).integer("extensions", name, default=0)
    return value if value is not None and value > 0 else 0


def _enabled(value: Any) -> bool:
    """``enabled`` as SillyTavern reads it (``disable: !entry.enabled``, convertCharacterBook in
    public/scripts/world-info.js): JavaScript truthiness, so ``"yes"`` is on rather than a
    card that does not load; "true"/"false" text and a missing value read as they say / on."""
    if value is MISSING or value is None:
        return True
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, float) and value != value:  # NaN is falsy in JavaScript
        return False
    return bool(value)


def _priority(raw: Mapping[str, Any], where: str) -> int:
    """``priority`` as a number, or 0 when it is not one: SillyTavern never reads the field,
    so ``"high"`` must not keep a card from loading (``lenient_notes`` says it)."""
    return Reader(raw, where, CardSpecError, []).integer("priority", default=0) or 0


def lenient_notes(raw: Mapping[str, Any]) -> list[str]:
    """What reading one raw entry let pass that its author may want to fix, one line each
    (``personas validate`` shows them)."""
    notes = []
    enabled = raw.get("enabled", MISSING)
    if enabled is not MISSING and enabled is not None and not isinstance(enabled, bool):
        read = "true" if _enabled(enabled) else "false"
        notes.append(f"'enabled' is {json.dumps(enabled)}, not true/false: read as {read}, as SillyTavern does")
    extensions = raw.get("extensions")
    for name in _TIMED_EFFECTS:
        value = extensions.get(name) if isinstance(extensions, Mapping) else None
        if value not in (None, "", 0) and timed_effect(raw, name) == 0:
            notes.append(f"'{name}' is {json.dumps(value)}, not a number of messages: read as 0 (off)")
    scratch: list[str] = []
    Reader(raw, "entry", CardSpecError, scratch).integer("priority")
    if scratch:
        notes.append(f"'priority' is {json.dumps(raw['priority'])}, not a number: read as 0")
    return notes


def _say(error: CardSpecError, problems: list[str] | None) -> None:
    """Raise ``error`` at once, or add its problems to ``problems`` when given."""
    if problems is None:
        raise error from None
    problems.extend(error.problems)


def _non_negative(value: int | None) -> int | None:
    return value if value is not None and value >= 0 else None


def _entry_view(e: LoreEntry) -> dict[CardPath, Any]:
    return {
        ("keys",): e.keys,
        ("secondary_keys",): e.secondary_keys,
        ("selective",): e.selective,
        ("extensions", "selectiveLogic"): _LOGIC_TO_ST[e.selective_logic],
        ("content",): e.content,
        ("name",): e.name,
        ("comment",): e.comment,
        ("id",): MISSING if e.id is None else e.id,
        ("enabled",): e.enabled,
        ("constant",): e.constant,
        ("case_sensitive",): e.case_sensitive,
        ("extensions", "match_whole_words"): e.match_whole_words,
        ("use_regex",): e.use_regex,
        ("insertion_order",): e.insertion_order,
        ("priority",): e.priority,
        ("position",): e.position,
        ("extensions", "scan_depth"): MISSING if e.scan_depth is None else e.scan_depth,
        ("extensions", "exclude_recursion"): e.exclude_recursion,
        ("extensions", "prevent_recursion"): e.prevent_recursion,
        ("extensions", "delay_until_recursion"): e.delay_until_recursion,
        ("extensions", "probability"): e.probability,
        ("extensions", "useProbability"): e.use_probability,
        ("extensions", "delay"): e.delay,
        ("extensions", "sticky"): e.sticky,
        ("extensions", "cooldown"): e.cooldown,
    }


def entry_to_card(e: LoreEntry, *, fill_required: bool, v3: bool) -> dict[str, Any]:
    """LoreEntry -> ``character_book`` entry, starting from its raw dict."""
    baseline = _entry_view(entry_from_raw(e.raw, "entry")) if e.raw else _entry_view(LoreEntry())
    required = ENTRY_REQUIRED + ((("use_regex",),) if v3 else ())
    out = overlay(e.raw, _entry_view(e), baseline, required, fill_required=fill_required)
    if fill_required and not isinstance(out.get("extensions"), dict):
        out["extensions"] = {}
    return out


def book_from_raw(raw: Mapping[str, Any], where: str, problems: list[str] | None = None) -> Lorebook:
    """A ``character_book`` object -> Lorebook; a bad field raises, or is added to
    ``problems`` when given."""
    r = Reader(raw, where, CardSpecError, problems)
    entries_raw = r.get(("entries",))
    if entries_raw is MISSING or entries_raw is None:
        entries_raw = []
    if isinstance(entries_raw, dict):  # some exporters key entries by id
        entries_raw = list(entries_raw.values())
    if not isinstance(entries_raw, list):
        _say(CardSpecError(f"{where}: 'entries' must be a list"), problems)
        entries_raw = []
    entries = []
    for i, item in enumerate(entries_raw):
        if not isinstance(item, dict):
            _say(CardSpecError(f"{where}: entry {i} is not an object"), problems)
            continue
        entries.append(entry_from_raw(item, f"{where} entry {i}", problems))
    depth = r.integer("extensions", "agentmm", "max_recursion_depth", default=3)
    try:
        return Lorebook(
            name=r.text("name"),
            description=r.text("description"),
            scan_depth=_non_negative(r.integer("scan_depth")),
            token_budget=r.integer("token_budget"),
            recursive_scanning=r.flag("recursive_scanning"),
            max_recursion_depth=depth if depth is not None and depth >= 0 else 3,
            entries=entries,
            raw={k: v for k, v in raw.items() if k != "entries"},
        )
    except ValidationError as exc:
        _say(CardSpecError.listing(where, describe_validation_errors(exc)), problems)
        return Lorebook()


def _book_view(b: Lorebook) -> dict[CardPath, Any]:
    return {
        ("name",): b.name,
        ("description",): b.description,
        ("scan_depth",): MISSING if b.scan_depth is None else b.scan_depth,
        ("token_budget",): MISSING if b.token_budget is None else b.token_budget,
        ("recursive_scanning",): b.recursive_scanning,
        ("extensions", "agentmm", "max_recursion_depth"): (
            MISSING if b.max_recursion_depth == 3 else b.max_recursion_depth
        ),
    }


def book_to_card(b: Lorebook, *, fill_required: bool = True, v3: bool = False) -> dict[str, Any]:
    """Lorebook -> ``character_book`` object (entries after the book's own fields)."""
    baseline = _book_view(book_from_raw(b.raw, "book")) if b.raw else _book_view(Lorebook())
    out = overlay(b.raw, _book_view(b), baseline, BOOK_REQUIRED, fill_required=fill_required)
    if fill_required and not isinstance(out.get("extensions"), dict):
        out["extensions"] = {}
    out["entries"] = [entry_to_card(e, fill_required=fill_required, v3=v3) for e in b.entries]
    return out
