"""``eval memory --answer``: LoCoMo's answer scores, and questions answered through the real turn
from a throwaway store, the run resumable from its answers file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from agentmm.graphs.memory_answers import answer_file, read_answers
from agentmm.memory.answer_scores import answer_f1, exact_match, gold_answer, normalize, token_f1
from agentmm.memory.locomo import EvalFileError
from agentmm.settings import Settings
from tests.memory.synthetic_locomo import write_short, write_synthetic
from tests.test_cli import Run, assert_one_line_error, ok_json


def test_answers_are_normalized_and_stemmed_as_locomo_does() -> None:
    assert normalize("The Cat, and a DOG!") == "cat dog"
    assert token_f1("She lives in Lisbon.", "Lisbon") == pytest.approx(2 * (1 / 4) * 1 / (1 / 4 + 1))
    assert token_f1("running daily", "runs daily") == 1.0  # Porter stems
    assert token_f1("no idea", "Lisbon") == 0.0 and token_f1("", "Lisbon") == 0.0
    assert exact_match("the Lisbon", "Lisbon") and not exact_match("Lisbon Portugal", "Lisbon")
    # Multi-hop: each gold part by its best predicted part, averaged.
    assert answer_f1("pottery, chess", "chess, pottery, cello", 1) == pytest.approx(2 / 3)
    assert answer_f1("pottery, chess", "chess, pottery, cello", 4) == pytest.approx(0.8)  # whole answers
    assert gold_answer("a walk; or a run", 3) == "a walk" and gold_answer("a walk; b", 4) == "a walk; b"
    assert gold_answer(2023, 2) == "2023"


def test_questions_are_answered_through_the_turn_and_the_run_goes_on(tmp_path: Path, settings: Settings) -> None:
    data = write_synthetic(tmp_path / "locomo.json", samples=1)
    answers = tmp_path / "answers.jsonl"
    model = FakeListChatModel(responses=["Lisbon", "not mentioned", "a cat called Quixotl"])
    first = answer_file(data, settings, limit=2, answers=answers, model=model)
    assert first["overall"]["questions"] == 2 and len(first["answers"]) == 2
    row = first["answers"][0]
    assert row["prediction"] == "Lisbon" and row["memories"] > 0  # recall placed memories in its prompt
    assert 0.0 <= row["f1"] <= 1.0 and set(first["per_category"]) <= {"1", "2", "3", "4"}
    # Interrupted after two: the same call answers only the third.
    again = answer_file(data, settings, limit=3, answers=answers, model=model)
    assert again["overall"]["questions"] == 3 and [a["prediction"] for a in again["answers"]][2] == (
        "a cat called Quixotl")  # fmt: skip
    lines = answers.read_text().splitlines()
    assert len(lines) == 4 and "config" in json.loads(lines[0])
    # Another configuration does not reuse them, unless told to start over.
    with pytest.raises(EvalFileError, match=r"memory_k 5 -> 7.*--fresh"):
        answer_file(data, settings.model_copy(update={"memory_k": 7}), answers=answers, model=model)
    fresh = answer_file(data, settings.model_copy(update={"memory_k": 7}), limit=1, answers=answers, fresh=True,
                        model=FakeListChatModel(responses=["x"]))  # fmt: skip
    assert fresh["overall"]["questions"] == 1
    assert len(read_answers(answers, {**json.loads(answers.read_text().splitlines()[0])["config"]})) == 1


def test_a_file_that_is_not_an_answers_file_is_a_clear_error(tmp_path: Path, settings: Settings) -> None:
    data = write_synthetic(tmp_path / "locomo.json", samples=1)
    bogus = tmp_path / "bogus.jsonl"
    bogus.write_text("not json\n")
    with pytest.raises(EvalFileError, match="not an answers file"):
        answer_file(data, settings, answers=bogus, model=FakeListChatModel(responses=["x"]))


@pytest.mark.slow
@pytest.mark.e2e
def test_the_cli_answers_with_the_shipped_model(tmp_path: Path, agentmm_here: Run) -> None:
    """In this process: what is checked is the command's report and errors, not processes, on
    the short synthetic conversation. Still slow: it answers with the real model (~10 s CPU)."""
    data = write_short(tmp_path / "locomo.json")
    answers = tmp_path / "answers.jsonl"
    report = ok_json(
        "eval", "memory", str(data), "--answer", "--limit", "2", "--answers", str(answers), "--json", via=agentmm_here
    )
    assert report["overall"]["questions"] == 2 and report["config"]["model"] == "smollm2"
    assert all(a["prediction"] and a["memories"] > 0 for a in report["answers"])
    misuse = agentmm_here("eval", "memory", str(data), "--limit", "2")
    assert misuse.returncode == 2 and "go with" in misuse.stderr and "Traceback" not in misuse.stderr
    assert_one_line_error(agentmm_here("eval", "memory", str(tmp_path / "nope.json"), "--answer"), "not found")
