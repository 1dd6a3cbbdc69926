"""Hostile media files: whatever the bytes, ``sniff``, ``open_image`` and ``check_audio`` (what the
perception tools and ``/image``, ``/audio`` call first) give a type, a decoded image, or one
typed ``MediaError`` line; never a decoder's own exception.
"""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentmm.tools import media
from agentmm.tools.errors import MediaError

HOSTILE = settings(
    max_examples=120, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
MAGICS = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"RIFF\x00\x00\x00\x00WAVE",
    b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x28\x00\x00\x00",
    b"fLaC",
    b"OggS",
    b"ID3",
    b"\xff\xfb\x90\x00",
    b"\x00\x00\x00\x20ftypM4A ",
    b"\x00\x00\x00\x20ftypisom",
    b"\x1a\x45\xdf\xa3",
]


def image_bytes(fmt: str, mode: str = "RGB", size: tuple[int, int] = (12, 9)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    image = Image.new(mode, size, 100 if mode in ("L", "P") else (200, 40, 40, 128)[: len(mode)])
    image.save(out, format=fmt)
    return out.getvalue()


def wav_bytes(channels: int = 1, width: int = 2, rate: int = 16000, frames: int = 64) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * (channels * frames * width // 2))
    return out.getvalue()


@pytest.fixture(scope="module")
def media_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media") / "attachment"


def one_line(exc: BaseException) -> None:
    assert str(exc) and "\n" not in str(exc), repr(exc)


def use(path: Path) -> None:
    """Every entry point on one file: a result, or one MediaError line."""
    for check in (
        media.sniff,
        media.check_audio,
        lambda p: media.open_image(p),
        lambda p: media.open_image(p, mode=None),
        lambda p: media.open_image(p, min_side=4),
        lambda p: media.open_image(p, max_pixels=64),
    ):
        try:
            check(path)
        except MediaError as exc:
            one_line(exc)


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few bytes flipped, cut out or inserted, or cut short."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 32))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[pos:]
    return bytes(data)


ORIGINALS = {
    "png": image_bytes("PNG"),
    "png-rgba": image_bytes("PNG", "RGBA"),
    "png-palette": image_bytes("PNG", "P"),
    "jpeg": image_bytes("JPEG"),
    "gif": image_bytes("GIF", "P"),
    "webp": image_bytes("WEBP"),
    "bmp": image_bytes("BMP"),
    "wav": wav_bytes(),
    "wav-stereo": wav_bytes(channels=2),
}


@HOSTILE
@given(data=st.sampled_from(sorted(ORIGINALS)).flatmap(lambda name: mutated(ORIGINALS[name])))
def test_damaged_images_and_wavs_decode_or_are_one_typed_line(media_file: Path, data: bytes) -> None:
    media_file.write_bytes(data)
    use(media_file)


@HOSTILE
@given(magic=st.sampled_from(MAGICS), rest=st.binary(max_size=200))
def test_random_bytes_after_a_known_magic(media_file: Path, magic: bytes, rest: bytes) -> None:
    media_file.write_bytes(magic + rest)
    use(media_file)


@HOSTILE
@given(data=st.binary(max_size=100))
def test_random_bytes(media_file: Path, data: bytes) -> None:
    media_file.write_bytes(data)
    use(media_file)


@HOSTILE
@given(
    fmt=st.integers(0, 0xFFFF) | st.sampled_from([1, 3, 0xFFFE]),
    channels=st.integers(0, 0xFFFF),
    rate=st.integers(0, 2**32 - 1) | st.sampled_from([8000, 16000, 44100]),
    block_align=st.integers(0, 0xFFFF),
    bits=st.integers(0, 0xFFFF) | st.sampled_from([8, 16, 24, 32]),
    fmt_size=st.sampled_from([16, 18, 40, 0, 8, 2**32 - 1]),
    data_size=st.sampled_from([0, 64, 2**32 - 1]),
    chunks_first=st.lists(st.tuples(st.binary(min_size=4, max_size=4), st.integers(0, 2**32 - 1)), max_size=3),
)
@example(fmt=1, channels=1, rate=16000, block_align=2, bits=16, fmt_size=16, data_size=2**32 - 1, chunks_first=[])
def test_any_wav_header_is_checked_or_one_typed_line(
    media_file: Path,
    fmt: int,
    channels: int,
    rate: int,
    block_align: int,
    bits: int,
    fmt_size: int,
    data_size: int,
    chunks_first: list[tuple[bytes, int]],
) -> None:
    body = struct.pack("<HHIIHH", fmt, channels, rate, rate * block_align % 2**32, block_align, bits)
    pre = b"".join(cid + struct.pack("<I", size) for cid, size in chunks_first)
    fmt_chunk = b"fmt " + struct.pack("<I", fmt_size) + body + b"\0" * max(0, min(fmt_size, 64) - 16)
    data = b"RIFF" + struct.pack("<I", 4 + len(pre) + len(fmt_chunk) + 8 + 64) + b"WAVE" + pre + fmt_chunk
    data += b"data" + struct.pack("<I", data_size) + b"\0" * 64
    media_file.write_bytes(data)
    use(media_file)


@pytest.mark.parametrize("declared", [(1, 1), (50_000, 50_000), (2**31 - 1, 2**31 - 1), (0, 10)])
def test_an_image_declaring_any_size_is_refused_or_decoded(media_file: Path, declared: tuple[int, int]) -> None:
    from tests.tools.media_files import png_header

    media_file.write_bytes(png_header(*declared))
    use(media_file)


@HOSTILE
@given(name=st.text(max_size=40) | st.sampled_from(["~nosuchuser_xyz/a.png", "a\x00b.png", "x" * 300, "a\nb.wav", "~"]))
def test_any_path_a_user_or_a_model_gives_is_one_typed_line(name: str) -> None:
    """Paths come from --image, /image and from the model's own tool calls, so any text at all."""
    use(Path(name) if name else Path("."))
