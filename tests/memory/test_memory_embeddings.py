"""The sentence-transformers embedder: lazy, offline, loaded once; and one real semantic recall."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentmm.memory import EmbedderError
from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.embeddings import DEFAULT_MODEL_DIMS, SentenceTransformerEmbeddings

REPO = Path(__file__).resolve().parents[2]


def test_importing_memory_loads_nothing_heavy() -> None:
    code = (
        "import sys, agentmm.memory as m; m.StoreInUseError; "
        "heavy = ('chromadb', 'sentence_transformers', 'torch', 'langgraph', 'bm25s'); "
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
    # Loaded once per process: another embedder of the same model shares it.
    assert SentenceTransformerEmbeddings().load() is embedder.load()
    assert len(embedder.embed_query("x")) == 384
