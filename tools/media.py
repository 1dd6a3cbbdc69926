"""Know what a media file really is before a model sees it.

Attachments arrive with whatever name the user gave them, so the type comes from the magic
bytes, never the extension; every way a file can be unusable (missing, a directory, empty,
unreadable, an unknown format, truncated, a decompression bomb, a broken WAV header) becomes
one typed ``MediaError`` with a one-line message, before a decoder deep inside torch or FFmpeg
fails with a traceback. Pillow is imported only when an image is opened.
"""

from __future__ import annotations

import hashlib
import re
import stat
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from agentmm.console_text import shown_path
from agentmm.fileio import os_errors
from agentmm.tools.errors import (
    CorruptMediaError,
    EmptyMediaError,
    ImageTooLargeError,
    MediaNotFoundError,
    MediaUnreadableError,
    NotAFileError,
    UnsupportedMediaError,
)

if TYPE_CHECKING:
    from PIL import Image

MediaKind = Literal["image", "audio", "video"]

SNIFF_BYTES = 4096
# The most pixels a picture may have, whatever its kind: Pillow's own hard limit (twice its
# ~89.5 Mpx warning, a 0.5 GB RGB bitmap), so a 108 Mpx phone photo is taken whether it is a
# JPEG or a PNG; anything larger from a chat attachment is a bomb or a scan too big to caption.
DEFAULT_MAX_PIXELS = 178_956_970
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class MediaType:
    """A format recognised by its bytes: ``name`` (e.g. ``png``), ``kind`` and MIME type."""

    name: str
    kind: MediaKind
    mime: str

    def describe(self) -> str:
        return f"{'an' if self.name[0] in 'aefhilmnorsx' else 'a'} {self.name.upper()} {self.kind} file"


PNG = MediaType("png", "image", "image/png")
JPEG = MediaType("jpeg", "image", "image/jpeg")
GIF = MediaType("gif", "image", "image/gif")
WEBP = MediaType("webp", "image", "image/webp")
BMP = MediaType("bmp", "image", "image/bmp")
TIFF = MediaType("tiff", "image", "image/tiff")
AVIF = MediaType("avif", "image", "image/avif")
# The pictures ``open_image`` reads, as messages and the caption_image tool name them.
IMAGE_FORMATS = "PNG, JPEG, GIF, WebP, BMP, TIFF, AVIF"
HEIC = MediaType("heic", "image", "image/heic")  # known, so that it is refused by name (see sniff)
WAV = MediaType("wav", "audio", "audio/wav")
FLAC = MediaType("flac", "audio", "audio/flac")
OGG = MediaType("ogg", "audio", "audio/ogg")
MP3 = MediaType("mp3", "audio", "audio/mpeg")
M4A = MediaType("m4a", "audio", "audio/mp4")
MP4 = MediaType("mp4", "video", "video/mp4")
WEBM = MediaType("webm", "video", "video/webm")
MKV = MediaType("mkv", "video", "video/x-matroska")
WEBM_AUDIO = MediaType("webm", "audio", "audio/webm")
MKA = MediaType("mka", "audio", "audio/x-matroska")

_BMP_DIB_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
_M4A_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
_AVIF_BRANDS = {b"avif", b"avis"}
# HEVC-coded HEIF (an iPhone's photos) and the generic HEIF brands; an AVIF file lists mif1 too,
# so AVIF is looked for first.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"


