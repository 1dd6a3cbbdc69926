"""A GGUF split over packages: found without importing them, joined once, checked, atomic."""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path

import pytest

from agentmm.errors import ModelNotFoundError
from agentmm.model_parts import Part, SplitFile
from agentmm.models import SHIPPED_MODELS, ShippedModel, list_models, resolve_model
from agentmm.settings import Settings
from tests.tiny_gguf import write_header_only_gguf

PIECES = [b"GGUF" + b"a" * 1000, b"b" * 3000, b"c" * 17]


def _install_parts(root: Path, prefix: str, pieces: list[bytes]) -> tuple[Part, ...]:
    """Packages ``{prefix}_1`` ... on ``root`` (put on sys.path), each with one piece; their
    ``__init__`` raises, so a test fails if anything imports them."""
    parts = []
    for i, piece in enumerate(pieces, 1):
        package = root / f"{prefix}_{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise RuntimeError('a part package must not be imported')\n")
        (package / "data" / f"part{i:02d}.bin").write_bytes(piece)
        parts.append(Part(f"{prefix}_{i}", f"{prefix}-{i}", f"data/part{i:02d}.bin"))
    return tuple(parts)


def _split(parts: tuple[Part, ...], pieces: list[bytes], sha: str | None = None) -> SplitFile:
    whole = b"".join(pieces)
    return SplitFile("model.gguf", parts, len(whole), sha or hashlib.sha256(whole).hexdigest())


def test_joins_once_in_order_and_checks(site: Path, tmp_path: Path) -> None:
    split = _split(_install_parts(site, "pp", PIECES), PIECES)
    target_dir = tmp_path / "models"
    assert split.joined(target_dir) is None
    path = split.join(target_dir)
    assert path.read_bytes() == b"".join(PIECES)
    stamp = path.stat().st_mtime_ns
    assert split.join(target_dir) == path and path.stat().st_mtime_ns == stamp  # not joined again
    assert sorted(p.name for p in target_dir.iterdir()) == ["model.gguf", "model.gguf.lock"]
    assert not any(name.startswith("pp_") for name in sys.modules)


def test_a_wrong_digest_leaves_nothing_behind(site: Path, tmp_path: Path) -> None:
    split = _split(_install_parts(site, "pw", PIECES), PIECES, sha="0" * 64)
    with pytest.raises(ModelNotFoundError, match=r"do not join into the expected file.*pip install --force-reinstall"):
        split.join(tmp_path / "models")
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["model.gguf.lock"]


def test_a_missing_part_names_what_to_install(site: Path, tmp_path: Path) -> None:
    parts = _install_parts(site, "pm", PIECES[:2])
    split = _split((*parts, Part("pm_3", "pm-3", "data/part03.bin")), PIECES)
    assert [part.distribution for part in split.missing()] == ["pm-3"]
    with pytest.raises(ModelNotFoundError, match=r"parts missing \(pip install pm-3\)"):
        split.join(tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_concurrent_joins_write_one_file(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split = _split(_install_parts(site, "pc", PIECES), PIECES)
    joins = []
    original = SplitFile._join_locked

    def counted(self: SplitFile, directory: Path, pieces: list[Path]) -> Path:
        joins.append(1)
        return original(self, directory, pieces)

    monkeypatch.setattr(SplitFile, "_join_locked", counted)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(split.join(tmp_path / "m"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1 and len(joins) == 1


def test_a_split_model_joins_into_the_cache_dir_setting_where_models_list_shows_it(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    """Without models_dir the join went to the default cache (~/.cache/agentmm/models) whatever
    cache_dir said; now models list, resolve_model and the chat model's load all use cache_dir."""
    from agentmm.llm import ChatLlamaCpp

    whole = write_header_only_gguf(tmp_path / "whole.gguf").read_bytes()
    pieces = [whole[:100], whole[100:]]
    split = _split(_install_parts(site, "pj", pieces), pieces)
    tiny = ShippedModel("tiny-split", "", "tiny-split", "model.gguf", "a split test model", split=split)
    monkeypatch.setitem(SHIPPED_MODELS, "tiny-split", tiny)
    cache = tmp_path / "my-cache"
    expected = cache / "models" / "model.gguf"
    listed = {m.name: m for m in list_models(None, cache)}["tiny-split"]
    assert listed.installed and listed.path is None  # not joined yet
    assert resolve_model("tiny-split", cache_dir=cache).path == expected and expected.read_bytes() == whole
    assert {m.name: m for m in list_models(None, cache)}["tiny-split"].path == str(expected)
    chosen = settings.model_copy(update={"model": "tiny-split", "cache_dir": cache})
    assert ChatLlamaCpp.from_settings(chosen).model_path == str(expected)
    assert resolve_model("tiny-split", tmp_path / "models", cache_dir=cache).path == tmp_path / "models" / "model.gguf"


def test_the_qwen_tier_is_listed_with_how_to_install_it(tmp_path: Path) -> None:
    qwen = SHIPPED_MODELS["qwen0.5b"]
    listed = {m.name: m for m in list_models(tmp_path / "models")}["qwen0.5b"]
    assert listed.installed == (not qwen.split.missing())  # type: ignore[union-attr]
    assert listed.path is None and listed.size_bytes == 491_400_064  # nothing joined yet
    if qwen.split.missing():  # type: ignore[union-attr]
        with pytest.raises(ModelNotFoundError, match=r"pip install \"agentmm\[qwen\]\""):
            resolve_model("qwen0.5b", tmp_path / "models")


@pytest.mark.skipif(bool(SHIPPED_MODELS["qwen0.5b"].split.missing()), reason='pip install "agentmm[qwen]"')  # type: ignore[union-attr]
def test_the_real_qwen_parts_join_into_a_gguf_chat_model(tmp_path: Path) -> None:
    resolved = resolve_model("QWEN0.5B", tmp_path / "models")
    assert resolved.name == "qwen0.5b" and resolved.source == "shipped"
    assert resolved.path == tmp_path / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert resolved.info.architecture == "qwen2" and resolved.info.chat_template
    assert {m.name: m for m in list_models(tmp_path / "models")}["qwen0.5b"].path == str(resolved.path)
