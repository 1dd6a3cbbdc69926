"""Memory end to end on the real stack: shipped model, shipped MiniLM, embedded Chroma, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.memory.synthetic_locomo import write_short, write_synthetic
from tests.test_cli import Run, agentmm, assert_one_line_error, ok_json
from tests.test_cli import ok_json as cli_json

pytestmark = pytest.mark.e2e
MEMORY_ON = {"AGENTMM_MEMORY": "true"}


@pytest.mark.slow
def test_chat_remembers_across_threads_and_the_memory_commands(tmp_path: Path, agentmm_here: Run) -> None:
    """In this process: what is checked is what the commands say and keep, not processes. Still slow:
    two turns with memory and thirteen memory commands (~11 s CPU, ~35 s in subprocesses)."""

    def ok_json(*args: str, env: dict[str, str] | None = None) -> Any:
        return cli_json(*args, env=env, via=agentmm_here)

    first = ok_json("chat", "-m", "My sister is called Mira and she lives in Lisbon.", "--json",
                    "--max-tokens", "20", env=MEMORY_ON)  # fmt: skip
    assert first["trace"]["path"] == ["ingest", "recall", "compose", "generate", "remember"]
    assert len(first["trace"]["remembered"]) == 2
    second = ok_json("chat", "-m", "What is my sister called?", "--json", "--max-tokens", "20", env=MEMORY_ON)
    recalled = second["trace"]["recalled"]
    assert any("Mira" in r["text"] and r["thread"] == first["thread_id"] for r in recalled)
    assert "memories" in [p["part"] for p in second["trace"]["prompt_parts"]]

    listed = ok_json("memory", "list", "--json")["memories"]
    assert len(listed) == 4
    found = ok_json("memory", "search", "sister Lisbon", "--json")["results"]
    assert "Mira" in found[0]["text"]
    note = ok_json("memory", "add", "Mira's birthday is on 3 March.", "--json")
    assert ok_json("memory", "stats", "--json")["total"] == 5
    nora = ok_json("memory", "add", "Likes tea.", "--persona", "nora quill", "--json")
    listed = ok_json("memory", "list", "--persona", "NORA QUILL", "--json")["memories"]  # was [] for any other case
    assert [m["id"] for m in listed] == [nora["id"]]
    assert ok_json("memory", "forget", nora["id"], "--persona", "nora quill", "--json")["forgotten"]["id"] == nora["id"]
    export = tmp_path / "memories.jsonl"
    assert ok_json("memory", "export", str(export), "--json")["exported"] == 5
    assert ok_json("memory", "forget", note["id"], "--json")["forgotten"]["id"] == note["id"]
    assert_one_line_error(agentmm_here("memory", "forget", note["id"]), "no memory")
    assert ok_json("memory", "import", str(export), "--json")["imported"] == 5
    again = tmp_path / "again.jsonl"
    ok_json("memory", "export", str(again), "--json")
    assert again.read_text() == export.read_text()
    assert_one_line_error(agentmm_here("memory", "import", str(tmp_path / "nope.jsonl")), "not found")


def test_a_second_process_gets_a_clear_in_use_error(tmp_path: Path, isolated_env: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from agentmm.memory import open_store; from agentmm.settings import load_settings;"
         "s = open_store(load_settings()); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert_one_line_error(agentmm("memory", "list"), f"PID {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.2)
    assert ok_json("memory", "list", "--json") == {"memories": []}  # released, nothing broken


def test_eval_memory_on_a_synthetic_locomo_file(tmp_path: Path, agentmm_here: Run) -> None:
    data = write_synthetic(tmp_path / "synthetic.json")
    report = ok_json("eval", "memory", str(data), "--k", "5,10", "--json", via=agentmm_here)
    assert set(report) >= {"overall", "per_category", "timings", "config"}
    assert {"recall@5", "hit@5", "recall@10", "hit@10", "questions"} <= set(report["overall"])
    assert set(report["per_category"]) == {"1", "2", "3", "4"}
    assert report["overall"]["recall@10"] >= 50  # planted facts among small talk are findable
    assert report["timings"]["memories"] > 0 and report["timings"]["query_p50_ms"] > 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"qa": []}')
    refused = agentmm_here("eval", "memory", str(bad))
    assert_one_line_error(refused, "conversation")
    assert refused.stdout == "" and not refused.stderr.startswith("\n")  # no progress bar's blank line off a terminal


def test_eval_memory_with_no_question_to_score_says_so_in_one_line(tmp_path: Path, agentmm_here: Run) -> None:
    """No question with findable evidence (none at all, or none naming its turns): the table had no
    scores to show and crashed; now one line and exit 1, and --json prints its report and exits 1.
    In this process, on the conversation's first two turns: what is checked is the verdict, not recall."""
    samples = json.loads(write_synthetic(tmp_path / "synthetic.json", samples=1).read_text())
    for sample in samples:
        conversation = sample["conversation"]
        for key in [key for key in conversation if key.startswith("session_") and not key.startswith("session_1")]:
            del conversation[key]
        del conversation["session_1"][2:]
        for question in sample["qa"]:
            question.pop("evidence")
    no_evidence = tmp_path / "no-evidence.json"
    no_evidence.write_text(json.dumps(samples))
    for sample in samples:
        sample["qa"] = []
    no_questions = tmp_path / "no-questions.json"
    no_questions.write_text(json.dumps(samples))
    for data in (no_evidence, no_questions):
        done = agentmm_here("eval", "memory", str(data), "--k", "5")
        assert_one_line_error(done, f"nothing to score in {data.name}")
        assert done.returncode == 1 and done.stdout == ""
        as_json = agentmm_here("eval", "memory", str(data), "--k", "5", "--json")
        assert as_json.returncode == 1 and json.loads(as_json.stdout)["overall"] == {"questions": 0}
    answered = agentmm_here("eval", "memory", str(no_questions), "--answer", "--answers", str(tmp_path / "a.jsonl"))
    assert_one_line_error(answered, "nothing to answer in no-questions.json")
    assert answered.returncode == 1


