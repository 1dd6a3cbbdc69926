"""Character cards inside PNG images: read and write the ``chara`` / ``ccv3`` text chunks.

A card PNG is an ordinary image with the card JSON, base64-encoded, in a ``tEXt`` chunk:
keyword ``chara`` for V2, ``ccv3`` for V3 (V3 wins when both are there, as the V3 spec says).

Why parse chunks by hand instead of going through Pillow: PNG's chunk layout is a dozen lines
of ``struct``, and working on the chunk list keeps every other byte of the file exact (pixels,
colour profile, APNG frames, V3 ``chara-ext-asset_`` chunks). Pillow would decode and
re-encode the pixels on save, drop chunks it does not know, and its text-chunk reader caps
chunks at 1 MB, smaller than many cards with an embedded lorebook. It also keeps this module
import-cheap and free of a native dependency.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from agentmm.personas._fields import size_text
from agentmm.personas.cards import DEFAULT_LIMITS, Limits, dumps_card, parse_json_object, persona_from_card
from agentmm.personas.errors import (
    CardEncodingError,
    CardError,
    CardTooLargeError,
    CorruptPNGError,
    NoCardInPNGError,
    NotAPNGError,
)
from agentmm.personas.model import Persona

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("chara", "ccv3")
_TEXT_TYPES = (b"tEXt", b"zTXt", b"iTXt")


@dataclass(frozen=True)
class Chunk:
    """One PNG chunk and where it sits in the file (``start``: its length field)."""

    type: bytes
    data: bytes
    start: int
    end: int


def sniff_kind(data: bytes) -> str:
    """A few words on what some bytes look like, for error messages."""
    if not data:
        return "an empty file"
    if data.startswith(PNG_SIGNATURE):
        return "PNG image"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG image"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP image"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF image"
    if data.startswith(b"PK\x03\x04"):
        return "ZIP archive (a CHARX card? those are not supported)"
    head = data[:64].lstrip()
    if head.startswith((b"{", b"[")):
        return "JSON text"
    return "unrecognised data"


def iter_chunks(png: bytes, where: str = "image") -> Iterator[Chunk]:
    """The chunks of a PNG up to and including IEND, CRC-checked."""
    if not png.startswith(PNG_SIGNATURE):
        raise NotAPNGError(f"{where}: not a PNG image (it is {sniff_kind(png)})")
    pos, n = len(PNG_SIGNATURE), len(png)
    first = True
    while True:
        if pos + 8 > n:
            raise CorruptPNGError(f"{where}: PNG is truncated (no IEND chunk)")
        length, ctype = struct.unpack(">I4s", png[pos : pos + 8])
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > n:
            raise CorruptPNGError(f"{where}: PNG is truncated (chunk at byte {pos} runs past the end)")
        if not ctype.isalpha():
            raise CorruptPNGError(f"{where}: PNG is damaged (bad chunk type at byte {pos})")
        if first and ctype != b"IHDR":
            raise CorruptPNGError(f"{where}: PNG is damaged (first chunk is not IHDR)")
        first = False
        body = png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[end - 4 : end])
        if zlib.crc32(ctype + body) != crc:
            name = ctype.decode("latin-1")
            raise CorruptPNGError(f"{where}: PNG is damaged (bad checksum in {name} chunk at byte {pos})")
        yield Chunk(ctype, body, pos, end)
        if ctype == b"IEND":
            return
        pos = end


def _text_keyword(chunk: Chunk) -> str | None:
    if chunk.type not in _TEXT_TYPES:
        return None
    keyword, sep, _ = chunk.data.partition(b"\0")
    return keyword.decode("latin-1").lower() if sep else None


def _text_value(chunk: Chunk, where: str, cap: int) -> bytes:
    """The text of a tEXt chunk, or the (capped) decompressed text of zTXt / iTXt."""
    _, _, rest = chunk.data.partition(b"\0")
    if chunk.type == b"tEXt":
        return rest
    if chunk.type == b"zTXt":
        return _inflate(rest[1:], where, cap)
    # iTXt: compression flag, method, language tag \0, translated keyword \0, text
    if len(rest) < 2:
        raise CorruptPNGError(f"{where}: PNG is damaged (short iTXt chunk)")
    compressed = rest[0] == 1
    parts = rest[2:].split(b"\0", 2)
    if len(parts) != 3:
        raise CorruptPNGError(f"{where}: PNG is damaged (malformed iTXt chunk)")
    return _inflate(parts[2], where, cap) if compressed else parts[2]


def _inflate(data: bytes, where: str, cap: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, cap + 1)
    except zlib.error:
        raise CorruptPNGError(f"{where}: PNG is damaged (compressed text chunk does not inflate)") from None
    if len(out) > cap:
        raise CardTooLargeError(f"{where}: card chunk is over the {size_text(cap)} limit")
    return out


_URL_SAFE = bytes.maketrans(b"-_", b"+/")


def _decode_base64(text: bytes, where: str, keyword: str) -> bytes:
    """The chunk's base64, read as SillyTavern's Node ``Buffer.from(text, "base64")`` reads
    it: whitespace skipped, padding optional, and the URL-safe alphabet (``-``, ``_``) taken
    as well as the standard one."""
    compact = b"".join(text.split()).translate(_URL_SAFE)
    compact += b"=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise CardEncodingError(f"{where}: the '{keyword}' chunk is not valid base64") from None


def _card_chunks(png: bytes, where: str, limits: Limits) -> tuple[dict[str, Chunk], bytes]:
    """The card chunks of a PNG by keyword (the first of each), and the PNG without them."""
    if len(png) > limits.max_file_bytes:
        raise CardTooLargeError(
            f"{where}: file is {size_text(len(png))}, over the {size_text(limits.max_file_bytes)} limit"
        )
    found: dict[str, Chunk] = {}
    kept: list[bytes] = [PNG_SIGNATURE]
    for chunk in iter_chunks(png, where):
        keyword = _text_keyword(chunk)
        if keyword in CARD_KEYWORDS:
            found.setdefault(keyword, chunk)
        else:
            kept.append(png[chunk.start : chunk.end])
    if not found:
        raise NoCardInPNGError(f"{where}: PNG has no character card in it (no 'chara' or 'ccv3' chunk)")
    return found, b"".join(kept)


def _chunk_card(chunk: Chunk, keyword: str, where: str, limits: Limits) -> dict[str, Any]:
    """The card JSON object one card chunk holds."""
    b64_cap = limits.max_card_bytes * 4 // 3 + 8
    text = _text_value(chunk, where, b64_cap)
    if len(text) > b64_cap:
        raise CardTooLargeError(f"{where}: card is over the {size_text(limits.max_card_bytes)} limit")
    raw = _decode_base64(text, where, keyword)
    return parse_json_object(raw, where=f"{where} ({keyword} chunk)", limits=limits)


def load_card_png(png: bytes, *, where: str = "image", source: str = "", limits: Limits = DEFAULT_LIMITS) -> Persona:
    """Card PNG bytes -> Persona, keeping the image (minus card chunks) in ``Persona.image``.

    The ``ccv3`` card wins when both chunks are there. When it cannot be read (bad base64,
    bad JSON, not a card) but ``chara`` can, the persona comes from ``chara``, and
    ``Persona.notes`` says so: SillyTavern would refuse the file (it reads only ``ccv3``
    then), but a V3 writer also writes ``chara``, and the person loses less from its V2 view
    than from no persona at all. Exporting writes both chunks afresh.
    """
    found, image = _card_chunks(png, where, limits)
    failures: list[CardError] = []
    for keyword in ("ccv3", "chara"):
        if keyword not in found:
            continue
        try:
            card = _chunk_card(found[keyword], keyword, where, limits)
            persona = persona_from_card(card, where=where, source=source, image=image)
        except CardError as exc:
            failures.append(exc)
            continue
        notes = [f"{failure}; read the '{keyword}' chunk instead" for failure in failures]
        return persona.model_copy(update={"notes": notes}) if notes else persona
    raise failures[0]


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def text_chunk(keyword: str, card: Mapping[str, Any]) -> bytes:
    """A ``tEXt`` chunk holding a card as base64 JSON (compact, UTF-8)."""
    payload = base64.b64encode(dumps_card(card, indent=None).encode("utf-8"))
    return _chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + payload)


def embed_cards(png: bytes, cards: Mapping[str, Mapping[str, Any]], *, where: str = "image") -> bytes:
    """``png`` with its card chunks replaced by ``cards`` (keyword -> card), before IEND.

    Existing ``chara`` / ``ccv3`` chunks are dropped first, so a card is never duplicated;
    every other chunk is copied byte for byte.
    """
    out: list[bytes] = [PNG_SIGNATURE]
    for chunk in iter_chunks(png, where):
        if _text_keyword(chunk) in CARD_KEYWORDS:
            continue
        if chunk.type == b"IEND":
            out.extend(text_chunk(k, card) for k, card in cards.items())
        out.append(png[chunk.start : chunk.end])
    return b"".join(out)


def placeholder_png(seed: str, width: int = 400, height: int = 600) -> bytes:
    """A plain portrait-sized PNG in a colour derived from ``seed``, for personas without
    a picture (so any persona can be exported as a card PNG)."""
    r, g, b = hashlib.sha256(seed.encode("utf-8")).digest()[:3]
    r, g, b = 64 + r // 2, 64 + g // 2, 64 + b // 2
    row = b"\0" + bytes((r, g, b)) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(row * height, 9)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
