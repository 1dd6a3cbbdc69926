"""Captioning: the real CoCa pipeline on random weights, and every way to have no captioner."""

from __future__ import annotations

import base64
import copy
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentmm.errors import ModelNotFoundError
from agentmm.tools import caption as captioning
from agentmm.tools import caption_image
from agentmm.tools import coca_decoding as decoding
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
    assert tokens[:, 0].tolist() == [decoding.START_OF_TEXT] * 2
    assert decoding.END_OF_TEXT not in tokens[:, 1:].tolist()


@pytest.fixture(scope="module")
def noisy_coca() -> Any:
    """CoCa ViT-B-32 with every weight perturbed: open_clip's random init leaves the decoder's
    output at zero, which would make any two decoders agree."""
    import torch

    torch.manual_seed(0)
    model, _ = captioning.CocaCaptioner(pretrained=None).load()
    model = copy.deepcopy(model)
    with torch.no_grad():
        for weights in model.parameters():
            weights.add_(torch.randn_like(weights) * 0.02)
    return model


@pytest.mark.parametrize("correct_cls_mask", [False, True])
def test_each_token_once_gives_open_clips_logits(noisy_coca: Any, correct_cls_mask: bool) -> None:
    """The cached decoder's logits at every length are those of open_clip's full forward,
    padding ids inside the caption included (open_clip masks them, in both of its modes)."""
    import torch

    noisy_coca.text.correct_cls_mask = correct_cls_mask
    assert decoding.CocaDecoder.supports(noisy_coca)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        encoded = noisy_coca(pixels)
        latent, embeddings = encoded["image_features"], encoded["image_embs"]
        tokens = torch.randint(1, 49000, (2, 12), generator=torch.Generator().manual_seed(2))
        tokens[:, 0], tokens[0, 4], tokens[1, 2] = decoding.START_OF_TEXT, 0, 0  # 0 is the padding id
        cached = decoding.CocaDecoder(noisy_coca, embeddings)
        for length in range(1, tokens.shape[1] + 1):
            full = noisy_coca(pixels, tokens[:, :length], image_latent=latent, image_embs=embeddings,
                              output_labels=False)["logits"][:, -1]  # fmt: skip
            torch.testing.assert_close(cached.next_logits(tokens[:, :length]), full, rtol=1e-4, atol=1e-4)
    assert float(full.abs().max()) > 0.1  # the comparison compared something


def test_greedy_captions_are_open_clips_greedy_captions(noisy_coca: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    fast = decoding.greedy_caption_tokens(noisy_coca, pixels, max_tokens=8, min_tokens=2)
    monkeypatch.setattr(decoding.CocaDecoder, "supports", staticmethod(lambda model: False))
    assert torch.equal(decoding.greedy_caption_tokens(noisy_coca, pixels, max_tokens=8, min_tokens=2), fast)


def test_caption_tool_from_a_captioner(tmp_path: Path) -> None:
    tool = captioning.make_caption_image_tool(captioner=RANDOM_COCA)
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


def test_perceive_offline_without_weights_answers_before_torch_is_imported(tmp_path: Path) -> None:
    """Offline with an empty hub cache, ``agentmm perceive`` said "no captioner" only after
    importing open_clip and torch (6-7 s here); the cache is looked at first now."""
    picture = make_image(tmp_path / "picture.png")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONWARNINGS": "ignore"}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "agentmm.cli", "perceive", str(picture)],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    said = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(said) == 1 and said[0].startswith(f"agentmm: error: {picture}: no image captioner is available offline")
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "open_clip"}


def test_weights_are_looked_for_in_the_hub_cache_first(tmp_path: Path) -> None:
    from agentmm.tools._openclip import check_weights_can_be_had, hub_repo
    from agentmm.tools.errors import VisionWeightsUnavailableError

    repo = hub_repo(captioning.DEFAULT_COCA_MODEL, captioning.DEFAULT_COCA_PRETRAINED)
    assert repo == "laion/mscoco_finetuned_CoCa-ViT-B-32-laion2B-s13B-b90k"  # open_clip's own table, unimported
    assert hub_repo("coca_ViT-B-32", "MSCOCO-finetuned_laion2b_s13b_b90k") == repo  # cleaned as open_clip does
    assert hub_repo("hf-hub:timm/some-model", None) == "timm/some-model"
    assert hub_repo("ViT-B-32", None) is None  # random weights: nothing to fetch
    assert hub_repo("ViT-B-32", "no-such-tag") is None  # open_clip says what is wrong with it
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"")
    assert hub_repo("ViT-B-32", str(checkpoint)) is None

    cache = tmp_path / "cache"
    with pytest.raises(VisionWeightsUnavailableError, match="not in the hub cache"):
        check_weights_can_be_had(captioning.DEFAULT_COCA_MODEL, captioning.DEFAULT_COCA_PRETRAINED, cache)
    cached = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abc" / "open_clip_model.safetensors"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    # Something is cached: open_clip loads it as before (and says if it is not what it wants).
    check_weights_can_be_had(captioning.DEFAULT_COCA_MODEL, captioning.DEFAULT_COCA_PRETRAINED, cache)


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


@pytest.mark.e2e
def test_a_vlm_captions_through_llama_cpp_and_closes_with_its_runtime(tmp_path: Path, shipped_model: Path) -> None:
    # The shipped SmolLM2-135M (576 wide) with a tiny random projector: meaningless words, but
    # the picture goes through llama.cpp's projector and the model's chat handler for real.
    pytest.importorskip("gguf", reason="the test extra's gguf package writes the projector")
    from agentmm.runtime import Runtime
    from tests.tiny_mmproj import write_tiny_mmproj

    projector = write_tiny_mmproj(tmp_path / "tiny-mmproj.gguf", n_embd_text=576)
    runtime = Runtime()
    captioner = captioning.VLMCaptioner(str(shipped_model), str(projector), n_ctx=512,
                                        max_tokens=6, runtime=runtime)  # fmt: skip
    caption = captioning.caption_file(make_image(tmp_path / "red.png"), captioner)
    assert caption.text and caption.model == captioner.name
    loaded = captioner.loaded()
    assert loaded is captioner.loaded() and not loaded.closed  # loaded once, in the runtime
    runtime.close()
    assert loaded.closed


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "AVIF"])
def test_the_caption_tool_names_each_picture_format_it_reads(tmp_path: Path, fmt: str) -> None:
    """The tool told the model 'PNG, JPEG, GIF, WebP, BMP' while TIFF and AVIF pictures (README's
    list) caption too: each format named is one the tool reads, and each it reads is named."""
    from PIL import Image

    from agentmm.tools.media import IMAGE_FORMATS
    from tests.tools.fake_captioner import FakeCaptioner

    tool = captioning.make_caption_image_tool(captioner=FakeCaptioner(lambda image: f"{image.width}x{image.height}"))
    picture = tmp_path / f"p.{fmt.lower()}"
    Image.new("RGB", (40, 30), "red").save(picture, fmt)
    assert tool.invoke({"path": str(picture)}) == "40x30"
    named = [name.upper() for name in IMAGE_FORMATS.split(", ")]
    assert fmt in named and sorted(named) == sorted(["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "AVIF"])
    assert f"({IMAGE_FORMATS})" in (tool.description or "")
