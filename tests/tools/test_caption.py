"""Captioning: the real CoCa pipeline on random weights, and every way to have no captioner."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

from agentmm.errors import ModelNotFoundError
from agentmm.tools import caption as captioning
from agentmm.tools import caption_image
from agentmm.tools.errors import CaptionerUnavailableError, CorruptMediaError
from tests.tools.media_files import make_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RANDOM_COCA = captioning.CocaCaptioner(pretrained=None, max_tokens=6, min_tokens=2)


def test_coca_pipeline_runs_on_random_weights(tmp_path: Path) -> None:
    """Preprocess, greedy decoding and detokenising all run; the words are noise."""
    result = captioning.caption_file(make_image(tmp_path / "red.jpg"), RANDOM_COCA)
    assert isinstance(result.text, str) and "<start_of_text>" not in result.text
    assert result.model == "coca_ViT-B-32:random"
    assert result.seconds > 0


def test_greedy_decoding_shapes() -> None:
    import torch

    model, _ = RANDOM_COCA.load()
    tokens = captioning.greedy_caption_tokens(model, torch.zeros(2, 3, 224, 224), max_tokens=3, min_tokens=3)
    assert tokens.shape == (2, 4)  # start token + 3, none may end early
    assert tokens[:, 0].tolist() == [captioning.START_OF_TEXT] * 2
    assert captioning.END_OF_TEXT not in tokens[:, 1:].tolist()


def test_caption_tool_from_a_captioner(tmp_path: Path) -> None:
    tool = captioning.make_caption_image_tool(RANDOM_COCA)
    assert tool.name == "caption_image"
    assert isinstance(tool.invoke({"path": str(make_image(tmp_path / "x.png"))}), str)


def test_no_captioner_offline_says_how_to_get_one(tmp_path: Path) -> None:
    # HF_HUB_OFFLINE=1 (conftest): CoCa's pretrained weights cannot be fetched
    with pytest.raises(CaptionerUnavailableError) as error:
        caption_image.invoke({"path": str(make_image(tmp_path / "cat.png"))})
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("no image captioner is available offline")
    assert "caption_model" in message and "CoCa" in message


def test_bad_image_fails_before_any_model(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(make_image(tmp_path / "whole.png").read_bytes()[:40])
    with pytest.raises(CorruptMediaError):
        captioning.caption_file(broken, captioning.CocaCaptioner("no-such-arch"))


def test_vlm_needs_both_files() -> None:
    with pytest.raises(CaptionerUnavailableError, match="caption_mmproj"):
        captioning.make_captioner(caption_model="model.gguf")
    with pytest.raises(CaptionerUnavailableError, match="caption_model"):
        captioning.make_captioner(caption_mmproj="mmproj.gguf")


def test_vlm_files_must_exist(tmp_path: Path) -> None:
    model = tmp_path / "vlm.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(ModelNotFoundError, match="caption_mmproj not found"):
        captioning.make_captioner(str(model), str(tmp_path / "missing-mmproj.gguf"))
    with pytest.raises(ModelNotFoundError, match=r"caption_model .* is not a file"):
        captioning.make_captioner(str(tmp_path), str(model))


def test_vlm_hub_id_offline_is_a_typed_error() -> None:
    with pytest.raises(ModelNotFoundError, match="no network"):
        captioning.make_captioner("someone/some-vlm/model.gguf", "someone/some-vlm/mmproj.gguf")


def test_vlm_configured_is_chosen_and_loads_lazily(tmp_path: Path) -> None:
    model, mmproj = tmp_path / "vlm.gguf", tmp_path / "mmproj.gguf"
    model.write_bytes(b"GGUF")
    mmproj.write_bytes(b"GGUF")
    chosen = captioning.make_captioner(str(model), str(mmproj))
    assert isinstance(chosen, captioning.VLMCaptioner)
    assert (chosen.model_path, chosen.mmproj_path, chosen.name) == (model, mmproj, "vlm")


def test_image_data_uri_is_a_shrunk_png() -> None:
    from PIL import Image

    uri = captioning.image_data_uri(Image.new("RGB", (3000, 1500), (1, 2, 3)))
    assert uri.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert decoded.size == (1024, 512)
