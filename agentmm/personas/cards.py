"""Character Card V1 / V2 / V3 JSON <-> ``Persona``.

Reading is lenient about what cards in the wild get wrong (nulls, numeric versions, missing
optional fields) and strict about what makes a file not a card (no object, unknown ``spec``),
raising one typed error either way.

Writing is lossless by construction: the raw card stays on the persona and export writes a
copy of it with only the fields whose values changed (see ``_fields.overlay``). So an imported
card exports to exactly the same dict, unknown fields, other apps' ``extensions`` and
``character_book`` entries with their own extensions included. Converting between specs (V2
-> V3, V1 -> V2, native TOML -> card) also fills the fields the target spec requires.

agentmm's own settings (allowed tools, model, sampling) live in ``data.extensions.agentmm``,
the place the V2 spec sets aside for applications.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from agentmm.personas._fields import (
    MISSING,
    CardPath,
    Reader,
    check_nesting,
    describe_validation_errors,
    json_copy,
    overlay,
    size_text,
)
from agentmm.personas.character_book import book_from_raw, book_to_card
from agentmm.personas.errors import (
    CardEncodingError,
    CardJSONError,
    CardSpecError,
    CardTooLargeError,
    PersonaError,
)
from agentmm.personas.model import Lorebook, Persona

CardSpec = Literal["v1", "v2", "v3"]
SPEC_NAMES: dict[str, str] = {"v2": "chara_card_v2", "v3": "chara_card_v3"}
SPEC_VERSIONS: dict[str, str] = {"v2": "2.0", "v3": "3.0"}
V1_FIELDS = ("description", "personality", "scenario", "first_mes", "mes_example")


@dataclass(frozen=True)
class Limits:
    """Size caps that keep a hostile or broken file from eating memory.

    A real card is kilobytes to a few megabytes; 20 MB of JSON is far past any of them.
    """

    max_card_bytes: int = 20 * 1024 * 1024
    max_file_bytes: int = 128 * 1024 * 1024


DEFAULT_LIMITS = Limits()

# -- JSON text -----------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _strict_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def parse_json_object(
    data: bytes | str,
    *,
    where: str,
    limits: Limits = DEFAULT_LIMITS,
    error: type[PersonaError] = CardJSONError,
) -> dict[str, Any]:
    """Bytes or text -> a JSON object, with the size cap and strict JSON (no NaN)."""
    if len(data) > limits.max_card_bytes:
        raise CardTooLargeError(
            f"{where}: card JSON is {size_text(len(data))}, over the {size_text(limits.max_card_bytes)} limit"
        )
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CardEncodingError(f"{where}: card text is not UTF-8 ({exc.reason})") from None
    else:
        text = data
    try:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_strict_float)
    except RecursionError:
        raise error(f"{where}: JSON is nested too deeply") from None
    except ValueError as exc:
        msg = str(exc).splitlines()[0][:200]
        raise error(f"{where}: not valid JSON ({msg})") from None
    if not isinstance(obj, dict):
        raise CardSpecError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    check_nesting(obj, where, CardSpecError)
    return obj


def dumps_card(card: Mapping[str, Any], *, indent: int | None = 2) -> str:
    """A card as JSON text (UTF-8 friendly, as SillyTavern writes it)."""
    seps = (",", ": ") if indent else (",", ":")
    return json.dumps(card, ensure_ascii=False, indent=indent, separators=seps)


# -- spec detection ------------------------------------------------------------------------


# Said when a world-info file is given where a card is expected (README, Personas).
WORLD_INFO_HINT = (
    "this is a lorebook (world info) file, not a character card; to add its entries to a persona's lorebook: "
    "agentmm personas import CARD --world THIS_FILE (--force to replace an installed CARD)"
)


def detect_spec(card: Mapping[str, Any], where: str = "card") -> CardSpec:
    """Which card spec a JSON object follows; CardSpecError when it is none of them."""
    spec = card.get("spec", MISSING)
    if spec is MISSING:
        if isinstance(card.get("data"), dict):
            return "v2"
        if "name" in card and any(k in card for k in V1_FIELDS):
            return "v1"
        if "entries" in card:
            raise CardSpecError(f"{where}: {WORLD_INFO_HINT}")
        raise CardSpecError(f"{where}: not a character card (no 'spec' and no character fields)")
    for short, long_name in SPEC_NAMES.items():
        if spec == long_name:
            if not isinstance(card.get("data"), dict):
                raise CardSpecError(f"{where}: {long_name} card has no 'data' object")
            return short  # type: ignore[return-value]
    shown = repr(spec)[:60]
    raise CardSpecError(f"{where}: unsupported card spec {shown}; expected 'chara_card_v2' or 'chara_card_v3'")


# -- persona <-> card ----------------------------------------------------------------------

DATA_REQUIRED: tuple[CardPath, ...] = tuple(
    (k,)
    for k in (
        "name",
        "description",
        "personality",
        "scenario",
        "first_mes",
        "mes_example",
        "creator_notes",
        "system_prompt",
        "post_history_instructions",
        "alternate_greetings",
        "tags",
        "creator",
        "character_version",
    )
)
# Root-level copies that SillyTavern keeps for V1 readers; updated only when the value changed.
ROOT_MIRRORS: dict[str, CardPath] = {
    "name": ("name",),
    "description": ("description",),
    "personality": ("personality",),
    "scenario": ("scenario",),
    "first_mes": ("first_mes",),
    "mes_example": ("mes_example",),
    "tags": ("tags",),
    "creatorcomment": ("creator_notes",),
}


def _data_fields(data: Mapping[str, Any], where: str, problems: list[str] | None = None) -> dict[str, Any]:
    """The persona fields a card ``data`` object (or a V1 root) says, leniently read; a bad
    field raises, or is added to ``problems`` when given."""
    r = Reader(data, where, CardSpecError, problems)
    first = r.text("first_mes")
    alternates = r.get(("alternate_greetings",))
    alts = [alternates] if isinstance(alternates, str) else r.text_list("alternate_greetings")
    sampling = r.mapping("extensions", "agentmm", "sampling") if _agentmm_ok(r) else {}
    fields = {
        "name": r.text("name"),
        "nickname": r.text("nickname"),
        "description": r.text("description"),
        "personality": r.text("personality"),
        "scenario": r.text("scenario"),
        # A null (or missing) first_mes is no greeting, as null alternates are none: the first
        # alternate opens the chat then; an empty "" one keeps its place as written.
        "greetings": [first, *alts] if first or (alts and r.get(("first_mes",)) not in (None, MISSING)) else alts,
        "example_dialogue": r.text("mes_example"),
        "system_prompt": r.text("system_prompt"),
        "post_history_instructions": r.text("post_history_instructions"),
        "creator_notes": r.text("creator_notes"),
        "tags": r.text_list("tags"),
        "creator": r.text("creator"),
        "character_version": r.text("character_version"),
        "allowed_tools": r.text_list("extensions", "agentmm", "tools") if _agentmm_ok(r) else [],
        "model": (r.text("extensions", "agentmm", "model") or None) if _agentmm_ok(r) else None,
        "sampling": dict(sampling) or None,
    }
    book_raw = r.get(("character_book",))  # last: its problems are listed after the card's own
    if isinstance(book_raw, dict):
        fields["lorebook"] = book_from_raw(book_raw, f"{where} character_book", problems)
    else:
        if book_raw is not MISSING and book_raw is not None:
            r.mapping("character_book")  # not an object: raised, or said as a problem
        fields["lorebook"] = Lorebook()
    return fields


def _agentmm_ok(r: Reader) -> bool:
    """Another app may own a key called ``agentmm`` with another shape; ignore it then."""
    return isinstance(r.get(("extensions", "agentmm")), dict)


_CARD_FIELDS = (
    "name",
    "nickname",
    "description",
    "personality",
    "scenario",
    "greetings",
    "example_dialogue",
    "system_prompt",
    "post_history_instructions",
    "creator_notes",
    "tags",
    "creator",
    "character_version",
    "lorebook",
    "allowed_tools",
    "model",
    "sampling",
)


def _persona_fields(p: Persona) -> dict[str, Any]:
    return {k: getattr(p, k) for k in _CARD_FIELDS}


def _data_view(f: Mapping[str, Any]) -> dict[CardPath, Any]:
    greetings: list[str] = f["greetings"]
    return {
        ("name",): f["name"],
        ("nickname",): f["nickname"] or MISSING,
        ("description",): f["description"],
        ("personality",): f["personality"],
        ("scenario",): f["scenario"],
        ("first_mes",): greetings[0] if greetings else "",
        ("alternate_greetings",): greetings[1:],
        ("mes_example",): f["example_dialogue"],
        ("system_prompt",): f["system_prompt"],
        ("post_history_instructions",): f["post_history_instructions"],
        ("creator_notes",): f["creator_notes"],
        ("tags",): f["tags"],
        ("creator",): f["creator"],
        ("character_version",): f["character_version"],
        ("extensions", "agentmm", "tools"): f["allowed_tools"] or MISSING,
        ("extensions", "agentmm", "model"): f["model"] or MISSING,
        ("extensions", "agentmm", "sampling"): f["sampling"] or MISSING,
    }


# The old Pygmalion / Gradio "notepad" JSON -> the V1 fields, as SillyTavern imports it.
PYGMALION_FIELDS = {
    "char_name": "name",
    "char_persona": "description",
    "char_greeting": "first_mes",
    "world_scenario": "scenario",
    "example_dialogue": "mes_example",
}
_PYGMALION_PLACEHOLDER = "Creator's notes go here."


def from_pygmalion(card: dict[str, Any]) -> dict[str, Any]:
    """A Pygmalion-format card (``char_name``, ``char_persona``, ``char_greeting``,
    ``world_scenario``, ``example_dialogue``; no ``spec`` and none of V1's character fields;
    a ``name`` beside them is kept when ``char_name`` is empty) as a V1 card, other fields
    kept; any other card as it is. SillyTavern reads the same fields the same way."""
    if "spec" in card or "char_name" not in card or any(key in card for key in V1_FIELDS):
        return card
    v1 = {key: value for key, value in card.items() if key not in PYGMALION_FIELDS}
    for old, new in PYGMALION_FIELDS.items():
        v1[new] = card.get(old) if card.get(old) is not None else ""
    if not (isinstance(v1["name"], str) and v1["name"].strip()) and card.get("name") is not None:
        v1["name"] = card["name"]
    v1.setdefault("personality", "")
    if isinstance(notes := v1.get("creator_notes"), str):
        v1["creator_notes"] = notes.replace(_PYGMALION_PLACEHOLDER, "")
    return v1


def persona_from_card(
    card: dict[str, Any], *, where: str = "card", source: str = "", image: bytes | None = None
) -> Persona:
    """A parsed card JSON object -> Persona (the card itself is kept in ``Persona.card``; a
    Pygmalion-format one as the V1 card it reads as)."""
    card = from_pygmalion(card)
    spec = detect_spec(card, where)
    data = card if spec == "v1" else card["data"]
    problems: list[str] = []
    fields = _data_fields(data, where, problems)
    if not fields["name"].strip() and not any("field 'name'" in problem for problem in problems):
        problems.insert(0, f"{where}: the card has no character name")
    if problems:
        raise CardSpecError.several(problems)
    try:
        return Persona(**fields, source=source, card=card, image=image)
    except ValidationError as exc:
        raise CardSpecError.listing(where, describe_validation_errors(exc)) from None


def card_from_persona(persona: Persona, spec: Literal["v2", "v3"] = "v2") -> dict[str, Any]:
    """Persona -> card dict of the given spec, lossless for a persona imported from a card."""
    if spec not in SPEC_NAMES:
        raise ValueError(f"spec must be 'v2' or 'v3', not {spec!r}")
    raw = persona.card or {}
    src: CardSpec | None = detect_spec(raw) if persona.card is not None else None
    fill = src != spec
    if src in ("v2", "v3"):
        data_raw: Mapping[str, Any] = raw["data"]
        base_src: Mapping[str, Any] = data_raw
    else:  # V1 keeps its fields at the root; a native persona has no card at all
        data_raw, base_src = {}, raw
    base_fields = _data_fields(base_src, "card")
    view, base_view = _data_view(_persona_fields(persona)), _data_view(base_fields)
    data = overlay(data_raw, view, base_view, DATA_REQUIRED, fill_required=fill)
    if fill:
        if not isinstance(data.get("extensions"), dict):
            data["extensions"] = {}
        if spec == "v3":
            data.setdefault("group_only_greetings", [])

    book_raw = data_raw.get("character_book")
    if persona.lorebook != base_fields["lorebook"] or (fill and isinstance(book_raw, dict)):
        if persona.lorebook == Lorebook() and not isinstance(book_raw, dict):
            data.pop("character_book", None)
        else:
            data["character_book"] = book_to_card(persona.lorebook, fill_required=True, v3=spec == "v3")

    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "spec":
            out[key] = SPEC_NAMES[spec]
        elif key == "spec_version":
            out[key] = value if not fill else SPEC_VERSIONS[spec]
        elif key == "data":
            out[key] = data
        elif key in ROOT_MIRRORS and view[ROOT_MIRRORS[key]] != base_view[ROOT_MIRRORS[key]]:
            out[key] = json_copy(view[ROOT_MIRRORS[key]])
        else:
            out[key] = json_copy(value)
    if fill:  # an unchanged card of the same spec stays exactly as it was
        out.setdefault("spec", SPEC_NAMES[spec])
        out.setdefault("spec_version", SPEC_VERSIONS[spec])
    out.setdefault("data", data)
    return out


def load_card_json(
    data: bytes | str,
    *,
    where: str = "card",
    source: str = "",
    limits: Limits = DEFAULT_LIMITS,
) -> Persona:
    """Card JSON text -> Persona (V1, V2 or V3)."""
    return persona_from_card(parse_json_object(data, where=where, limits=limits), where=where, source=source)