def test_eval_memory_refuses_cut_offs_below_one_and_recall_options_with_answer(
    tmp_path: Path, agentmm_here: Run
) -> None:
    """--k 0 printed a table of recall@0 scores; --k, --retrieval and --budget-tokens were ignored
    without a word with --answer, even when invalid. Both are refused before anything is loaded."""
    data = write_synthetic(tmp_path / "synthetic.json", samples=1)
    for k in ("0", "-3", "5,-3", ","):
        refused = agentmm_here("eval", "memory", str(data), "--k", k)
        assert refused.returncode == 2 and "positive numbers" in refused.stderr and "Traceback" not in refused.stderr
    for option in (["--k", "abc"], ["--k", "5"], ["--retrieval", "foo"], ["--retrieval", "dense"],
                   ["--budget-tokens", "40"]):  # fmt: skip
        refused = agentmm_here("eval", "memory", str(data), "--answer", "--limit", "1", *option)
        assert refused.returncode == 2 and "not with --answer" in refused.stderr, option
        assert "Traceback" not in refused.stderr


def test_eval_memory_within_a_token_budget(tmp_path: Path, agentmm_here: Run) -> None:
    """--budget-tokens scores only what fits the budget as compose places it, counted with the
    chat model's tokenizer: a small budget fits fewer memories and cannot find more than k does.
    In this process, on the short synthetic conversation (it has questions of each category)."""
    data = write_short(tmp_path / "fewer-turns.json")
    small = ok_json("eval", "memory", str(data), "--k", "10", "--budget-tokens", "40", "--json", via=agentmm_here)
    large = ok_json("eval", "memory", str(data), "--k", "10", "--budget-tokens", "400", "--json", via=agentmm_here)
    assert small["budget"]["tokens"] == 40 and set(small["budget"]["per_category"]) == {"1", "2", "3", "4"}
    fitted_small = small["budget"]["overall"]["memories_fitted_mean"]
    fitted_large = large["budget"]["overall"]["memories_fitted_mean"]
    assert 0 < fitted_small < fitted_large <= 10
    assert small["budget"]["overall"]["recall@40tok"] <= large["budget"]["overall"]["recall@400tok"]
    assert large["budget"]["overall"]["recall@400tok"] <= large["overall"]["recall@10"] + 1e-9
    assert small["overall"] == large["overall"]  # recall@k itself does not depend on the budget


def test_fitting_stops_at_the_first_memory_over_the_budget() -> None:
    from types import SimpleNamespace

    from agentmm.memory.evaluate import fitting

    hits = [SimpleNamespace(key=k, value={"content": "x" * n, "speaker": "A", "when": "2023-05-08T13:56:00"})
            for k, n in [("a", 10), ("b", 200), ("c", 5)]]  # fmt: skip
    assert fitting(hits, 10_000, len) == ["a", "b", "c"]
    assert fitting(hits, 120, len) == ["a"]  # b does not fit, and c comes after it
    assert fitting(hits, 5, len) == []
