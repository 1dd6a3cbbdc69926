"""doctor's ``images`` check: whether pictures can be captioned and searched here, and how."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agentmm.settings import load_settings
from agentmm.tools._openclip import hub_repo
from agentmm.tools.caption import DEFAULT_COCA_MODEL, DEFAULT_COCA_PRETRAINED
from agentmm.tools.images_check import images_check


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agentmm.hub.hub_reachable", lambda *args, **kwargs: False)


def _cache(models_dir: Path, model: str, pretrained: str) -> None:
    """A file of the weights' hub repository in the hub cache ``models_dir``."""
    repo = hub_repo(model, pretrained)
    assert repo is not None
    snapshot = models_dir / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"weights")


def test_offline_without_weights_says_pictures_cannot_be_captioned_or_searched_and_how(
    tmp_path: Path, offline: None
) -> None:
    check = images_check(load_settings(models_dir=tmp_path))
    assert check["ok"] is True  # offline is a normal state, as for the hub check
    assert check["captions"] is False and check["search"] is False and check["captioner"] is None
    assert "cannot be captioned" in check["detail"] and "image search is off" in check["detail"]
    for setting in ("caption_model", "caption_mmproj", "mmproj", "clip_pretrained"):
        assert setting in check["detail"]


def test_cached_weights_caption_and_search(tmp_path: Path, offline: None) -> None:
    settings = load_settings(models_dir=tmp_path)
    _cache(tmp_path, DEFAULT_COCA_MODEL, DEFAULT_COCA_PRETRAINED)
    check = images_check(settings)
    assert check["captions"] is True and check["captioner"] == "coca" and check["search"] is False
    _cache(tmp_path, settings.clip_model, str(settings.clip_pretrained))
    check = images_check(settings)
    assert check["captions"] is True and check["search"] is True and "cached" in check["detail"]
    local = tmp_path / "clip.safetensors"
    local.write_bytes(b"weights")
    assert images_check(load_settings(models_dir=tmp_path / "empty", clip_pretrained=str(local)))["search"] is True


def test_a_configured_captioner_is_named_and_half_of_one_is_a_problem(tmp_path: Path, offline: None) -> None:
    vlm = images_check(load_settings(models_dir=tmp_path, caption_model="vlm.gguf", caption_mmproj="mmproj.gguf"))
    assert vlm["captions"] is True and vlm["captioner"] == "vlm" and "vlm.gguf" in vlm["detail"]
    half = images_check(load_settings(models_dir=tmp_path, caption_model="vlm.gguf"))
    assert half["ok"] is False and half["captions"] is False and "set caption_mmproj" in half["detail"]
    native = images_check(load_settings(models_dir=tmp_path, mmproj="chat-mmproj.gguf"))
    assert native["captions"] is True and native["captioner"] == "native"


def test_doctor_has_the_images_check(
    tmp_path: Path, offline: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """doctor said nothing about pictures: offline there are no captioner or CLIP weights."""
    from agentmm.cli import main

    monkeypatch.setenv("AGENTMM_MODEL", str(tmp_path / "missing.gguf"))  # a model problem: no probe runs
    monkeypatch.setenv("AGENTMM_MODELS_DIR", str(tmp_path / "hub"))
    monkeypatch.setenv("AGENTMM_MEMORY", "false")
    monkeypatch.setattr(sys, "argv", ["agentmm", "doctor", "--json"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main()
    checks = {check["name"]: check for check in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["images"]["captions"] is False and checks["images"]["search"] is False
    assert "caption_model" in checks["images"]["detail"]
