"""Perception's scheduling: a share of the CPU per concurrent job, each content perceived once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agentmm.tools import cpu_share
from agentmm.tools.perception import Perception
from tests.tools.fake_captioner import FakeCaptioner
from tests.tools.media_files import encode_audio, make_image, tone, write_wav


class Recorder:
    """Fake captioner / transcriber that note the CPU share they were given and their calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.shares: list[int | None] = []
        self.torch_threads: list[int] = []
        self.both_started = threading.Barrier(2, timeout=5)
        self.wait_for_other = False
        self.lock = threading.Lock()

    def _note(self, kind: str) -> None:
        import torch

        with self.lock:
            self.calls.append(kind)
            self.shares.append(cpu_share.job_threads())
            self.torch_threads.append(torch.get_num_threads())
        if self.wait_for_other:
            self.both_started.wait()  # fails (BrokenBarrierError) unless the two really overlap

    @property
    def caption(self) -> FakeCaptioner:
        return FakeCaptioner(self._describe)

    def _describe(self, image: object) -> str:
        self._note("image")
        return "a picture"

    def transcribe(self, path: Path) -> tuple[str, str, str]:
        self._note("audio")
        return "hello there", "en", "fake-asr"


@pytest.fixture
def two_torch_threads() -> object:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_threads_per_job_splits_the_cores() -> None:
    assert cpu_share.threads_per_job(1, cpu_count=16) == 16
    assert cpu_share.threads_per_job(2, cpu_count=2) == 1
    assert cpu_share.threads_per_job(2, cpu_count=16) == 8
    assert cpu_share.threads_per_job(3, cpu_count=2) == 1  # never below one


def test_a_picture_and_a_voice_note_run_together_each_on_its_share(
    tmp_path: Path, speech_wav: Path, two_torch_threads: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(cpu_share, "cpus", lambda: 2)
    fake = Recorder()
    fake.wait_for_other = True
    perception = Perception(fake.caption, fake.transcribe)
    observations = perception.perceive([make_image(tmp_path / "cat.png"), speech_wav])
    assert [o.kind for o in observations] == ["image", "audio"]
    assert sorted(fake.calls) == ["audio", "image"]
    assert fake.shares == [1, 1] and fake.torch_threads == [1, 1]
    assert torch.get_num_threads() == 2  # put back after the batch


def test_one_file_alone_keeps_the_default_threads(tmp_path: Path, two_torch_threads: object) -> None:
    fake = Recorder()
    Perception(fake.caption, fake.transcribe).perceive([make_image(tmp_path / "cat.png")])
    assert fake.shares == [None] and fake.torch_threads == [2]


def test_the_same_content_is_perceived_once_per_call_and_then_cached(tmp_path: Path) -> None:
    fake = Recorder()
    perception = Perception(fake.caption, fake.transcribe)
    first = make_image(tmp_path / "a.png", (10, 200, 30))
    copy = tmp_path / "copy-of-a.png"
    copy.write_bytes(first.read_bytes())
    observations = perception.perceive([first, copy, tmp_path / "missing.png"])
    assert fake.calls == ["image"]
    assert [o.file for o in observations] == [str(first), str(copy), str(tmp_path / "missing.png")]
    assert observations[0].text == observations[1].text and observations[1].seconds == 0.0
    assert observations[2].error and observations[2].kind == "unsupported"
    again = perception.perceive([copy])
    assert fake.calls == ["image"] and again[0].text == observations[0].text


def test_a_failed_tool_is_reported_and_not_cached(tmp_path: Path) -> None:
    from agentmm.tools.errors import CaptionerUnavailableError

    attempts: list[object] = []

    def unavailable(image: object) -> str:
        attempts.append(image)
        raise CaptionerUnavailableError("no image captioner is available offline")

    perception = Perception(FakeCaptioner(unavailable), Recorder().transcribe)
    image = make_image(tmp_path / "cat.png")
    observation = perception.perceive([image])[0]
    assert "offline" in (observation.error or "")
    # The picture itself is fine: it keeps its kind, and says no model could perceive it.
    assert observation.kind == "image" and observation.as_trace()["unavailable"] is True
    assert "unavailable" not in perception.perceive([tmp_path / "missing.png"])[0].as_trace()
    perception.perceive([image])
    assert len(attempts) == 2  # a fixed setup gets its chance on the next turn


def test_a_video_is_an_unsupported_attachment(tmp_path: Path) -> None:
    sound = write_wav(tmp_path / "sound.wav", tone())
    video = encode_audio(sound, tmp_path / "clip.mp4", "mp4", "aac", picture="video")
    observation = Perception(Recorder().caption, Recorder().transcribe).perceive([video])[0]
    assert observation.kind == "unsupported" and "only pictures and audio" in (observation.error or "")


def test_the_job_left_running_gets_the_cores_the_finished_one_freed(
    tmp_path: Path, speech_wav: Path, two_torch_threads: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import torch

    monkeypatch.setattr(cpu_share, "cpus", lambda: 2)
    heard = threading.Event()
    seen: list[int] = []

    def caption(image: object) -> str:
        seen.append(torch.get_num_threads())  # while the voice note is still being heard
        assert heard.wait(5)
        deadline = time.monotonic() + 5
        while torch.get_num_threads() != 2 and time.monotonic() < deadline:
            time.sleep(0.01)
            cpu_share.follow_torch_share()  # as the CoCa captioner does between tokens
        seen.append(torch.get_num_threads())  # after it was done
        return "a long caption"

    def transcribe(path: Path) -> tuple[str, str, str]:
        time.sleep(0.1)
        heard.set()
        return "hi", "en", "fake-asr"

    Perception(FakeCaptioner(caption), transcribe).perceive([make_image(tmp_path / "cat.png"), speech_wav])
    assert seen == [1, 2]
