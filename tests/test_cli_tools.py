"""`agentmm tools list` and the chat flags for tools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentmm.cli import _approver
from tests.test_cli import agentmm, assert_one_line_error, ok_json

TAROT = '''
from langchain_core.tools import tool


@tool
def draw_tarot() -> str:
    """Draw one tarot card."""
    return "The Tower"


draw_tarot.metadata = {"requires_approval": True}
'''


def test_tools_list_shows_sources_personas_and_problems(isolated_env: Path) -> None:
    folder = isolated_env / "tools"
    folder.mkdir()
    (folder / "tarot.py").write_text(TAROT)
    (folder / "broken.py").write_text("import no_such_module_here\n")
    data = ok_json("tools", "list", "--json", env={"AGENTMM_TOOLS": '["roll_dice"]'})
    tools = {t["name"]: t for t in data["tools"]}
    assert tools["roll_dice"] == {
        "name": "roll_dice",
        "description": "Roll dice: NdS is N dice of S sides (3d8), kh/kl keeps the highest/lowest (4d6kh3), +/- adds "
        "a modifier.",
        "source": "agentmm",
        "enabled": True,
        "requires_approval": False,
        "personas": ["Bram Tolliver"],
    }
    assert tools["draw_tarot"]["source"] == str(folder / "tarot.py") and tools["draw_tarot"]["requires_approval"]
    (problem,) = data["problems"]
    assert "broken.py: ModuleNotFoundError: No module named 'no_such_module_here'" in problem
    table = agentmm("tools", "list")
    assert table.returncode == 0 and "draw_tarot" in table.stdout
    assert "skipped a plugin" in table.stderr


def test_unknown_tool_is_one_line_before_anything_loads(isolated_env: Path) -> None:
    assert_one_line_error(agentmm("chat", "-m", "hi", "--tool", "lockpick"), "unknown tool 'lockpick'")


def test_one_turn_approver(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    request = {"tool": "draw_tarot", "args": {}, "id": "c1"}
    assert _approver(yes=True)(request) is True
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert _approver(yes=False)(request) is False
    assert "denied tool call draw_tarot({})" in capsys.readouterr().err


def test_what_a_tools_file_prints_goes_to_stderr_so_json_stays_one_object(isolated_env: Path) -> None:
    folder = isolated_env / "tools"
    folder.mkdir()
    (folder / "noisy.py").write_text('print("HELLO FROM IMPORT")\n' + TAROT)
    done = agentmm("tools", "list", "--json")
    assert done.returncode == 0 and "HELLO FROM IMPORT" in done.stderr
    assert "draw_tarot" in {t["name"] for t in json.loads(done.stdout)["tools"]}
    shown = agentmm("tools", "list")  # without --json, stdout is as it was
    assert "HELLO FROM IMPORT" in shown.stdout
