"""The sentence-transformers embedder: lazy, offline, loaded once; and one real semantic recall."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agentmm.memory import EmbedderError, _onnx
from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.embeddings import DEFAULT_MODEL_DIMS, SentenceTransformerEmbeddings

REPO = Path(__file__).resolve().parents[2]


def test_importing_memory_loads_nothing_heavy() -> None:
    code = (
        "import sys, agentmm.memory as m; m.StoreInUseError; "
        "heavy = ('chromadb', 'sentence_transformers', 'torch', 'langgraph', 'bm25s', 'onnxruntime', 'onnx'); "
        "print([n for n in heavy if n in sys.modules])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_default_model_dims_are_known_without_loading() -> None:
    embedder = SentenceTransformerEmbeddings()
    assert embedder.dims == DEFAULT_MODEL_DIMS
    config = embedder.index_config()
    assert config == {"dims": 384, "embed": embedder, "fields": ["text"]}
    assert Path(embedder.model_name).is_dir()


def test_missing_model_path_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="no embedding model at"):
        SentenceTransformerEmbeddings(tmp_path / "nope").embed_query("hello")
    with pytest.raises(EmbedderError, match="unknown embedding backend"):
        SentenceTransformerEmbeddings(backend="tensorflow")


def test_only_transformer_plus_mean_pooling_models_are_exported() -> None:
    def module(name: str, **config: object) -> object:
        return type(name, (), {"get_config_dict": lambda self: config, "auto_model": None, "do_lower_case": False})()

    class Model(list):
        tokenizer = type("Tok", (), {"backend_tokenizer": None})()

    minilm = Model([module("Transformer"), module("Pooling", pooling_mode="mean"), module("Normalize")])
    assert _onnx.exportable(minilm)
    assert not _onnx.exportable(Model([module("Transformer"), module("Pooling", pooling_mode="cls")]))
    assert not _onnx.exportable(Model([*minilm, module("Dense")]))


def test_onnx_runtime_gives_the_same_vectors_and_a_cached_export_needs_no_torch(tmp_path: Path) -> None:
    texts = ["My sister is called Mira.", "What is my sister called?", "Pickle the cat " * 200]
    cache = tmp_path / "cache"
    embedder = SentenceTransformerEmbeddings(cache_dir=cache)
    vectors = np.array(embedder.embed_documents(texts))
    assert embedder.runtime == "onnx"
    reference = np.array(SentenceTransformerEmbeddings(backend="torch").embed_documents(texts))
    assert np.abs(vectors - reference).max() < 1e-5
    assert np.allclose(embedder.embed_query(texts[1]), reference[1], atol=1e-5)
    (export,) = [path for path in cache.iterdir() if path.is_dir()]
    assert (export / "model.onnx").is_file()
    assert json.loads((export / _onnx.META).read_text())["builder"] == "bert_onnx"  # written without torch

    code = (
        "import sys, json; from agentmm.memory.embeddings import SentenceTransformerEmbeddings as E; "
        f"e = E(cache_dir={str(cache)!r}); v = e.embed_query({texts[0]!r}); "
        "print(json.dumps([e.runtime, [n for n in ('torch', 'sentence_transformers') if n in sys.modules], v]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    runtime, heavy, vector = json.loads(out.stdout)
    assert runtime == "onnx" and heavy == []
    assert np.abs(np.array(vector) - reference[0]).max() < 1e-5

    # A damaged export is replaced, not trusted.
    (export / "model.onnx").write_bytes(b"not a graph")
    assert _onnx.load_cached(export) is None
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout)[0] == "onnx" and _onnx.load_cached(export) is not None


def test_first_export_runs_in_a_child_so_the_process_never_imports_torch(tmp_path: Path) -> None:
    """A torch export needs about a gigabyte resident (the default model is built without torch, in
    the child all the same); the chat's process only loads the result. Two processes exporting
    into one empty cache at once both end up on the one whole export."""
    cache = tmp_path / "cache"
    code = (
        "import sys, json; from agentmm.memory.embeddings import SentenceTransformerEmbeddings as E; "
        f"e = E(cache_dir={str(cache)!r}); v = e.embed_query('hello'); "
        "print(json.dumps([e.runtime, [n for n in ('torch', 'sentence_transformers') if n in sys.modules]]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    both = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for process in both:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert json.loads(out) == ["onnx", []]
    (export,) = [path for path in cache.iterdir() if path.is_dir()]
    assert _onnx.load_cached(export) is not None


def test_a_closed_embedder_lets_its_model_go_and_says_so() -> None:
    from agentmm.errors import RuntimeClosedError

    embedder = SentenceTransformerEmbeddings(backend="torch")
    assert len(embedder.embed_query("hello")) == DEFAULT_MODEL_DIMS
    embedder.close()
    assert embedder._encoder is None and embedder._model is None
    with pytest.raises(RuntimeClosedError, match="closed"):
        embedder.embed_query("hello again")


def test_close_does_not_wait_for_a_load_in_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first export takes seconds: quitting meanwhile must not wait for it, and what it loads
    is not kept."""
    import threading

    from agentmm.errors import RuntimeClosedError

    embedder = SentenceTransformerEmbeddings()
    started, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_load() -> object:
        started.set()
        release.wait(60)
        return object()

    def load() -> None:
        try:
            embedder.load()
        except BaseException as exc:
            errors.append(exc)

    monkeypatch.setattr(embedder, "_load_encoder", slow_load)
    loader = threading.Thread(target=load)
    loader.start()
    assert started.wait(60)
    closer = threading.Thread(target=embedder.close)
    closer.start()
    closer.join(30)  # a close that waited for the load would still be blocked here
    blocked = closer.is_alive()
    release.set()
    loader.join(60)
    closer.join(60)
    assert not blocked
    assert len(errors) == 1 and isinstance(errors[0], RuntimeClosedError)
    assert embedder._encoder is None


@pytest.mark.slow
def test_shipped_minilm_recalls_by_meaning(tmp_path: Path) -> None:
    offline_before = os.environ.get("HF_HUB_OFFLINE")
    embedder = SentenceTransformerEmbeddings()
    memories = {
        "sister": "Alice's sister lives in Lisbon and works as a nurse.",
        "tea": "Alice drinks green tea every morning before work.",
        "dog": "Alice's dog Biscuit is afraid of thunderstorms.",
        "job": "Alice quit her job at the bank last spring.",
        "music": "Alice plays the cello in a community orchestra.",
    }
    with ChromaStore.from_path(tmp_path / "store", index=embedder.index_config()) as store:
        for key, text in memories.items():
            store.put(("memories", "u1", "alice"), key, {"text": text})
        expectations = {
            "Which city is her sibling in?": "sister",
            "What does she have for breakfast drinks?": "tea",
            "Is her pet scared of storms?": "dog",
            "What instrument does she play?": "music",
            "Where did she use to be employed?": "job",
        }
        for query, key in expectations.items():
            hits = store.search(("memories", "u1", "alice"), query=query, limit=3)
            assert hits[0].key == key, (query, [(h.key, h.score) for h in hits])
            assert hits[0].score is not None and hits[0].score > hits[1].score
    assert os.environ.get("HF_HUB_OFFLINE") == offline_before
    # The loaded model is the embedder's own: another embedder of the same model loads its own.
    other = SentenceTransformerEmbeddings()
    assert other.load() is not embedder.load()
    assert len(embedder.embed_query("x")) == 384
    other.close()
    assert len(embedder.embed_query("y")) == 384
