"""The memory development set (benchmarks/memory_devset.py): deterministic, valid LoCoMo, and
every question's evidence really states its answer."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from agentmm.memory.locomo import load_locomo

ROOT = Path(__file__).resolve().parents[2]


def _devset() -> ModuleType:
    spec = importlib.util.spec_from_file_location("memory_devset", ROOT / "benchmarks" / "memory_devset.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["memory_devset"] = module
    spec.loader.exec_module(module)
    return module


def test_the_set_is_deterministic_valid_and_its_evidence_holds_the_answers(tmp_path: Path) -> None:
    make = _devset().devset
    data = make(conversations=3, sessions=8, turns=16, seed=5)
    assert data == make(conversations=3, sessions=8, turns=16, seed=5)
    assert data != make(conversations=3, sessions=8, turns=16, seed=6)
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(data))
    samples = load_locomo(path)
    assert len(samples) == 3
    for sample in samples:
        said = {turn.dia_id: f"{turn.text} {turn.blip_caption or ''}" for _, _, turn in sample.turns()}
        categories = {q.category for q in sample.qa}
        assert categories == {1, 2, 3, 4}
        for q in sample.qa:
            assert q.evidence and all(e in said for e in q.evidence), q
            if q.category == 1:  # multi-hop: two facts, in two different sessions
                assert len(q.evidence) == 2 and q.evidence[0].split(":")[0] != q.evidence[1].split(":")[0]
                assert str(q.answer) in said[q.evidence[1]]
            elif q.category == 4:
                assert str(q.answer) in said[q.evidence[0]]
