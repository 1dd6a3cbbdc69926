"""benchmarks/run_all.py rewrites only its generated blocks in BENCHMARKS.md, keeping the prose."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


DOC = """# Benchmarks

## Turn (`benchmarks/turn.py`)

Prose about the turn.

| old | table |

### Sub-part

More prose.

## Tools (`benchmarks/tools.py`)

Tools prose.
"""


def test_a_missing_block_goes_at_the_end_of_its_section_and_a_present_one_is_replaced() -> None:
    module = run_all()
    first = module.place(DOC, "turn", "<!-- results:turn -->\nA\n<!-- /results:turn -->")
    assert first.index("More prose.") < first.index("<!-- results:turn -->") < first.index("## Tools")
    again = module.place(first, "turn", "<!-- results:turn -->\nB\n<!-- /results:turn -->")
    assert "\nA\n" not in again and again.count("<!-- results:turn -->") == 1 and "\nB\n" in again
    assert again.replace("\nB\n", "\nA\n") == first  # nothing else moved
    last = module.place(again, "tools", "<!-- results:tools -->\nT\n<!-- /results:tools -->")
    assert last.rstrip().endswith("<!-- /results:tools -->") and "Tools prose." in last
    new = module.place(DOC, "soak", "<!-- results:soak -->\nS\n<!-- /results:soak -->")
    assert new.startswith(DOC.rstrip()) and "## soak (`benchmarks/soak.py`)" in new


def test_the_stamp_names_commit_machine_and_load() -> None:
    module = run_all()
    run = {"date": "2026-12-06 01:00 UTC", "preset": "quick", "command": "benchmarks/turn.py --pairs 4",
           "load_before": 1.5, "load_after": 2.25, "minutes": 3.2}  # fmt: skip
    stamp = {**module.commit(), **module.machine(), **run}
    text = module.block("turn", stamp, "| a | b |")
    assert stamp["commit"] in text and stamp["cpu"] in text and f"{stamp['cores']} cores" in text
    assert ("no AMX" in text) != stamp["amx"] and "1.50 before, 2.25 after" in text
    assert text.startswith("<!-- results:turn -->") and text.endswith("<!-- /results:turn -->")


def test_an_unknown_benchmark_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_all().main(["--only", "nope"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
