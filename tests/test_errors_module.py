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
        front_end = path.name in ("http_api.py", "cli.py")  # their errors never reach a library's user
        if own or front_end or "personas_data" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", "").endswith("Error") for b in node.bases):
                found[node.name] = path.relative_to(ROOT).as_posix()
    return found


def test_every_typed_error_is_found_in_agentmm_errors() -> None:
    import importlib

    for name, where in defined_errors().items():
        defined = getattr(importlib.import_module(where.removesuffix(".py").replace("/", ".")), name)
        if not issubclass(defined, errors.AgentmmError):  # a ValueError of the REPL's own
            continue
        error = getattr(errors, name, None)
        assert error is not None, f"{name} ({where}) is not importable from agentmm.errors"
        assert issubclass(error, errors.AgentmmError) and error.__name__ == name
        assert name in dir(errors)


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    assert not hasattr(errors, "NoSuchError")


def test_a_star_import_gives_them_all() -> None:
    names: dict[str, object] = {}
    exec("from agentmm.errors import *", names)
    assert {"AgentmmError", "ThreadInUseError", "PersonaNotFoundError", "TranscriptError", "Hint"} <= set(names)
