"""One file-type dispatch for perception: a chat's attachments (``Perception``) and
``agentmm perceive`` both ask ``perceivable_kind`` what a file is, and ``perceive_file`` runs the
configured model on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from agentmm.errors import AgentmmError
from agentmm.settings import load_settings
from agentmm.tools.caption import Caption
from agentmm.tools.errors import MediaError
from agentmm.tools.perception import Perception, UnsupportedAttachmentError, perceivable_kind, perceive_file
from tests.test_cli import agentmm
from tests.tools.media_files import encode_audio, make_image, tone, write_wav


class Describer:
    """A captioner (``agentmm.tools.caption.Captioner``) that says the picture's size."""

    name = "sizer"

    def describe(self, image: Image.Image) -> str:
        return f"a {image.width}x{image.height} picture"


def video(tmp_path: Path) -> Path:
    """A short film named as a picture: its bytes are an MP4 with a video stream."""
    return encode_audio(write_wav(tmp_path / "sound.wav", tone()), tmp_path / "clip.png", "mp4", "aac", picture="video")


def test_the_kind_comes_from_the_bytes(tmp_path: Path) -> None:
    picture = make_image(tmp_path / "p.png")
    voice = write_wav(tmp_path / "v.wav")
    disguised = tmp_path / "really-a-picture.wav"
    disguised.write_bytes(picture.read_bytes())
    assert [perceivable_kind(f) for f in (picture, voice, disguised)] == ["image", "audio", "image"]
    with pytest.raises(UnsupportedAttachmentError, match=r"clip.png is an MP4 video file: only pictures and audio"):
        perceivable_kind(video(tmp_path))
    with pytest.raises(MediaError):
        perceivable_kind(tmp_path / "missing.png")


def test_a_voice_note_in_a_video_container_is_audio_and_a_film_is_not(tmp_path: Path) -> None:
    """A browser records voice notes as WebM/Opus and a phone as MP4/AAC (brand isom): both
    were refused as video by their bytes; what decides is whether a video stream is there."""
    wav = write_wav(tmp_path / "tone.wav", tone())
    notes = [
        encode_audio(wav, tmp_path / "note.webm", "webm", "libopus"),
        encode_audio(wav, tmp_path / "note.m4a", "mp4", "aac"),
    ]
    assert [perceivable_kind(note) for note in notes] == ["audio", "audio"]
    film = encode_audio(wav, tmp_path / "film.m4a", "mp4", "aac", picture="video")
    with pytest.raises(UnsupportedAttachmentError, match=r"film.m4a is an MP4 video file: only pictures and audio"):
        perceivable_kind(film)


def test_perceive_file_captions_a_picture_with_the_captioner_given(tmp_path: Path) -> None:
    found = perceive_file(make_image(tmp_path / "p.png", size=(64, 48)), load_settings(), captioner=Describer())
    assert isinstance(found, Caption)
    assert (found.text, found.model) == ("a 64x48 picture", "sizer")
    with pytest.raises(UnsupportedAttachmentError):
        perceive_file(video(tmp_path), load_settings(), captioner=Describer())


def test_the_cli_and_a_chat_say_the_same_of_a_file_they_cannot_perceive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that is no picture or audio is ``unsupported``; a good picture with no captioner
    here (a VLM set without its projector, quick to find out) keeps its kind and is
    ``unavailable``, in ``perceive --json`` as in a chat's trace (it said only file and error)."""
    monkeypatch.setenv("AGENTMM_CAPTION_MODEL", str(tmp_path / "vlm.gguf"))
    files = [video(tmp_path), make_image(tmp_path / "cat.png")]
    in_chat = [o.as_trace() for o in Perception(settings=load_settings()).perceive(files)]
    done = agentmm("perceive", *map(str, files), "--json")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    results = json.loads(done.stdout)["results"]
    assert results == [{key: seen[key] for key in ("file", "kind", "error", "unavailable") if key in seen}
                       for seen in in_chat]  # fmt: skip
    assert results[0]["kind"] == "unsupported" and "only pictures and audio can be perceived" in results[0]["error"]
    assert (
        results[1]["kind"] == "image" and results[1]["unavailable"] is True and "caption_mmproj" in results[1]["error"]
    )
    assert issubclass(UnsupportedAttachmentError, AgentmmError)


def test_a_captioner_file_that_is_not_there_is_unavailable_not_the_pictures_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``caption_model`` and ``caption_mmproj`` naming files that do not exist made a good picture
    ``unsupported``, and the character was told it 'could not be read': a setup problem is
    ``unavailable``, in a chat and in ``perceive --json``, the picture's kind kept."""
    from agentmm.observations import ObservationPhrasing

    monkeypatch.setenv("AGENTMM_CAPTION_MODEL", str(tmp_path / "nope.gguf"))
    monkeypatch.setenv("AGENTMM_CAPTION_MMPROJ", str(tmp_path / "nope2.gguf"))
    picture = make_image(tmp_path / "beach.png")
    settings = load_settings()
    seen = Perception(settings=settings).perceive([picture])[0].as_trace()
    assert seen["kind"] == "image" and seen["unavailable"] is True and "nope.gguf" in seen["error"]
    told = ObservationPhrasing.from_settings(settings).line(seen, "Ada", "Bo")
    assert "could not be read" not in told
    done = agentmm("perceive", str(picture), "--json")
    result = json.loads(done.stdout)["results"][0]
    assert done.returncode == 2 and result["kind"] == "image" and result["unavailable"] is True


def test_perceive_names_each_failed_file_once_and_prints_no_escape_from_a_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain ``perceive`` said ``error: a VLM captioner needs both files...`` without naming the
    picture, and a file name holding an OSC/CSI (``evil\\x1b]0;PWNED\\x07\\x1b[2Jx.png``) reached
    the terminal raw, setting its title and clearing it."""
    monkeypatch.setenv("AGENTMM_CAPTION_MODEL", str(tmp_path / "vlm.gguf"))  # no projector: quick to fail
    beach = make_image(tmp_path / "beach.png")
    evil = make_image(tmp_path / "evil\x1b]0;PWNED\x07\x1b[2Jx.png")
    missing = tmp_path / "missing.png"
    done = agentmm("perceive", str(beach), str(evil), str(missing))
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 3 and "\x1b" not in done.stderr and "\x07" not in done.stderr
    assert lines[0].startswith(f"agentmm: error: {beach}: ") and "caption_mmproj" in lines[0]
    assert "PWNED" in lines[1] and "caption_mmproj" in lines[1]
    assert lines[2] == f"agentmm: error: no such file: {missing}"  # named once, by the error itself
