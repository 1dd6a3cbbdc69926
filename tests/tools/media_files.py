"""Media files made on the spot for the tool tests (imported by tests and their conftest)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import wave
import zlib
from pathlib import Path

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
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP"}.get(suffix, "PNG")
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
