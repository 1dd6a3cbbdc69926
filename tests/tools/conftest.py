"""Fixtures for the perception tools: speech from espeak-ng, folders of images.

Nothing is downloaded: speech is synthesised with known text (so a word error rate can be
checked), and the vision models are open_clip architectures with random weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tools.media_files import SENTENCES, speak


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def speech_wav(speech_dir: Path) -> Path:
    """The three SENTENCES spoken in one WAV file (about 10 s)."""
    return speak(" ".join(SENTENCES), speech_dir / "sentences.wav")


@pytest.fixture(scope="session")
def short_speech_wav(speech_dir: Path) -> Path:
    return speak(SENTENCES[1], speech_dir / "coffee.wav")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Vision tests run torch on one thread: on a shared 2-core machine two threads spin
    against other work and run several times slower (measured 5x); results are the same."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    return folder
