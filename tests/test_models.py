from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from agentmm.errors import CorruptModelError, ModelNotFoundError, ModelTooLargeError, NotAGGUFError
from agentmm.gguf import read_gguf
from agentmm.models import check_fits_in_memory, download_from_hub, list_models, resolve_model


def test_shipped_model_header(shipped_model: Path) -> None:
    info = read_gguf(shipped_model)
    assert info.architecture == "llama"
    assert info.block_count == 30
    assert info.chat_template and "im_start" in info.chat_template
    assert info.kv_cache_bytes(4096) > 0


def test_resolve_shipped_and_path(shipped_model: Path) -> None:
    assert resolve_model("smollm2").path == shipped_model
    resolved = resolve_model(str(shipped_model))
    assert resolved.source == "path"
    assert resolved.name == shipped_model.stem


def test_missing_file() -> None:
    with pytest.raises(ModelNotFoundError, match=r"model not found: nowhere\.gguf"):
        resolve_model("nowhere.gguf")


def test_a_missing_file_under_a_folder_here_is_missing_not_a_hub_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``models/qwen/q.gguf`` (three parts) was taken for a hub id: "cannot download ... no network"."""
    (tmp_path / "models" / "qwen").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"model not found: models/qwen/q\.gguf"):
        resolve_model("models/qwen/q.gguf", download=lambda *args: pytest.fail("not a hub id"))


def test_not_a_gguf(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(NotAGGUFError, match="not a GGUF"):
        resolve_model(str(fake))
    with pytest.raises(NotAGGUFError, match="directory"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("keep", [10, 200, 5_000, 60_000_000])
def test_truncated_gguf(tmp_path: Path, shipped_model: Path, keep: int) -> None:
    cut = tmp_path / "cut.gguf"
    with shipped_model.open("rb") as src:
        cut.write_bytes(src.read(keep))
    with pytest.raises(CorruptModelError, match="truncated"):
        read_gguf(cut)


def test_damaged_header_counts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 0))
    with pytest.raises(CorruptModelError, match="damaged"):
        read_gguf(bad)
    bad.write_bytes(b"GGUF" + struct.pack("<I", 99))
    with pytest.raises(CorruptModelError, match="version 99"):
        read_gguf(bad)


def test_model_too_large_for_memory(tmp_path: Path, shipped_model: Path) -> None:
    info = read_gguf(shipped_model)
    with pytest.raises(ModelTooLargeError, match="GiB of memory is free"):
        check_fits_in_memory(info, 4096, available=50 * 2**20)
    check_fits_in_memory(info, 4096, available=8 * 2**30)


def test_model_too_large_sparse_file(tmp_path: Path, shipped_model: Path) -> None:
    """A real header on a file far larger than RAM (sparse, so it costs no disk)."""
    huge = tmp_path / "huge.gguf"
    shutil.copyfile(shipped_model, huge)
    with huge.open("r+b") as f:
        f.truncate(4 * 2**40)
    with pytest.raises(ModelTooLargeError):
        check_fits_in_memory(read_gguf(huge), 4096)


def test_hub_id_uses_downloader(tmp_path: Path, shipped_model: Path) -> None:
    calls = []

    def fake_download(repo_id: str, filename: str, models_dir: Path | None) -> Path:
        calls.append((repo_id, filename, models_dir))
        target = tmp_path / "cache" / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped_model, target)
        return target

    resolved = resolve_model("someone/some-model-GGUF/q4/model.Q4.gguf", tmp_path, download=fake_download)
    assert calls == [("someone/some-model-GGUF", "q4/model.Q4.gguf", tmp_path)]
    assert resolved.source == "hub"
    assert resolved.info.architecture == "llama"


def test_hub_download_offline_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"cannot download someone/repo/x\.gguf"):
        download_from_hub("someone/repo", "x.gguf", tmp_path)


def test_list_models_finds_hub_cache(tmp_path: Path, shipped_model: Path) -> None:
    names = [m.name for m in list_models(tmp_path / "empty")]
    assert names == ["smollm2", "qwen0.5b"]
