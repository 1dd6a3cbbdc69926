"""Evidence ids as the public LoCoMo file writes them: several in one entry, stray colons, zero
padding, ids two turns share, ids that name no turn. Each is read so that the evidence a search
can find is scored, and what could not be read is counted, not silently lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.evaluate import evaluate, ingest, photo
from agentmm.memory.locomo import dia_ids, evidence_report, found_ids, load_locomo


def turn(dia_id: str, speaker: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"speaker": speaker, "dia_id": dia_id, "text": text, **extra}


def messy_file(path: Path) -> Path:
    session_1 = [
        turn("D1:1", "Ada", "I adopted a grey cat called Pepper last spring."),
        turn("D1:2", "Bo", "Lovely! I started learning the cello."),
        turn("D1:03", "Ada", "My sister Mara moved to Lisbon."),  # zero padded in the turn itself
    ]
    session_2 = [
        turn("D2:1", "Bo", "The cello teacher is called Mr Okafor."),
        turn("D2:1", "Ada", "Pepper knocked the vase off the shelf again."),  # a dia_id written twice
        turn("D2:3", "Bo", "Look at this.", blip_caption="a photo of a red kite over a hill"),
    ]
    qa = [
        {"question": "What is Ada's cat called?", "answer": "Pepper", "evidence": ["D1:1"], "category": 4},
        {
            "question": "Who teaches Bo and what instrument?",
            "answer": "Mr Okafor, cello",
            "evidence": ["D1:2; D2:1"],
            "category": 1,
        },
        {"question": "Where did Mara move?", "answer": "Lisbon", "evidence": ["D:1:3"], "category": 4},
        {"question": "What did Pepper break?", "answer": "a vase", "evidence": "D2:01", "category": 4},
        {"question": "What did Bo fly?", "answer": "a kite", "evidence": ["D2:3", "D9:9"], "category": 4},
        {"question": "What is Bo's dog called?", "answer": "?", "evidence": ["D7:2"], "category": 4},
        {"question": "Unanswerable", "answer": "none", "evidence": [], "category": 3},
    ]
    sample = {"sample_id": "s1", "qa": qa, "conversation": {
        "speaker_a": "Ada", "speaker_b": "Bo",
        "session_1_date_time": "1:56 pm on 8 May, 2023", "session_1": session_1,
        "session_2_date_time": "10:00 am on 9 June, 2023", "session_2": session_2,
    }}  # fmt: skip
    path.write_text(json.dumps([sample]))
    return path


def test_dia_ids_are_read_leniently_and_written_one_way() -> None:
    assert dia_ids("D8:6; D9:17") == ["D8:6", "D9:17"]
    assert dia_ids("D:11:26") == ["D11:26"]
    assert dia_ids("d30:05") == ["D30:5"]
    assert dia_ids("D3 : 4, D3:5") == ["D3:4", "D3:5"]
    assert dia_ids("no id here") == []
    assert found_ids(["D2:1#2", "D1:1", "D2:1"]) == ["D2:1", "D1:1"]


def test_messy_evidence_is_found_and_what_names_no_turn_is_counted(tmp_path: Path) -> None:
    [sample] = load_locomo(messy_file(tmp_path / "messy.json"))
    evidence = {q.question: q.evidence for q in sample.qa}
    assert evidence["Who teaches Bo and what instrument?"] == ["D1:2", "D2:1"]
    assert evidence["Where did Mara move?"] == ["D1:3"]
    assert evidence["What did Pepper break?"] == ["D2:1"]
    assert [key for _, key, _ in sample.keyed_turns()] == ["D1:1", "D1:2", "D1:3", "D2:1", "D2:1#2", "D2:3"]
    assert sample.findable(sample.qa[4]) == ["D2:3"]
    assert evidence_report([sample]) == {
        "ids": 8,
        "rewritten": 3,  # "D1:2; D2:1", "D:1:3", "D2:01"
        "naming_no_turn": 2,
        "shared_turn_ids": 1,
        "questions_without_findable_evidence": 1,
        "examples_naming_no_turn": ["s1: D9:9", "s1: D7:2"],
    }


def test_both_turns_of_a_shared_id_are_stored_and_either_counts(tmp_path: Path, fake_embeddings: Any) -> None:
    [sample] = load_locomo(messy_file(tmp_path / "messy.json"))
    index = {"dims": fake_embeddings.dims, "embed": fake_embeddings, "fields": ["text"]}
    with ChromaStore.from_path(tmp_path / "store", index=index) as store:  # type: ignore[arg-type]
        assert ingest(store, sample, ("eval", "s1")) == 6
        vase = store.get(("eval", "s1"), "D2:1#2")
        assert vase is not None and "vase" in vase.value["content"]
        kite = store.get(("eval", "s1"), "D2:3")
        assert kite is not None and kite.value["content"].endswith("[shares a photo of a red kite over a hill]")
        report = evaluate(store, [sample], ks=[1, 6])
    # Five questions have evidence a search can find; "Bo's dog" has none and is not scored.
    assert report["overall"]["questions"] == 5
    assert report["per_category"]["4"]["recall@6"] == 100.0  # D2:1#2 found counts as D2:1
    assert report["evidence"]["naming_no_turn"] == 2
    assert report["short_results"] == 0


def test_captions_read_as_a_shared_photo() -> None:
    assert photo("a photo of a dog") == "a photo of a dog"
    assert photo("two cats on a sofa") == "a photo of two cats on a sofa"
