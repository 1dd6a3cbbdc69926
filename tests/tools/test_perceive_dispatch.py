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
from tests.tools.media_files import make_image, write_wav


class Describer:
    """A captioner (``agentmm.tools.caption.Captioner``) that says the picture's size."""

    name = "sizer"

    def describe(self, image: Image.Image) -> str:
        return f"a {image.width}x{image.height} picture"


def video(tmp_path: Path) -> Path:
    clip = tmp_path / "clip.png"  # named as a picture, but its bytes are an MP4
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    return clip


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


def test_perceive_file_captions_a_picture_with_the_captioner_given(tmp_path: Path) -> None:
    found = perceive_file(make_image(tmp_path / "p.png", size=(64, 48)), load_settings(), captioner=Describer())
    assert isinstance(found, Caption)
    assert (found.text, found.model) == ("a 64x48 picture", "sizer")
    with pytest.raises(UnsupportedAttachmentError):
        perceive_file(video(tmp_path), load_settings(), captioner=Describer())


def test_the_cli_and_a_chat_say_the_same_of_a_file_they_cannot_perceive(tmp_path: Path) -> None:
    clip = video(tmp_path)
    in_chat = Perception(lambda p: ("", ""), lambda p: ("", "", "")).perceive([clip])[0]
    done = agentmm("perceive", str(clip), "--json")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert json.loads(done.stdout)["results"] == [{"file": str(clip), "error": in_chat.error}]
    assert in_chat.error is not None and "only pictures and audio can be perceived" in in_chat.error
    assert issubclass(UnsupportedAttachmentError, AgentmmError)
