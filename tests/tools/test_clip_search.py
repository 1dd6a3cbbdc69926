"""The CLIP image index: incremental to the file, consistent when interrupted, searchable.

ViT-B-32 with random (seeded) weights: the vectors mean nothing, but identical images get
identical vectors, and every code path (preprocess, batch embedding, Chroma) is the real one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmm.errors import EmptyInputError
from agentmm.tools import ImageIndex, make_search_images_tool, search_images
from agentmm.tools.errors import ImageIndexError, ImageIndexInUseError
from tests.tools.media_files import make_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture
def index(tmp_path: Path) -> Iterator[ImageIndex]:
    with ImageIndex(tmp_path / "data", pretrained=None, batch_size=2) as opened:
        yield opened


@pytest.fixture
def photos(image_dir: Path) -> dict[str, Path]:
    files = {name: make_image(image_dir / f"{name}.png", color) for name, color in COLORS.items()}
    files["nested"] = make_image(image_dir / "trip" / "beach.jpg", (240, 220, 120))
    (image_dir / "notes.txt").write_text("not an image, and not meant as one")
    return files


def counts(report: object) -> tuple[int, ...]:
    r = report  # type: ignore[assignment]
    return (r.added, r.updated, r.removed, r.unchanged, len(r.failed), r.embedded)  # type: ignore[attr-defined]


def test_incremental_indexing_counts_every_file_exactly(
    index: ImageIndex, image_dir: Path, photos: dict[str, Path]
) -> None:
    seen: list[tuple[int, int]] = []
    first = index.index_dir(image_dir, progress=lambda done, total: seen.append((done, total)))
    assert counts(first) == (4, 0, 0, 0, 0, 4)
    assert seen[-1] == (5, 5) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(index) == 4

    assert counts(index.index_dir(image_dir)) == (0, 0, 0, 4, 0, 0)

    make_image(photos["red"], (10, 10, 10))  # new content
    os.utime(photos["green"], ns=(1, 1))  # touched only: hashed, not embedded
    photos["blue"].unlink()
    shutil.copy(photos["nested"], image_dir / "copy-of-beach.jpg")  # known content: vector reused
    assert counts(index.index_dir(image_dir)) == (1, 1, 1, 2, 0, 1)
    assert counts(index.index_dir(image_dir)) == (0, 0, 0, 4, 0, 0)
    assert len(index) == 4


def test_bad_files_are_reported_and_skipped(index: ImageIndex, image_dir: Path, photos: dict[str, Path]) -> None:
    with zipfile.ZipFile(image_dir / "archive.png", "w") as archive:
        archive.writestr("a.txt", "zip, not png")
    (image_dir / "cut.jpg").write_bytes(photos["nested"].read_bytes()[:300])
    (image_dir / "empty.gif").touch()
    (image_dir / "dangling.png").symlink_to(image_dir / "nowhere.png")
    unreadable = make_image(image_dir / "locked.png")
    unreadable.chmod(0)
    (image_dir / "empty-notes.txt").touch()  # not meant as an image: passed over, not reported
    (image_dir / "scan.dat").write_bytes(photos["red"].read_bytes())  # an image whatever its name

    report = index.index_dir(image_dir)
    failed = dict(report.failed)
    assert sorted(Path(p).name for p in failed) == sorted(
        ["archive.png", "cut.jpg", "empty.gif", "dangling.png"] + ([] if os.geteuid() == 0 else ["locked.png"])
    )
    assert "not a supported" in failed[str(image_dir / "archive.png")]
    assert "truncated or damaged" in failed[str(image_dir / "cut.jpg")]
    assert "broken symlink" in failed[str(image_dir / "dangling.png")]
    assert report.added == (6 if os.geteuid() == 0 else 5)  # root reads a mode-000 file
    assert report.embedded == report.added - 1  # scan.dat has red.png's bytes: one vector for both
    assert all(Path(hit.path).name not in failed for hit in index.search_text("anything", k=10))


def test_a_name_that_is_not_utf8_is_reported_and_the_rest_indexed(
    index: ImageIndex, image_dir: Path, photos: dict[str, Path]
) -> None:
    """It crashed Chroma's upsert with UnicodeEncodeError: nothing in the folder was indexed."""
    odd = os.fsdecode(bytes(image_dir) + b"/caf\xe9.png")
    Path(odd).write_bytes(photos["red"].read_bytes())
    report = index.index_dir(image_dir)
    assert report.failed == [(f"{image_dir}/caf\\xe9.png", "its name is not UTF-8 text: rename the file to index it")]
    assert report.added == len(photos)


