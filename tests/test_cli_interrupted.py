"""Ctrl-C in a long command says in one line what it left, and exits 130: `memory import`,
`images index` and the evals ended without a word, so a stopped import looked like a crash
and nothing told whether anything was written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from tests.test_cli import ok_json

Run = Callable[..., CompletedProcess[str]]


def ctrl_c(*args: Any, **kwargs: Any) -> Any:
    raise KeyboardInterrupt


def assert_interrupted(done: CompletedProcess[str], said: str) -> None:
    assert done.returncode == 130 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"agentmm: interrupted: {said}"]


@pytest.mark.e2e
def test_a_memory_import_stopped_part_way_says_nothing_was_imported(
    tmp_path: Path, agentmm_here: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    added = ok_json("memory", "add", "Mira's birthday is on 3 March.", "--json", via=agentmm_here)
    export = tmp_path / "memories.jsonl"
    ok_json("memory", "export", str(export), "--json", via=agentmm_here)
    ok_json("memory", "forget", added["id"], "--json", via=agentmm_here)
    # Ctrl-C after the memories are written, before the import is done: the store takes them back.
    monkeypatch.setattr("agentmm.memory.manage._restore_timestamps", ctrl_c)
    assert_interrupted(agentmm_here("memory", "import", str(export)), "nothing was imported")
    assert ok_json("memory", "stats", "--json", via=agentmm_here)["total"] == 0


def test_an_index_and_the_evals_stopped_say_what_they_left(
    tmp_path: Path, agentmm_here: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Index:
        index_dir = ctrl_c

    monkeypatch.setattr("agentmm.tools.clip_search.default_image_index", lambda settings: Index())
    done = agentmm_here("images", "index", str(tmp_path), "--json")
    assert_interrupted(done, f"the images indexed so far are kept; agentmm images index {tmp_path} goes on")
    assert done.stdout == ""

    monkeypatch.setattr("agentmm.cli._run_persona_eval", ctrl_c)
    assert_interrupted(agentmm_here("eval", "persona", "--json"), "no report")
    monkeypatch.setattr("agentmm.cli._run_eval", ctrl_c)
    assert_interrupted(agentmm_here("eval", "memory", str(tmp_path / "x.json")), "no report")
    monkeypatch.setattr("agentmm.cli._run_answers", ctrl_c)
    said = "the answers given so far are kept; the same command goes on from them"
    assert_interrupted(agentmm_here("eval", "memory", str(tmp_path / "x.json"), "--answer"), said)
