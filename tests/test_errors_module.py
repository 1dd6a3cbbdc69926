"""Every typed error of the agentmm layer is importable from ``agentmm.errors`` (README says to
look there), wherever it is defined."""

from __future__ import annotations

import ast
from pathlib import Path

import agentmm.errors as errors

ROOT = Path(__file__).resolve().parent.parent


def defined_errors() -> dict[str, str]:
    """Each ``AgentmmError`` subclass under agentmm/ (outside errors.py and the terminal and
    HTTP front ends), by name, with its file."""
    found = {}
    for path in (ROOT / "agentmm").rglob("*.py"):
        own = path.name == "errors.py" and path.parent.name == "agentmm"
        if own or path.name == "http_api.py" or {"repl", "personas_data"} & set(path.parts):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", "").endswith("Error") for b in node.bases):
                found[node.name] = path.relative_to(ROOT).as_posix()
    return found


def test_every_typed_error_is_found_in_agentmm_errors() -> None:
    for name, where in defined_errors().items():
        error = getattr(errors, name, None)
        assert error is not None, f"{name} ({where}) is not importable from agentmm.errors"
        assert issubclass(error, errors.AgentmmError) and error.__name__ == name
        assert name in dir(errors)


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    assert not hasattr(errors, "NoSuchError")
