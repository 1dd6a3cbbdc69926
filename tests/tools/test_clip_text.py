"""The CLIP text tower on onnxruntime: open_clip's vectors, saved once, used by image search.

ViT-B-32 with random (seeded) weights: the export, the int8 quantisation and the check against
open_clip run on the real network, the same shapes and the same code as with real weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentmm.tools import ImageIndex, clip_text
from agentmm.tools.clip_search import ClipEmbedder
from agentmm.tools.shared_runtime import close_process_runtime
from tests.tools.media_files import make_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "cat",
    "a photo of the beach from last summer",
    "an old lighthouse on a rocky coast during a storm, waves breaking over the rocks at night",
    " ".join(["far too long for the seventy-seven tokens CLIP reads"] * 10),
]


def torch_vectors(embedder: ClipEmbedder, texts: list[str]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return embedder.load()[0].encode_text(embedder.tokenizer()(texts), normalize=True).numpy()


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As if this were a new process: no encoder exported or loaded yet (the tools' process
    runtime, where encoders made without an agent's runtime live, starts empty)."""
    close_process_runtime()
    yield
    close_process_runtime()


def test_exported_tower_gives_open_clips_vectors_for_every_length(tmp_path: Path) -> None:
    embedder = ClipEmbedder(pretrained=None, export_dir=tmp_path)
    encoder = embedder.text_encoder()
    assert encoder is not None and encoder.quantized
    got = np.array(embedder.embed_texts(TEXTS))  # one batch, four lengths (the last truncated)
    expected = torch_vectors(embedder, TEXTS)
    assert got.shape == expected.shape == (4, 512)
    assert (got * expected).sum(axis=1).min() >= clip_text.MIN_COSINE
    alone = np.array([embedder.embed_texts([text])[0] for text in TEXTS])
    assert np.abs(alone - got).max() < 1e-6  # batching never changes a vector


def test_an_export_is_saved_and_a_new_process_loads_it_without_the_torch_model(
    tmp_path: Path, fresh_process: None
) -> None:
    first = ClipEmbedder(pretrained=None, export_dir=tmp_path)
    vector = first.embed_texts(["a red bicycle"])[0]
    saved = tmp_path / clip_text.cache_key("ViT-B-32", None)
    assert (saved / clip_text.GRAPH).stat().st_size > 10_000_000 and (saved / clip_text.META).is_file()
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind

    close_process_runtime()  # the encoder this process made is gone: only the saved one is left

    def no_model() -> Any:
        raise AssertionError("the saved export should be used: the model must not load")

    encoder = clip_text.text_encoder(no_model, first.tokenizer(), saved.name, tmp_path)
    assert encoder is not None
    again = encoder.encode(first.tokenizer()(["a red bicycle"]).numpy())[0]
    assert np.abs(again - np.array(vector)).max() < 1e-6


def test_a_damaged_export_is_made_again(tmp_path: Path, fresh_process: None) -> None:
    saved = tmp_path / clip_text.cache_key("ViT-B-32", None)
    saved.mkdir()
    (saved / clip_text.META).write_text('{"format": 1, "pool": "argmax"}')
    (saved / clip_text.GRAPH).write_bytes(b"\x08\x07 not a graph")
    embedder = ClipEmbedder(pretrained=None, export_dir=tmp_path)
    assert embedder.text_encoder() is not None
    assert (saved / clip_text.GRAPH).stat().st_size > 10_000_000


def test_a_model_that_cannot_be_exported_stays_on_torch(
    tmp_path: Path, fresh_process: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not clip_text.exportable(object())
    monkeypatch.setattr(clip_text, "exportable", lambda model: False)
    embedder = ClipEmbedder(pretrained=None, export_dir=tmp_path)
    assert embedder.text_encoder() is None
    got = np.array(embedder.embed_texts(TEXTS[:2]))
    assert np.abs(got - torch_vectors(embedder, TEXTS[:2])).max() < 1e-6
    assert not list(tmp_path.iterdir())


def test_search_ranks_as_open_clip_would(tmp_path: Path, image_dir: Path) -> None:
    for n in range(12):
        make_image(image_dir / f"{n:02}.png", (20 * n, 255 - 20 * n, (90 * n) % 256))
    with ImageIndex(tmp_path / "data", pretrained=None) as index:
        index.index_dir(image_dir)
        assert (tmp_path / "data" / "embedders" / clip_text.cache_key("ViT-B-32", None)).is_dir() is False
        hits = index.search_text("a green square", k=5)
        assert index.embedder.text_encoder() is not None
        assert (tmp_path / "data" / "embedders" / clip_text.cache_key("ViT-B-32", None) / clip_text.GRAPH).is_file()
        query = torch_vectors(index.embedder, ["a green square"])[0]
        stored = index.collection.get(include=["embeddings", "metadatas"])
        scores = {
            m["path"]: float(np.dot(query, e)) for m, e in zip(stored["metadatas"], stored["embeddings"], strict=True)
        }
        fifth = sorted(scores.values(), reverse=True)[4]
        assert len(hits) == 5
        for hit in hits:  # the same five, up to near-ties (random weights score colours alike)
            assert hit.score == pytest.approx(scores[hit.path], abs=0.01)
            assert scores[hit.path] >= fifth - 0.01
