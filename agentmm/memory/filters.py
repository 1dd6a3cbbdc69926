"""LangGraph's search-filter semantics, and the part of a filter Chroma can evaluate itself.

A filter is checked exactly here, in Python, on the decoded value. Chroma's metadata filter
is used only to narrow the candidates first: :func:`pushdown` emits conditions that every
matching item also satisfies, never more, so pushing down can make a search faster but
never change its answer.

Semantics follow ``InMemoryStore``: a key names a top-level field (or, when the value has
no such field, a dotted path into nested objects); a plain value or ``$eq`` means equality
(nested objects and lists compare structurally); ``$ne`` is its negation, so an item
without the field matches ``$ne``; ``$gt``/``$gte``/``$lt``/``$lte`` compare numbers, and
an item whose field is missing or not a number does not match (InMemoryStore would raise).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from agentmm.memory.errors import InvalidFilterError

RANGE_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
OPERATORS = ("$eq", "$ne", *RANGE_OPERATORS)

# Metadata keys for the scalar top-level fields copied next to each record, so Chroma can
# filter on them. Strings and numbers get separate keys: a number filter never matches a
# string field, and numbers are stored as floats so 3 == 3.0 as in Python.
STRING_PREFIX = "v:"
NUMBER_PREFIX = "n:"
MAX_PUSHED_STRING = 256
_PUSHABLE_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def field_value(value: Mapping[str, Any], key: str) -> Any:
    """The field a filter key names: a top-level key, else a dotted path; ``None`` if absent."""
    if key in value:
        return value[key]
    current: Any = value
    for part in key.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def matches(value: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    """Whether an item's value satisfies a LangGraph search filter."""
    if not filter:
        return True
    return all(_compare(field_value(value, key), expected) for key, expected in filter.items())


def validate(filter: Mapping[str, Any] | None) -> None:
    """Raise :class:`InvalidFilterError` for an unknown operator or a non-numeric range bound.

    Checked before the search runs, so a bad filter fails the same way on an empty scope.
    """
    for expected in (filter or {}).values():
        _validate(expected)


def _validate(expected: Any) -> None:
    if not isinstance(expected, Mapping):
        return
    if not any(str(k).startswith("$") for k in expected):
        for nested in expected.values():
            _validate(nested)
        return
    for op, operand in expected.items():
        if op not in OPERATORS:
            raise InvalidFilterError(f"unsupported filter operator {op!r}; use one of {', '.join(OPERATORS)}")
        if op in RANGE_OPERATORS:
            _range_operand(op, operand)


def _compare(actual: Any, expected: Any) -> bool:
    if isinstance(expected, Mapping):
        if any(str(k).startswith("$") for k in expected):
            return all(_apply(actual, op, operand) for op, operand in expected.items())
        if not isinstance(actual, Mapping):
            return False
        return all(_compare(actual.get(k), v) for k, v in expected.items())
    if isinstance(expected, list | tuple):
        return (
            isinstance(actual, list | tuple)
            and len(actual) == len(expected)
            and all(_compare(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return actual == expected


def _apply(actual: Any, op: str, operand: Any) -> bool:
    if op == "$eq":
        return _compare(actual, operand)
    if op == "$ne":
        return not _compare(actual, operand)
    if op in RANGE_OPERATORS:
        bound = _range_operand(op, operand)
        number = as_number(actual)
        if number is None:
            return False
        if op == "$gt":
            return number > bound
        if op == "$gte":
            return number >= bound
        if op == "$lt":
            return number < bound
        return number <= bound
    raise InvalidFilterError(f"unsupported filter operator {op!r}; use one of {', '.join(OPERATORS)}")


def _range_operand(op: str, operand: Any) -> float:
    number = as_number(operand)
    if number is None:
        raise InvalidFilterError(f"filter operator {op} needs a number, got {operand!r}")
    return number


def as_number(value: Any) -> float | None:
    """A JSON number (or bool) as a finite float; anything else is not a number."""
    if isinstance(value, bool | int | float) and not (isinstance(value, float) and not math.isfinite(value)):
        return float(value)
    return None


def scalar_metadata(value: Mapping[str, Any]) -> dict[str, str | float]:
    """The top-level scalar fields of a value, keyed for Chroma's metadata filter."""
    metadata: dict[str, str | float] = {}
    for key, field in value.items():
        if not isinstance(key, str) or not _PUSHABLE_KEY.match(key):
            continue
        if isinstance(field, str):
            if len(field) <= MAX_PUSHED_STRING:
                metadata[STRING_PREFIX + key] = field
        elif (number := as_number(field)) is not None:
            metadata[NUMBER_PREFIX + key] = number
    return metadata


def pushdown(filter: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Chroma ``where`` clauses implied by a filter (a necessary condition, never sufficient)."""
    clauses: list[dict[str, Any]] = []
    for key, expected in (filter or {}).items():
        if not isinstance(key, str) or not _PUSHABLE_KEY.match(key):
            continue
        if isinstance(expected, Mapping) and any(str(k).startswith("$") for k in expected):
            for op, operand in expected.items():
                if op == "$eq":
                    clauses.extend(_equality(key, operand))
                elif op in RANGE_OPERATORS:
                    clauses.append({NUMBER_PREFIX + key: {op: _range_operand(op, operand)}})
        else:
            clauses.extend(_equality(key, expected))
    return clauses


def _equality(key: str, expected: Any) -> list[dict[str, Any]]:
    if isinstance(expected, str):
        return [{STRING_PREFIX + key: expected}] if len(expected) <= MAX_PUSHED_STRING else []
    number = as_number(expected)
    return [{NUMBER_PREFIX + key: number}] if number is not None else []


def namespace_matches(namespace: tuple[str, ...], match_type: str, path: tuple[str, ...]) -> bool:
    """LangGraph's ``MatchCondition``: a prefix or suffix of labels, ``"*"`` matching any one."""
    if len(namespace) < len(path):
        return False
    if match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise ValueError(f"unsupported namespace match type {match_type!r}")
    return all(want == "*" or have == want for have, want in pairs)
