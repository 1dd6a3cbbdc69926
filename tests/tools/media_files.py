"""Media files made on the spot for the tool tests (imported by tests and their conftest)."""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
import wave
import zlib
from pathlib import Path
from typing import Literal

import pytest

SENTENCES = [
    "The weather is lovely today, so we will walk to the market.",
    "Please bring me a cup of coffee with milk and sugar.",
    "My brother plays the piano every evening after dinner.",
]
MORE_SENTENCES = [
    "The train to the city leaves at half past seven in the morning.",
    "She opened the window and listened to the birds in the garden.",
    "We need to buy bread, eggs and apples before the shop closes.",
    "The old captain told a long story about a storm at sea.",
    "Turn left at the church and the library is on your right.",
    "It was so cold last night that the lake froze over.",
    "Our neighbours painted their front door a bright shade of yellow.",
    "The children built a sandcastle on the beach this afternoon.",
]


def make_image(path: Path, color: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (64, 48)) -> Path:
    """A small solid image with a stripe, in the format its suffix names (PNG for odd suffixes)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, color)
    ImageDraw.Draw(image).rectangle((0, 0, size[0] // 3, size[1]), fill=tuple(255 - c for c in color))
    suffix = path.suffix.lower().lstrip(".")
    formats = {"jpg": "JPEG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP", "tif": "TIFF", "avif": "AVIF"}
    fmt = formats.get(suffix, "PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk (valid CRC) declaring a size, with one empty IDAT and IEND."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def write_wav(path: Path, samples: bytes = b"\x00\x00" * 16000, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples)
    return path


def tone(seconds: float = 1.0, rate: int = 16000, hz: float = 440.0) -> bytes:
    """A sine tone as 16-bit mono samples, for ``write_wav``."""
    count = int(seconds * rate)
    return struct.pack(f"<{count}h", *(int(9000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(count)))


_CODEC_RATES = {"libopus": 48000, "opus": 48000, "g726": 8000}  # the only rates they take


def encode_audio(
    source: Path, path: Path, container: str, codec: str, *, picture: Literal["video", "cover"] | None = None
) -> Path:
    """``source`` (a 16-bit mono WAV) encoded as ``codec`` in ``container`` (FFmpeg's names) by
    PyAV, so no ffmpeg binary is needed. ``picture`` adds a second stream: ``"video"`` a few
    moving frames (a film), ``"cover"`` a cover-art picture (MP4 only)."""
    import av
    import numpy as np

    with wave.open(str(source)) as wav:
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(1, -1)
    with av.open(str(path), "w", format=container) as out:
        audio = out.add_stream(codec, rate=_CODEC_RATES.get(codec, rate), layout="mono")
        if picture is not None:
            _add_picture(out, picture)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(audio.codec_context.format, "mono", audio.rate, audio.codec_context.frame_size)
        for piece in [*resampler.resample(frame), *resampler.resample(None), None]:
            out.mux(audio.encode(piece))
    return path


def _add_picture(out: object, picture: Literal["video", "cover"]) -> None:
    import av
    import numpy as np

    codec, frames = ("mjpeg", 1) if picture == "cover" else ("mpeg4", 10)
    stream = out.add_stream(codec, rate=10)  # type: ignore[attr-defined]
    stream.width, stream.height, stream.pix_fmt = 16, 16, "yuvj420p" if picture == "cover" else "yuv420p"
    if picture == "cover":
        stream.disposition = av.stream.Disposition.attached_pic
    black = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24").reformat(format=stream.pix_fmt)
    for pts in range(frames):
        black.pts = pts
        out.mux(stream.encode(black))  # type: ignore[attr-defined]
    out.mux(stream.encode(None))  # type: ignore[attr-defined]


def speak(text: str, path: Path) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


def sox_can_write(fmt: str) -> bool:
    if shutil.which("sox") is None:
        return False
    listing = subprocess.run(["sox", "-h"], capture_output=True, text=True).stdout
    formats = next((line for line in listing.splitlines() if line.startswith("AUDIO FILE FORMATS:")), "")
    return fmt in formats.split()
