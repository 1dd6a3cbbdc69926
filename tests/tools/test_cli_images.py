"""`agentmm images index|search` end to end: the real command, its output and its exit codes.

Most runs call the console entry point (``agentmm.cli.main``) in this process, so open_clip is
imported and the model built once; two run as real subprocesses, because only a fresh process
shows what a user sees (a second stderr line from a library's logging, a traceback) and that
an index written by one process is searched by the next. The model is open_clip ViT-B-32 with
random, seeded weights (``clip_pretrained = "random"``): the scores mean nothing, but every
code path is the real one, and every process builds the same model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agentmm.cli import main
from agentmm.settings import load_settings
from agentmm.tools.clip_search import (
    ClipEmbedder,
    close_default_image_indexes,
    default_image_index,
    pretrained_from_setting,
)
from tests.tools.media_files import make_image

pytestmark = pytest.mark.usefixtures("one_torch_thread", "random_clip")

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@dataclass
class Done:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


@pytest.fixture
def random_clip(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Random CLIP weights (nothing to download); indexes this process opened are closed after."""
    monkeypatch.setenv("AGENTMM_CLIP_PRETRAINED", "random")
    yield
    close_default_image_indexes()


@pytest.fixture
def photos(image_dir: Path) -> dict[str, Path]:
    return {name: make_image(image_dir / f"{name}.png", color) for name, color in COLORS.items()}


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> Done:
    """Run the console entry point in this process, as `agentmm ARGS` would."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["agentmm", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    code = exited.value.code
    return Done(code if isinstance(code, int) else 1, out, err)


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `agentmm ARGS` as a real subprocess (torch on one thread, as the fixture does here)."""
    return subprocess.Popen(
        [sys.executable, "-m", "agentmm.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )  # fmt: skip


def finish(running: subprocess.Popen[str]) -> Done:
    out, err = running.communicate(timeout=180)
    return Done(running.returncode, out, err)


def process(*args: str, env: dict[str, str] | None = None) -> Done:
    return finish(start(*args, env=env))


def counts(report: dict[str, Any]) -> tuple[int, ...]:
    keys = ("added", "updated", "removed", "unchanged", "embedded")
    return (*(report[key] for key in keys), len(report["failed"]))


def assert_one_error_line(done: Done, needle: str) -> None:
    assert done.code != 0
    assert "Traceback" not in done.err
    lines = done.err.strip().splitlines()
    assert len(lines) == 1, done.err
    assert lines[0].startswith("agentmm: error: ") and needle in lines[0], lines[0]


def test_clip_settings_come_from_env_and_file(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AGENTMM_CLIP_PRETRAINED")
    shown = cli(capsys, monkeypatch, "config", "show", "--json").json()
    assert shown["settings"]["clip_model"] == "ViT-B-32"
    assert shown["settings"]["clip_pretrained"] == "laion2b_s34b_b79k"
    assert shown["sources"]["clip_pretrained"] == "default"

    (isolated_env / "config.toml").write_text('clip_pretrained = "none"\n')
    monkeypatch.setenv("AGENTMM_CLIP_MODEL", "RN50")
    shown = cli(capsys, monkeypatch, "config", "show", "--json").json()
    assert (shown["settings"]["clip_model"], shown["sources"]["clip_model"]) == ("RN50", "env")
    assert shown["settings"]["clip_pretrained"] == "none"
    assert shown["sources"]["clip_pretrained"].startswith("file ")

    monkeypatch.setenv("AGENTMM_CLIP_MODEL", "")
    assert_one_error_line(cli(capsys, monkeypatch, "config", "show"), "bad setting clip_model")
    assert [pretrained_from_setting(v) for v in ("random", "None", "laion2b_s34b_b79k")] == [
        None,
        None,
        "laion2b_s34b_b79k",
    ]


def test_the_default_index_follows_the_settings(isolated_env: Path) -> None:
    """Other weights are another vector space: another cached index and collection, same data dir."""
    random_index = default_image_index(load_settings())
    assert random_index.collection.metadata == {"model": "ViT-B-32", "pretrained": "random"}
    assert default_image_index(load_settings()) is random_index
    real = default_image_index(load_settings(clip_pretrained="laion2b_s34b_b79k"))
    assert real is not random_index and real.directory == random_index.directory
    assert real.collection.metadata == {"model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}


@pytest.mark.slow
def test_index_in_one_process_then_search_in_another(
    image_dir: Path, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    running = start("images", "index", str(image_dir), "--json")
    # Meanwhile, on the other core, build this process's model and its text export (seconds each).
    ClipEmbedder("ViT-B-32", None).text_encoder()
    done = finish(running)
    assert done.err == ""  # open_clip's "initialized randomly" log line does not leak
    indexed = done.json()
    assert counts(indexed) == (3, 0, 0, 0, 3, 0)
    assert set(indexed) >= {"added", "updated", "removed", "unchanged", "failed", "embedded", "seconds"}

    found = cli(capsys, monkeypatch, "images", "search", "a red square", "-k", "2", "--json").json()
    assert found["indexed"] == 3
    assert len(found["results"]) == 2
    assert all(set(hit) == {"path", "score"} and Path(hit["path"]).parent == image_dir for hit in found["results"])
    scores = [hit["score"] for hit in found["results"]]
    assert scores == sorted(scores, reverse=True)

    # The same seeded weights in both processes: an image finds itself with a cosine of 1.
    like = cli(capsys, monkeypatch, "images", "search", "--image", str(photos["green"]), "-k", "3", "--json").json()
    assert like["results"][0]["path"] == str(photos["green"])
    assert like["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert len(like["results"]) == 3

    plain = cli(capsys, monkeypatch, "images", "search", "--image", str(photos["blue"]), "-k", "1")
    assert plain.code == 0 and plain.err == ""
    score, path = plain.out.split()
    assert path == str(photos["blue"]) and float(score) == pytest.approx(1.0, abs=1e-3)


def test_indexing_is_incremental_through_the_cli(
    image_dir: Path, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def index() -> dict[str, Any]:
        return cli(capsys, monkeypatch, "images", "index", str(image_dir), "--json").json()

    assert counts(index()) == (3, 0, 0, 0, 3, 0)
    assert counts(index()) == (0, 0, 0, 3, 0, 0)
    added = make_image(image_dir / "trip" / "beach.jpg", (240, 220, 120))
    assert counts(index()) == (1, 0, 0, 3, 1, 0)
    make_image(photos["red"], (10, 10, 10), size=(40, 30))  # new content (and size) under an indexed name
    assert counts(index()) == (0, 1, 0, 3, 1, 0)
    photos["blue"].unlink()
    assert counts(index()) == (0, 0, 1, 3, 0, 0)

    found = cli(capsys, monkeypatch, "images", "search", "blue", "-k", "10", "--json").json()
    assert found["indexed"] == 3
    assert {hit["path"] for hit in found["results"]} == {str(p) for p in (photos["red"], photos["green"], added)}

    plain = cli(capsys, monkeypatch, "images", "index", str(image_dir))
    assert (plain.code, plain.err) == (0, "")
    assert plain.out.startswith("added 0, updated 0, removed 0, unchanged 3, failed 0, embedded 0, seconds ")


def test_indexed_counts_the_files_a_search_can_still_find(
    image_dir: Path, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file deleted since indexing was still counted, and could cost a result."""
    cli(capsys, monkeypatch, "images", "index", str(image_dir), "--json").json()
    photos["red"].unlink()
    found = cli(capsys, monkeypatch, "images", "search", "--image", str(photos["blue"]), "-k", "2", "--json").json()
    assert found["indexed"] == 2 and len(found["results"]) == 2
    photos["green"].unlink()
    photos["blue"].unlink()
    gone = cli(capsys, monkeypatch, "images", "search", "blue", "-k", "2")
    assert (gone.code, gone.out) == (0, "")
    assert gone.err == "agentmm: no indexed image is still on disk (run agentmm images index DIR again)\n"


def test_bad_and_unreadable_files_are_reported_and_kept_out(
    image_dir: Path, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (image_dir / "empty.png").touch()
    with zipfile.ZipFile(image_dir / "archive.png", "w") as archive:
        archive.writestr("a.txt", "a zip, not a png")
    jpeg = make_image(image_dir / "whole.jpg", (90, 90, 200), size=(96, 96))
    (image_dir / "cut.jpg").write_bytes(jpeg.read_bytes()[:300])
    jpeg.unlink()
    locked = make_image(image_dir / "locked.png", (1, 2, 3))
    locked.chmod(0)
    root_reads_it = os.geteuid() == 0  # root reads a mode-000 file: then it is simply indexed
    bad = {"empty.png", "archive.png", "cut.jpg"} | (set() if root_reads_it else {"locked.png"})

    report = cli(capsys, monkeypatch, "images", "index", str(image_dir), "--json").json()
    failed = dict(report["failed"])
    assert {Path(path).name for path in failed} == bad
    assert all(reason and "\n" not in reason for reason in failed.values())
    assert "truncated or damaged" in failed[str(image_dir / "cut.jpg")]
    assert report["added"] == len(photos) + root_reads_it

    found = cli(capsys, monkeypatch, "images", "search", "anything", "-k", "10", "--json").json()
    assert found["indexed"] == len(photos) + root_reads_it
    assert not {Path(hit["path"]).name for hit in found["results"]} & bad

    plain = cli(capsys, monkeypatch, "images", "index", str(image_dir))
    assert plain.code == 0
    lines = plain.err.strip().splitlines()
    expected = [f"agentmm: skipped {image_dir / name}: {failed[str(image_dir / name)]}" for name in bad]
    assert sorted(lines) == sorted(expected)
    assert f"failed {len(bad)}, embedded 0" in plain.out


def test_searching_an_empty_index_says_so(
    image_dir: Path, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = cli(capsys, monkeypatch, "images", "search", "cats")
    assert (plain.code, plain.out) == (0, "")
    assert plain.err == "agentmm: no images are indexed yet (index a folder first: agentmm images index DIR)\n"
    assert cli(capsys, monkeypatch, "images", "search", "cats", "--json").json() == {"results": [], "indexed": 0}
    like = cli(capsys, monkeypatch, "images", "search", "--image", str(photos["red"]), "--json").json()
    assert like == {"results": [], "indexed": 0}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("images", "search"), "search for a description or --image PATH"),
        (("images", "search", "red", "--image", "x.png"), "one of the two"),
        (("images", "search", "red", "-k", "0"), "-k must be at least 1"),
        (("images", "search", "   "), "the query is empty"),
        (("images", "search", "--image", "nowhere.png"), "nowhere.png"),
        (("images", "index", "no-such-folder"), "no-such-folder: it does not exist"),
    ],
)
def test_user_mistakes_are_one_line(
    args: tuple[str, ...], needle: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_one_error_line(cli(capsys, monkeypatch, *args), needle)


def test_offline_without_weights_is_one_line_that_says_how_to_get_them(
    isolated_env: Path, image_dir: Path, photos: dict[str, Path]
) -> None:
    """A pretrained tag with an empty hub cache and no network: the first run of a new user."""
    done = process(
        "images", "index", str(image_dir),
        env={"AGENTMM_CLIP_PRETRAINED": "laion2b_s34b_b79k", "HF_HUB_OFFLINE": "1",
             "HF_HOME": str(isolated_env / "hf")},
    )  # fmt: skip
    assert_one_error_line(done, "no CLIP weights")
    assert "run once with a network" in done.err and "clip_pretrained" in done.err
    assert done.out == ""
    assert len(default_image_index(load_settings(clip_pretrained="laion2b_s34b_b79k"))) == 0  # nothing half-written