def sniff_bytes(head: bytes) -> MediaType | None:
    """The format whose signature ``head`` (a file's first bytes) starts with, if any."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return WAV
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return TIFF
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_DIB_HEADER_SIZES:
        return BMP
    if head[:4] == b"fLaC":
        return FLAC
    if head[:4] == b"OggS":
        return OGG
    if head[:3] == b"ID3" or _is_mpeg_audio_frame(head):
        return MP3
    if head[4:8] == b"ftyp":
        return _iso_media_type(head)
    if head[:4] == _EBML_MAGIC:
        return WEBM if b"webm" in head else MKV
    return None


def _iso_media_type(head: bytes) -> MediaType:
    """What an ISO base media file (``ftyp`` box first) holds, by its major and compatible brands:
    an AVIF or HEIF picture shares MP4's container. Audio-only MP4 is told apart later, by its
    streams (``sniff``), since most give a generic brand such as ``isom``."""
    size = int.from_bytes(head[:4], "big")
    brands = {head[8:12]} | {head[at : at + 4] for at in range(16, min(size, len(head)) - 3, 4)}
    if brands & _AVIF_BRANDS:
        return AVIF
    if brands & _HEIF_BRANDS:
        return HEIC
    return M4A if head[8:12] in _M4A_BRANDS else MP4


def _is_mpeg_audio_frame(head: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, then no reserved version, layer, rate or bitrate.

    ADTS AAC shares the sync bits but has layer 00, so it is not taken for MP3.
    """
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version = (head[1] >> 3) & 0b11
    layer = (head[1] >> 1) & 0b11
    bitrate = head[2] >> 4
    rate = (head[2] >> 2) & 0b11
    return version != 0b01 and layer != 0b00 and bitrate != 0b1111 and rate != 0b11


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn the OS's reasons for not reading a file into typed one-line errors."""
    shown = shown_path(path)
    with os_errors(missing=lambda: MediaNotFoundError(path, f"{shown} disappeared while it was being read"),
                   denied=lambda: MediaUnreadableError(path, f"cannot read {shown}: permission denied"),
                   folder=lambda: NotAFileError(path, f"{shown} is a directory, not a file"),
                   other=lambda why: MediaUnreadableError(path, f"cannot read {shown}: {why}")):  # fmt: skip
        yield


