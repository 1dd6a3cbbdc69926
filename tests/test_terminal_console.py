"""Tables at a dumb terminal's real width: rich takes any TERM=dumb terminal to be 80 columns."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from agentmm.terminal_console import UNKNOWN_WIDTH, make_console


def _table_rows(width_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, cell: str) -> list[str]:
    from rich.table import Table

    for name in ("COLUMNS", "LINES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in width_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TERM", "dumb")
    console = make_console(file=io.StringIO(), force_terminal=True)  # a terminal, as rich tells one
    assert console.is_dumb_terminal
    table = Table("id", "text")
    table.add_row("t1", cell)
    console.print(table)
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


def test_a_dumb_terminal_gets_columns_not_80(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = "word " * 30  # 150 columns
    rows = _table_rows({"COLUMNS": "200"}, monkeypatch, cell.strip())
    assert any(cell.strip() in row for row in rows) and max(map(len, rows)) <= 200
    assert make_console(file=io.StringIO(), force_terminal=True).width == 200


def test_a_dumb_terminal_of_no_known_width_wraps_no_table(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = "word " * 60  # 300 columns
    rows = _table_rows({}, monkeypatch, cell.strip())
    assert any(cell.strip() in row for row in rows)
    assert max(map(len, rows)) < UNKNOWN_WIDTH  # as wide as the table, not padded to the width


def test_cli_tables_under_term_dumb_use_the_terminals_width(tmp_path: Path) -> None:
    """`config show` in a 200-column TERM=dumb terminal (Emacs' M-x shell) broke a long value at 80."""
    long_model = "/models/" + "a-rather-long-folder-name/" * 5 + "model.gguf"
    keyboard, screen = pty.openpty()
    env = {**os.environ, "TERM": "dumb", "COLUMNS": "200", "AGENTMM_MODEL": long_model,
           "AGENTMM_CONFIG": str(tmp_path / "none.toml")}  # fmt: skip
    env.pop("LINES", None)
    with subprocess.Popen([sys.executable, "-m", "agentmm.cli", "config", "show"], stdin=screen, stdout=screen,
                          stderr=subprocess.PIPE, env=env) as done:  # fmt: skip
        os.close(screen)
        out = b""
        while True:
            try:
                chunk = os.read(keyboard, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        done.wait(timeout=120)
    os.close(keyboard)
    assert done.returncode == 0
    assert long_model in out.decode().replace("\r\n", "\n")
