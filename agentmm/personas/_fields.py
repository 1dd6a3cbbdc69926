"""Helpers shared by the card and world-info mappings: lenient field reading and overlay.

Cards in the wild are loose: ``null`` for empty text, numbers for versions, a comma string
where a list belongs. Readers here accept those and turn anything else into one typed error
naming the field. ``overlay`` is the other half of losslessness: it writes a model's values
into a copy of the raw dict only where they differ from what the raw dict already says.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from agentmm.personas.errors import PersonaError

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
"""Marks a path that is absent from a dict (distinct from a JSON null)."""

CardPath = tuple[str, ...]
MAX_NESTING = 64


def get_path(d: Mapping[str, Any], path: CardPath) -> Any:
    """The value at ``path`` in nested dicts, or MISSING."""
    cur: Any = d
    for key in path:
        if not isinstance(cur, Mapping) or key not in cur:
            return MISSING
        cur = cur[key]
    return cur


def set_path(d: dict[str, Any], path: CardPath, value: Any) -> None:
    """Set ``path``; intermediate non-dicts (e.g. ``"extensions": null``) become dicts."""
    cur = d
    for key in path[:-1]:
        nxt = cur.get(key)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[key] = nxt
        cur = nxt
    cur[path[-1]] = value


def del_path(d: dict[str, Any], path: CardPath, prune: frozenset[str] = frozenset()) -> None:
    """Delete ``path``; drop parents named in ``prune`` that end up empty."""
    parents: list[tuple[dict[str, Any], str]] = []
    cur: Any = d
    for key in path[:-1]:
        if not isinstance(cur, dict) or not isinstance(cur.get(key), dict):
            return
        parents.append((cur, key))
        cur = cur[key]
    cur.pop(path[-1], None)
    for parent, key in reversed(parents):
        if key in prune and not parent[key]:
            del parent[key]


def json_copy(value: Any) -> Any:
    """Deep copy of JSON data; cheaper than ``copy.deepcopy`` and never shares lists."""
    return json.loads(json.dumps(value, ensure_ascii=False))


def overlay(
    raw: Mapping[str, Any],
    view: Mapping[CardPath, Any],
    baseline: Mapping[CardPath, Any],
    required: Iterable[CardPath] = (),
    *,
    fill_required: bool = False,
    prune: frozenset[str] = frozenset({"agentmm"}),
) -> dict[str, Any]:
    """A copy of ``raw`` with each ``view`` value written where it differs from ``baseline``.

    ``baseline`` is the view of ``raw`` itself, so an unchanged model writes nothing and the
    result equals ``raw`` exactly (same null, same number type, same unknown fields). With
    ``fill_required`` (converting between specs, or a persona born outside a card) paths the
    target spec requires are written when absent.
    """
    out: dict[str, Any] = json_copy(dict(raw))
    required_set = set(required)
    for path, value in view.items():
        absent = get_path(out, path) is MISSING
        unchanged = value == baseline.get(path, MISSING)
        if unchanged and not (fill_required and absent and path in required_set):
            continue
        if value is MISSING:
            del_path(out, path, prune)
        else:
            set_path(out, path, json_copy(value))
    return out


def size_text(n: int | float) -> str:
    """Bytes as a short human size for messages: ``20 MB``, ``52.4 MB``, ``900 KB``."""
    if n >= 1 << 20:
        mb = n / (1 << 20)
        return f"{mb:.0f} MB" if mb == int(mb) or mb >= 100 else f"{mb:.1f} MB"
    return f"{max(1, round(n / 1024))} KB"


def check_nesting(value: Any, what: str, error: type[PersonaError]) -> None:
    """Refuse JSON nested deeper than MAX_NESTING: real cards never are, and deep data
    would overflow the recursion of copying and serialising later."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_NESTING:
            raise error(f"{what}: nested more than {MAX_NESTING} levels deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))


class Reader:
    """Reads fields of one raw dict leniently; a bad type raises ``error`` naming the field, or,
    given a ``problems`` list, is added to it and read as the field's default, so a reader of
    a whole card can say every bad field at once (``PersonaError.several``)."""

    def __init__(
        self, data: Mapping[str, Any], where: str, error: type[PersonaError], problems: list[str] | None = None
    ) -> None:
        self.data = data
        self.where = where
        self.error = error
        self.problems = problems

    def _bad(self, key: str, expected: str, value: Any, default: Any) -> Any:
        problem = f"{self.where}: field '{key}' must be {expected}, got {_kind(value)}"
        if self.problems is None:
            raise self.error(problem)
        self.problems.append(problem)
        return default

    def get(self, path: CardPath) -> Any:
        return get_path(self.data, path)

    def text(self, *path: str, default: str = "") -> str:
        value = self.get(path)
        if value is MISSING or value is None:
            return default
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return self._bad(".".join(path), "text", value, default)

    def text_list(self, *path: str) -> list[str]:
        value = self.get(path)
        if value is MISSING or value is None:
            return []
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            return self._bad(".".join(path), "a list of text", value, [])
        out: list[str] = []
        said = False
        for item in value:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, int | float) and not isinstance(item, bool):
                out.append(str(item))
            elif item is not None and not said:  # one problem a field
                said = self._bad(".".join(path), "a list of text", item, True)
        return out

    def flag(self, *path: str, default: bool = False) -> bool:
        value = self.get(path)
        if value is MISSING or value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return bool(value)
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            return value.lower() == "true"
        return self._bad(".".join(path), "true or false", value, default)

    def integer(self, *path: str, default: int | None = None) -> int | None:
        value = self.get(path)
        if value is MISSING or value is None or value == "":
            return default
        if isinstance(value, bool):
            return self._bad(".".join(path), "a number", value, default)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value == value and abs(value) < 1e15:
            return round(value)
        if isinstance(value, str):
            try:
                return round(float(value))
            except (ValueError, OverflowError):
                pass
        return self._bad(".".join(path), "a number", value, default)

    def mapping(self, *path: str) -> dict[str, Any]:
        value = self.get(path)
        if value is MISSING or value is None:
            return {}
        if isinstance(value, dict):
            return value
        return self._bad(".".join(path), "an object", value, {})


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def describe_validation_errors(exc: ValidationError) -> list[str]:
    """Every pydantic error as ``field.path: what is wrong`` (one line each, for users)."""
    return [_describe(err) for err in exc.errors()]


def _describe(err: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()))
    if err.get("type") == "extra_forbidden":
        return f"unknown field '{loc}'"
    if err.get("type") == "missing":
        return f"missing field '{loc}'"
    return f"{loc}: {err.get('msg', 'invalid value')}" if loc else str(err.get("msg", "invalid value"))
