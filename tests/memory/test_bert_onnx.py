"""The torch-free BERT graph: sentence-transformers' vectors on the shipped model, built in a child
that never imports torch, and only for models it really implements (the rest go to torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentmm.memory import _onnx, bert_onnx
from agentmm.memory.embeddings import default_model_path, load_sentence_transformer

REPO = Path(__file__).resolve().parents[2]
MODEL = default_model_path()
TEXTS = [
    "hello",
    "",
    "My sister is called Mira; she studied architecture in Lisbon.",
    "Ünïcödé, naïve café — 日本語のテキスト and emoji 🙂",
    "[08 May 2023] Caroline: I went to the LGBTQ support group yesterday.\n(in reply to: Melanie: How are you?)",
    "   spaces   and\ttabs\n\nand newlines   ",
    " ".join(["a long message that runs well past the model's input limit"] * 60),
    "Pickle the cat " * 200,
]


@pytest.fixture(scope="module")
def built() -> bert_onnx.Built:
    result = bert_onnx.build(MODEL)
    assert result is not None
    return result


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    model = load_sentence_transformer(str(MODEL), "cpu", local=True)
    return model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def test_the_built_graph_gives_sentence_transformers_vectors(built: bert_onnx.Built, reference: np.ndarray) -> None:
    encoder = _onnx._encoder(built.graph, built.tokenizer_json, {"format": _onnx.FORMAT, **built.meta}, 1)
    batched = encoder.encode(TEXTS)  # sorted by length, padded within each batch
    one_batch = encoder._run(list(TEXTS))  # all in one padded batch, the longest at 256 tokens
    alone = np.concatenate([encoder.encode([text]) for text in TEXTS])
    for got in (batched, one_batch, alone):
        assert got.shape == (len(TEXTS), 384)
        assert np.abs(got - reference).max() <= _onnx.TOLERANCE
    # The long texts were cut at sentence-transformers' max_seq_length, not tokenizer.json's 128.
    assert built.meta == {"inputs": list(_onnx.INPUTS), "max_seq_length": 256, "dims": 384}
    lengths = [len(e.ids) for e in encoder.tokenizer.encode_batch(TEXTS[-2:])]
    assert lengths == [256, 256]
    assert np.abs(alone[-1] - alone[-2]).max() > 0.01  # different texts past the limit stay different


def test_the_export_child_builds_without_importing_torch(tmp_path: Path) -> None:
    directory = tmp_path / "cache" / "minilm"
    code = (
        "import sys, json; from pathlib import Path; from agentmm.memory import _onnx; "
        f"status = _onnx.export_into(Path({str(MODEL)!r}), Path({str(directory)!r})); "
        "heavy = ('torch', 'transformers', 'sentence_transformers'); "
        "print(json.dumps([status, [n for n in heavy if n in sys.modules]]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [0, []]
    meta = json.loads((directory / _onnx.META).read_text())
    assert meta["builder"] == "bert_onnx" and meta["format"] == _onnx.FORMAT
    assert sorted(path.name for path in directory.iterdir()) == sorted([_onnx.GRAPH, _onnx.TOKENIZER, _onnx.META])
    assert _onnx.load_cached(directory) is not None
    leftovers = [p.name for p in directory.parent.iterdir() if p.name.startswith(f".{directory.name}.")]
    assert leftovers == [f".{directory.name}.lock"]  # the lock file, and no half-written temporary folder


def _variant(tmp_path: Path, edit: Callable[[Path], Any]) -> Path:
    """A copy of the shipped model (big files linked) with ``edit`` applied to it."""
    copy = tmp_path / "model"
    copy.mkdir()
    for path in MODEL.iterdir():
        if path.is_dir():
            (copy / path.name).mkdir()
            for inner in path.iterdir():
                (copy / path.name / inner.name).write_bytes(inner.read_bytes())
        elif path.stat().st_size > 1_000_000:
            (copy / path.name).symlink_to(path)
        else:
            (copy / path.name).write_bytes(path.read_bytes())
    edit(copy)
    return copy


def _edit_json(relative: str, change: Callable[[Any], Any]) -> Callable[[Path], None]:
    def edit(model_dir: Path) -> None:
        path = model_dir / relative
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return edit


def _set(**values: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda config: {**config, **values}


UNSUPPORTED = {
    "not bert": _edit_json("config.json", _set(model_type="roberta")),
    "relative positions": _edit_json("config.json", _set(position_embedding_type="relative_key")),
    "tanh gelu": _edit_json("config.json", _set(hidden_act="gelu_new")),
    "cls pooling": _edit_json(
        "1_Pooling/config.json", _set(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    ),
    "mean and max pooling": _edit_json("1_Pooling/config.json", _set(pooling_mode_max_tokens=True)),
    "a dense layer after pooling": _edit_json(
        "modules.json",
        lambda modules: [
            *modules,
            {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"},
        ],
    ),
    "lower-cased by sentence-transformers": _edit_json("sentence_bert_config.json", _set(do_lower_case=True)),
    "weights only as pytorch_model.bin": lambda model_dir: (model_dir / "model.safetensors").unlink(),
    "no modules.json": lambda model_dir: (model_dir / "modules.json").unlink(),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_only_what_is_implemented_is_built(tmp_path: Path, case: str) -> None:
    assert bert_onnx.build(_variant(tmp_path, UNSUPPORTED[case])) is None


def test_without_a_normalize_module_it_is_still_built(tmp_path: Path) -> None:
    """The graph always normalises, as the torch export does (recall compares unit vectors)."""
    assert bert_onnx.build(_variant(tmp_path, _edit_json("modules.json", lambda modules: modules[:2]))) is not None


@pytest.mark.slow
def test_a_model_it_does_not_build_is_still_exported_with_torch(tmp_path: Path) -> None:
    """GELU's tanh form is not built here: the child goes on to the torch export, which checks
    itself against sentence-transformers."""
    model_dir = _variant(tmp_path, UNSUPPORTED["tanh gelu"])
    directory = tmp_path / "cache" / "variant"
    assert _onnx.export_into(model_dir, directory) == 0
    assert json.loads((directory / _onnx.META).read_text())["builder"] == "torch.onnx"
    assert _onnx.load_cached(directory) is not None