def test_a_file_that_turns_bad_leaves_the_index(index: ImageIndex, image_dir: Path, photos: dict[str, Path]) -> None:
    index.index_dir(image_dir)
    photos["red"].write_bytes(photos["red"].read_bytes()[:60])
    report = index.index_dir(image_dir)
    assert counts(report) == (0, 0, 0, 3, 1, 0)
    assert len(index) == 3


def test_interrupted_run_leaves_whole_records_and_the_next_run_finishes(
    index: ImageIndex, image_dir: Path, photos: dict[str, Path]
) -> None:
    class Stop(Exception):
        pass

    def stop_after_first_batch(done: int, total: int) -> None:
        if done >= 2:
            raise Stop

    with pytest.raises(Stop):
        index.index_dir(image_dir, progress=stop_after_first_batch)
    stored = index.collection.get(include=["embeddings", "metadatas"])
    assert 0 < len(stored["ids"]) < 4
    assert all(len(vector) == 512 for vector in stored["embeddings"])
    assert all({"path", "size", "mtime_ns", "sha256"} <= set(m) for m in stored["metadatas"])
    report = index.index_dir(image_dir)
    assert report.added == 4 - len(stored["ids"]) and report.unchanged == len(stored["ids"])


def test_search_by_text_ranks_existing_files(index: ImageIndex, image_dir: Path, photos: dict[str, Path]) -> None:
    index.index_dir(image_dir)
    photos["blue"].unlink()  # indexed, then gone: never returned
    hits = index.search_text("a red square", k=4)
    assert 1 <= len(hits) <= 4
    assert all(Path(hit.path).is_file() for hit in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert index.search_text("x", k=1)[0].path in {str(p) for p in photos.values()}


def test_search_returns_k_files_still_on_disk_when_the_nearest_are_gone(
    index: ImageIndex, image_dir: Path, photos: dict[str, Path]
) -> None:
    """It took the k nearest and then dropped the deleted ones: with both nearest gone, k=2 gave nothing."""
    index.index_dir(image_dir)
    nearest = index.search_text("a red square", k=2)
    for hit in nearest:
        Path(hit.path).unlink()
    hits = index.search_text("a red square", k=2)
    assert len(hits) == 2 and all(Path(hit.path).is_file() for hit in hits)
    assert {hit.path for hit in hits}.isdisjoint(hit.path for hit in nearest)
    assert len(index.search_text("a red square", k=10)) == 2  # all that is left
    assert (len(index), index.count_on_disk()) == (4, 2)  # the records stay until the folder is indexed again


def test_search_by_example_finds_that_image_first(index: ImageIndex, image_dir: Path, photos: dict[str, Path]) -> None:
    index.index_dir(image_dir)
    hits = index.search_image(photos["green"], k=2)
    assert hits[0].path == str(photos["green"])
    assert hits[0].score == pytest.approx(1.0, abs=1e-3)


def test_index_survives_reopening(tmp_path: Path, image_dir: Path, photos: dict[str, Path]) -> None:
    with ImageIndex(tmp_path / "data", pretrained=None) as first:
        first.index_dir(image_dir)
    with ImageIndex(tmp_path / "data", pretrained=None) as again:
        assert len(again) == 4
        assert counts(again.index_dir(image_dir)) == (0, 0, 0, 4, 0, 0)
        assert again.search_image(photos["red"], k=1)[0].path == str(photos["red"])


def test_other_weights_get_their_own_collection(tmp_path: Path) -> None:
    with ImageIndex(tmp_path / "data", pretrained=None) as random_index:
        name = random_index.collection.name
    with ImageIndex(tmp_path / "data", pretrained="laion2b_s34b_b79k") as real_index:
        assert real_index.collection.name != name
        assert len(real_index) == 0


def test_search_tool_over_an_index(index: ImageIndex, image_dir: Path, photos: dict[str, Path]) -> None:
    tool = make_search_images_tool(index=index)
    assert tool.name == "search_images"
    assert tool.invoke({"query": "blue", "k": 2}) == "no images are indexed yet"
    index.index_dir(image_dir)
    lines = tool.invoke({"query": "blue", "k": 2}).splitlines()
    assert len(lines) == 2 and lines[0].startswith("1. ") and "(score " in lines[0]
    assert Path(lines[0][3:].rsplit(" (score", 1)[0]).is_file()


def test_default_search_tool_uses_the_data_dir(isolated_env: Path) -> None:
    assert search_images.invoke({"query": "cats"}) == "no images are indexed yet"
    assert (isolated_env / "data" / "images").is_dir()


def test_pictures_are_indexed_as_far_as_they_can_be_read(index: ImageIndex, image_dir: Path) -> None:
    """TIFF and AVIF were reported as unsupported or as MP4 video; HEIC cannot be decoded here,
    and the report says what to do about it."""
    make_image(image_dir / "scan.tif")
    make_image(image_dir / "phone.avif")
    (image_dir / "IMG_0001.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    report = index.index_dir(image_dir)
    assert report.added == 2
    [(path, reason)] = report.failed
    assert Path(path).name == "IMG_0001.heic" and "not supported (convert to JPEG or PNG)" in reason


def test_an_svg_drawing_is_reported_as_skipped_not_passed_over(index: ImageIndex, image_dir: Path) -> None:
    """``images index`` passed over SVG files without a word, as if they were no pictures; a
    file that is no picture by its name (notes.txt) still is passed over."""
    (image_dir / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    (image_dir / "notes.txt").write_text("not a picture")
    report = index.index_dir(image_dir)
    [(path, reason)] = report.failed
    assert Path(path).name == "logo.svg" and "not a supported image" in reason


def test_user_mistakes_are_typed(index: ImageIndex, tmp_path: Path) -> None:
    with pytest.raises(EmptyInputError):
        index.search_text("   ")
    with pytest.raises(ImageIndexError, match="nowhere: it does not exist"):
        index.index_dir(tmp_path / "nowhere")
    with pytest.raises(ImageIndexError, match="not a directory"):
        index.index_dir(make_image(tmp_path / "one.png"))


def test_a_second_process_is_refused(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib; from agentmm.tools._dirlock import DirectoryLock;"
            f"DirectoryLock(pathlib.Path({str(tmp_path / 'data' / 'images')!r})).acquire();"
            "print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ImageIndexInUseError, match=f"PID {holder.pid}"):
            ImageIndex(tmp_path / "data", pretrained=None)
    finally:
        holder.communicate("")


def test_a_same_size_picture_put_back_under_the_old_mtime_is_embedded_again(
    index: ImageIndex, image_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    picture = make_image(image_dir / "picture.bmp", (220, 30, 30))  # BMP: the same size whatever it shows
    other = make_image(image_dir.parent / "elsewhere" / "other.bmp", (30, 40, 220))
    assert picture.stat().st_size == other.stat().st_size
    assert counts(index.index_dir(image_dir)) == (1, 0, 0, 0, 0, 1)
    indexed = picture.stat()

    shutil.copyfile(other, picture)  # what `cp -p` does: other bytes, same size ...
    os.utime(picture, ns=(indexed.st_atime_ns, indexed.st_mtime_ns))  # ... and the old mtime back

    assert counts(index.index_dir(image_dir)) == (0, 1, 0, 0, 0, 1)
    by_example = index.search_image(other, k=1)
    assert by_example[0].path == str(picture) and by_example[0].score > 0.999
    from agentmm.tools import clip_search

    def not_read(path: Path) -> str:
        raise AssertionError(f"{path} was read: an unchanged file must be judged by its stat")

    monkeypatch.setattr(clip_search, "content_hash", not_read)
    assert counts(index.index_dir(image_dir)) == (0, 0, 0, 1, 0, 0)
