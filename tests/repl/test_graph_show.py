"""``agentmm graph show`` and the start-up cost of the CLI with the REPL in it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any


def test_graph_show_draws_the_turn_graph(agentmm_here: Any) -> None:
    """In this process (``agentmm_here``): drawing the graph loads no model, and the command's
    output is the point, not the process (a subprocess paid Python's start and LangGraph's
    imports per call: ~20 s of this file under load)."""
    run = agentmm_here
    mermaid = run("graph", "show", "--format", "mermaid")
    assert mermaid.returncode == 0, mermaid.stderr
    assert "graph TD" in mermaid.stdout and "ingest --> " not in mermaid.stderr
    for node in ("ingest", "perceive", "compose", "generate"):
        assert node in mermaid.stdout
    ascii_art = run("graph", "show")
    assert ascii_art.returncode == 0 and "| generate |" in ascii_art.stdout
    assert "tools" not in mermaid.stdout
    with_tools = run("graph", "show", "--format", "mermaid", env={"AGENTMM_TOOLS": '["roll_dice"]'})
    assert "generate -.-> tools;" in with_tools.stdout and "tools --> generate;" in with_tools.stdout
    bad = run("graph", "show", "--format", "svg")
    assert bad.returncode != 0 and "ascii, mermaid or png" in bad.stderr


def test_graph_show_writes_into_a_new_folder_and_refuses_a_folder_in_one_line(
    tmp_path: Path, agentmm_here: Any
) -> None:
    """-o into a folder that does not exist yet makes it (as personas export and memory export do);
    a folder, or a path under a file, is one line and exit 2, not a traceback."""
    run = agentmm_here
    drawn = tmp_path / "new" / "deeper" / "turn.mmd"
    done = run("graph", "show", "--format", "mermaid", "-o", str(drawn))
    assert done.returncode == 0 and done.stdout == f"wrote {drawn}\n", done.stderr
    assert "graph TD" in drawn.read_text(encoding="utf-8")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for output, said in ((tmp_path, "is a folder"), (a_file / "x.txt", f"{a_file} is a file, not a folder")):
        refused = run("graph", "show", "-o", str(output))
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr
        assert lines[0].startswith(f"agentmm: error: -o {output}") and said in lines[0]


def test_the_cli_does_not_import_the_terminal_libraries() -> None:
    code = "import sys, agentmm.cli; print([m for m in ('prompt_toolkit', 'agentmm.repl') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
