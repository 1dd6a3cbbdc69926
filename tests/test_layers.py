"""The dependency direction of ARCHITECTURE.md, read from the code: ``cli -> graphs -> tools ->
agentmm``. Every import counts, including those inside functions and under ``TYPE_CHECKING``:
a core module that names an upper layer even for typing is shaped around it. The terminal chat
(``agentmm/repl``) is held to it too: it names the agent it drives only by Protocols of its own
(``agentmm.repl.ports``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Layer of each source folder, and of the package name it is installed under.
FOLDERS = {"agentmm": 0, "tools": 1, "graphs": 2}
INSTALLED = {"agentmm.tools": 1, "agentmm.graphs": 2, "agentmm.cli": 3}
# agentmm/__init__.py re-exports the public API (Agent, build_graph) lazily through __getattr__,
# and agentmm/cli.py is a link to the top-level cli.py (installed as agentmm.cli).
EXEMPT = {"agentmm/__init__.py", "agentmm/cli.py"}


def layer_of_import(name: str) -> int:
    for prefix, layer in INSTALLED.items():
        if name == prefix or name.startswith(prefix + "."):
            return layer
    return 0


def layer_of_file(path: Path) -> int:
    relative = path.relative_to(ROOT).as_posix()
    return max(layer for folder, layer in FOLDERS.items() if relative.startswith(folder + "/"))


def sources() -> list[Path]:
    files = {p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")}
    return sorted(p for p in files if p.relative_to(ROOT).as_posix() not in EXEMPT and "personas_data" not in p.parts)


def imported_names(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            names.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, name) for line, name in names if name.startswith("agentmm")]


@pytest.mark.parametrize("path", sources(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_point_down(path: Path) -> None:
    own = layer_of_file(path)
    upward = [f"line {line}: {name}" for line, name in imported_names(path) if layer_of_import(name) > own]
    assert not upward, f"{path.relative_to(ROOT)} imports a layer above it: {upward}"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from agentmm.graphs.agent import Agent\n"
    )
    assert [layer_of_import(name) for _, name in imported_names(module)] == [2]
    assert layer_of_file(ROOT / "agentmm" / "repl" / "session.py") == 0
    assert layer_of_file(ROOT / "agentmm" / "llm.py") == 0