def check_file(path: str | Path) -> Path:
    """The path, if it names a non-empty regular file; a typed error saying why not otherwise."""
    try:
        path = Path(path).expanduser()
    except RuntimeError as exc:  # ~user naming no user on this machine
        raise MediaNotFoundError(path, f"no such file: {shown_path(path)} (no such user's home)") from exc
    try:
        info = path.stat()
    except ValueError as exc:  # a NUL byte: no file can have that name
        raise MediaNotFoundError(path, f"no such file: {shown_path(path)}") from exc
    except FileNotFoundError as exc:
        if path.is_symlink():
            raise MediaNotFoundError(path, f"{shown_path(path)} is a broken symlink") from exc
        raise MediaNotFoundError(path, f"no such file: {shown_path(path)}") from exc
    except PermissionError as exc:
        raise MediaUnreadableError(path, f"cannot reach {shown_path(path)}: permission denied") from exc
    except OSError as exc:  # e.g. ENAMETOOLONG, ELOOP
        raise MediaNotFoundError(path, f"cannot use {shown_path(path)}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise NotAFileError(path, f"{shown_path(path)} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise NotAFileError(path, f"{shown_path(path)} is not a regular file")
    if info.st_size == 0:
        raise EmptyMediaError(path, f"{shown_path(path)} is empty (0 bytes)")
    return path


def sniff(path: str | Path) -> MediaType:
    """The real type of a media file, from its first bytes (never its name)."""
    path = check_file(path)
    with _reading(path), path.open("rb") as file:
        head = file.read(SNIFF_BYTES)
    media = sniff_bytes(head)
    if media is None:
        known = f"{IMAGE_FORMATS}, WAV, FLAC, OGG, MP3, M4A/MP4, WebM/MKV"
        raise UnsupportedMediaError(path, f"{shown_path(path)} is not a supported image or audio file (known: {known})")
    if media == HEIC:  # Pillow has no HEVC decoder
        unsupported = "HEIC/HEIF pictures are not supported (convert to JPEG or PNG)"
        raise UnsupportedMediaError(path, f"{shown_path(path)} is a HEIC/HEIF picture: {unsupported}")
    return _by_streams(path, media) if media in _AUDIO_ONLY else media


# A container whose bytes say video may hold audio alone: a voice note a browser recorded
# (WebM/Opus), a phone's recording (MP4/AAC with a generic brand, 3GP).
_AUDIO_ONLY = {MP4: M4A, WEBM: WEBM_AUDIO, MKV: MKA}


def _by_streams(path: Path, media: MediaType) -> MediaType:
    """``media``, or its audio-only twin when the container has an audio stream and no video.

    A file FFmpeg cannot open (a recording cut short, its index never written) is damaged:
    whether it held a voice or a film cannot be told, so it is not called a video.
    """
    streams = _ffmpeg_streams(path)
    if streams is None:
        raise CorruptMediaError(
            path, f"{shown_path(path)} is a damaged or truncated {media.name.upper()} file: it cannot be opened"
        )
    if not streams.audio or streams.video:
        return media
    return _AUDIO_ONLY[media]


@dataclass(frozen=True)
class _Streams:
    audio: int
    decodable_audio: int  # audio streams FFmpeg has a decoder for
    video: int  # moving pictures: cover art (an attached picture) is not video


def _ffmpeg_streams(path: Path) -> _Streams | None:
    """The streams FFmpeg finds in the file, or None if it cannot open it. Only the header is
    read: under 1 ms for a voice note, once PyAV is imported (47 ms).

    FFmpeg reads an open file, never the path: a name such as ``concat:a|b`` or ``http://...``
    would be taken for one of its protocols.
    """
    import av

    with _reading(path), path.open("rb") as file:
        try:
            with av.open(file) as container:
                audio = container.streams.audio
                pictures = av.stream.Disposition.attached_pic
                return _Streams(
                    audio=len(audio),
                    decodable_audio=sum(stream.codec_context is not None for stream in audio),
                    video=sum(not stream.disposition & pictures for stream in container.streams.video),
                )
        except (av.error.FFmpegError, ValueError, UnicodeDecodeError):
            return None


def content_hash(path: str | Path) -> str:
    """SHA-256 of the file's bytes (hex): a cache key that survives renames and touches."""
    path = Path(path)
    digest = hashlib.sha256()
    with _reading(path), path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- images -----------------------------------------------------------------------------------


def _pillow() -> object:
    from PIL import Image

    # Chat attachments are untrusted: make sure Pillow's bomb guard is on even if another
    # library in this process switched it off (open_image also checks its own limit).
    if Image.MAX_IMAGE_PIXELS is None:
        Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
    return Image


def open_image(
    path: str | Path,
    *,
    mode: str | None = "RGB",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> Image.Image:
    """Decode a whole image (in ``mode``; ``None`` keeps its own), checked on the way.

    The image is fully decoded here, so a truncated file fails now with a typed error rather
    than later inside a model's preprocessing. The returned image holds no open file.
    ``min_side`` lets a JPEG decode at a reduced scale that still keeps at least that many
    pixels per side: a model that resizes to 224 px need not decode 12 megapixels. ``max_pixels``
    is checked against the picture's own size, before any such scale, so one limit holds for
    every kind (a JPEG was checked at its reduced scale: a 144 Mpx JPEG was taken while a PNG
    over 89.5 Mpx was refused), and one message says so, Pillow's own bomb guard's included.
    The image is turned the way its EXIF orientation says (as viewers show it); converted to a
    ``mode``, 16-bit greyscale is scaled to 8 bits (not clipped to white) and transparent
    pixels are laid on white (not black, which would erase a black logo).
    """
    path = Path(path)
    media = sniff(path)
    if media.kind != "image":
        raise UnsupportedMediaError(path, f"{shown_path(path)} is {media.describe()}, not an image")
    _pillow()
    from PIL import Image, UnidentifiedImageError

    label = media.name.upper()
    with _reading(path):
        file = path.open("rb")
    try:
        with file, warnings.catch_warnings():
            # Pillow warns on stderr past its own limit; the size is checked here instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise _too_large(path, f"{width}x{height}", max_pixels)
                if min_side is not None and media == JPEG:
                    image.draft("RGB", (min_side, min_side))
                image.load()
                upright = _upright(image)
                return upright.copy() if mode is None else _in_mode(upright, mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's guard fires before ours past its hard limit (ours by default, lower where
        # Image.MAX_IMAGE_PIXELS was set lower): said as ours is, not in its "DOS attack" words.
        found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(exc))
        size, limit = (f"{int(found[1]):,}", int(found[2])) if found else ("too many", max_pixels)
        raise _too_large(path, size, min(limit, max_pixels)) from exc
    except UnidentifiedImageError as exc:
        raise CorruptMediaError(path, f"{shown_path(path)} starts like a {label} image but cannot be decoded") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptMediaError(path, f"{shown_path(path)} is a truncated or damaged {label} image ({detail})") from exc


def _too_large(path: Path, size: str, limit: int) -> ImageTooLargeError:
    """The one message for a picture over the pixel limit, whatever its kind or who found it."""
    return ImageTooLargeError(path, f"{shown_path(path)} is too large to decode safely: {size} pixels, over {limit:,}")


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (a phone photo taken sideways)."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(image) or image


def _in_mode(image: Image.Image, mode: str) -> Image.Image:
    """``image`` in ``mode``: 16-bit and 32-bit greyscale scaled, transparency laid on white."""
    from PIL import Image

    if image.mode.startswith("I"):  # I;16, I;16B, I: 0..65535 greyscale
        image = image.convert("I").point(lambda value: value * (1 / 257)).convert("L")
    if "transparency" in image.info and image.mode in ("P", "L", "RGB"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") and mode not in ("RGBA", "LA"):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        white.alpha_composite(image.convert("RGBA"))
        image = white
    return image.convert(mode)


# --- audio ------------------------------------------------------------------------------------


# Sample formats taken without asking FFmpeg; any other tag (GSM 6.10, G.726, ...) is decodable
# if FFmpeg has a decoder for it, which only FFmpeg knows (``_ffmpeg_decodes``).
_WAV_FORMATS = {1: "PCM", 2: "ADPCM", 3: "float", 6: "A-law", 7: "mu-law", 0x11: "IMA ADPCM", 0x55: "MP3"}
_WAV_EXTENSIBLE = 0xFFFE
_MAX_WAV_CHUNKS = 1000


def check_audio(path: str | Path) -> MediaType:
    """The type of an audio (or audio/video) file, with a WAV file's header checked in full.

    FFmpeg guesses its way past many broken WAV headers and then decodes noise or nothing;
    a header that cannot describe audio is refused here instead. Which sample formats exist
    is FFmpeg's to say: a format tag outside the common few is asked of it.
    """
    path = Path(path)
    media = sniff(path)
    if media.kind == "image":
        raise UnsupportedMediaError(path, f"{shown_path(path)} is {media.describe()}, not audio")
    if media == WAV:
        with _reading(path), path.open("rb") as file:
            fmt = _check_wav_header(path, file)
        if fmt not in _WAV_FORMATS and fmt != _WAV_EXTENSIBLE and not _ffmpeg_decodes(path):
            corrupt = f"{shown_path(path)} is a corrupt WAV file"
            raise CorruptMediaError(path, f"{corrupt}: its header declares unknown sample format 0x{fmt:04x}")
    return media


def _ffmpeg_decodes(path: Path) -> bool:
    """Whether FFmpeg opens the file and has a decoder for its audio."""
    streams = _ffmpeg_streams(path)
    return streams is not None and streams.decodable_audio > 0


def _check_wav_header(path: Path, file: IO[bytes]) -> int:
    """Walk the RIFF chunks: a sane ``fmt `` chunk must come before a ``data`` chunk. Returns
    the format tag."""
    file.seek(12)
    fmt: int | None = None
    for _ in range(_MAX_WAV_CHUNKS):
        header = file.read(8)
        if len(header) < 8:
            break
        chunk_id, size = header[:4], int.from_bytes(header[4:], "little")
        if chunk_id == b"fmt ":
            fmt = _check_wav_format(path, file.read(size), size)
        elif chunk_id == b"data":
            if fmt is None:
                corrupt = f"{shown_path(path)} is a corrupt WAV file"
                raise CorruptMediaError(path, f"{corrupt}: audio data before its format chunk")
            return fmt
        else:
            file.seek(size + (size & 1), 1)
    if fmt is None:
        raise CorruptMediaError(path, f"{shown_path(path)} is a corrupt WAV file: no format chunk")
    raise CorruptMediaError(path, f"{shown_path(path)} is a corrupt WAV file: no audio data chunk")


def _check_wav_format(path: Path, body: bytes, declared: int) -> int:
    """The format tag, once the fields every format needs are sane (channels, rate, frames)."""
    if declared < 16 or len(body) < 16:
        corrupt = f"{shown_path(path)} is a corrupt WAV file"
        raise CorruptMediaError(path, f"{corrupt}: format chunk of {len(body)} bytes (needs 16)")
    fmt, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", body[:16])
    problem = None
    if fmt == 0:
        problem = "sample format 0 (unknown)"
    elif channels == 0:
        problem = "0 channels"
    elif not 1000 <= rate <= 768_000:
        problem = f"a sample rate of {rate} Hz"
    elif block_align == 0:
        problem = "0-byte sample frames"
    elif fmt in (1, 3) and (bits == 0 or block_align != channels * ((bits + 7) // 8)):
        problem = f"{bits}-bit samples in {block_align}-byte frames for {channels} channel(s)"
    if problem:
        raise CorruptMediaError(path, f"{shown_path(path)} is a corrupt WAV file: its header declares {problem}")
    return fmt
