"""Card PNGs: lossless round trips, chunk handling, and every kind of bad file."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import pytest

from agentmm.personas import (
    CardEncodingError,
    CardJSONError,
    CardSpecError,
    CardTooLargeError,
    CorruptPNGError,
    Limits,
    NoCardInPNGError,
    NotAPNGError,
    Persona,
    PersonaRegistry,
    export,
    import_file,
    load_card_png,
    validate,
)
from agentmm.personas.png import embed_cards, iter_chunks, placeholder_png, text_chunk
from tests.personas.conftest import make_png


def chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def with_text(png: bytes, keyword: str, text: bytes) -> bytes:
    """``png`` with a raw tEXt chunk inserted before IEND (no validation of ``text``)."""
    iend = png.rindex(b"IEND") - 4
    return png[:iend] + chunk(b"tEXt", keyword.encode() + b"\0" + text) + png[iend:]


def card_chunks(png: bytes) -> list[str]:
    return [c.data.split(b"\0")[0].decode() for c in iter_chunks(png) if c.type == b"tEXt"]


@pytest.mark.parametrize("spec", ["v2", "v3"])
def test_png_round_trip_is_exact(tmp_path: Path, v2_card, v3_card, png_bytes, spec):
    card = v2_card if spec == "v2" else v3_card
    keyword = "chara" if spec == "v2" else "ccv3"
    src = tmp_path / "card.png"
    src.write_bytes(embed_cards(png_bytes, {keyword: card}))
    first = import_file(src)
    assert first.card == card
    assert first.image == png_bytes  # the picture without its card chunks, byte for byte
    out = export(first, "png", tmp_path / "out.png")
    second = import_file(out)
    assert second.model_dump(exclude={"source"}) == first.model_dump(exclude={"source"})
    expected = ["Comment", "chara"] if spec == "v2" else ["Comment", "chara", "ccv3"]
    assert card_chunks(out.read_bytes()) == expected  # replaced, never duplicated
    third = export(second, "png", tmp_path / "out.png")  # export over an exported file
    assert card_chunks(third.read_bytes()) == expected
    from PIL import Image

    with Image.open(io.BytesIO(out.read_bytes())) as img:
        assert img.size == (8, 6) and img.getpixel((0, 0)) == (200, 30, 90)


def test_v3_chunk_wins_and_both_are_written(tmp_path: Path, v2_card, v3_card, png_bytes):
    v2_card["data"]["name"] = "From V2"
    png = embed_cards(png_bytes, {"chara": v2_card, "ccv3": v3_card})
    p = load_card_png(png)
    assert p.name == "Testa Rossa" and p.card["spec"] == "chara_card_v3"
    out = export(p, "png", tmp_path / "o.png")
    texts = [c.data.split(b"\0", 1) for c in iter_chunks(out.read_bytes()) if c.type == b"tEXt"]
    chunks = dict(texts)
    v2 = json.loads(base64.b64decode(chunks[b"chara"]))
    v3 = json.loads(base64.b64decode(chunks[b"ccv3"]))
    assert v2["spec"] == "chara_card_v2" and v3 == v3_card


def test_native_persona_to_png_uses_placeholder(tmp_path: Path):
    p = Persona(name="No Picture", description="d", greetings=["hi"])
    out = export(p, "png", tmp_path)
    assert out.name == "no-picture.png"
    back = import_file(out)
    assert back.name == "No Picture" and back.greetings == ["hi"]
    assert back.card["spec"] == "chara_card_v3"
    assert back.image == placeholder_png("No Picture")


def test_other_chunks_and_compressed_card_chunks(v2_card, png_bytes):
    payload = base64.b64encode(json.dumps(v2_card).encode())
    itxt = b"chara\0\x01\x00\0\0" + zlib.compress(payload)
    iend = png_bytes.rindex(b"IEND") - 4
    png = png_bytes[:iend] + chunk(b"iTXt", itxt) + png_bytes[iend:]
    assert load_card_png(png).name == "Testa Rossa"


def make_bad(kind: str, v2_card) -> bytes:
    png = make_png()
    if kind == "jpeg":
        return b"\xff\xd8\xff\xe0" + b"\0" * 100
    if kind == "text":
        return b"just some text, not an image"
    if kind == "empty":
        return b""
    if kind == "truncated":
        return embed_cards(png, {"chara": v2_card})[:-30]
    if kind == "badcrc":
        data = bytearray(embed_cards(png, {"chara": v2_card}))
        data[40] ^= 0xFF
        return bytes(data)
    if kind == "nocard":
        return png
    if kind == "badb64":
        return with_text(png, "chara", b"!!!not base64!!!")
    if kind == "notutf8":
        return with_text(png, "chara", base64.b64encode(b"\xff\xfe\xfd"))
    if kind == "badjson":
        return with_text(png, "chara", base64.b64encode(b"{nope"))
    if kind == "wrongspec":
        return with_text(png, "chara", base64.b64encode(b'{"spec": "something_else", "data": {}}'))
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("jpeg", NotAPNGError),
        ("text", NotAPNGError),
        ("empty", NotAPNGError),
        ("truncated", CorruptPNGError),
        ("badcrc", CorruptPNGError),
        ("nocard", NoCardInPNGError),
        ("badb64", CardEncodingError),
        ("notutf8", CardEncodingError),
        ("badjson", CardJSONError),
        ("wrongspec", CardSpecError),
    ],
)
def test_bad_png_files(tmp_path: Path, v2_card, kind, error):
    path = tmp_path / "card.png"
    path.write_bytes(make_bad(kind, v2_card))
    with pytest.raises(error) as info:
        import_file(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message and len(message) < 300


def test_png_size_cap(v2_card, png_bytes):
    v2_card["data"]["description"] = "x" * 3_000_000
    png = embed_cards(png_bytes, {"chara": v2_card})
    with pytest.raises(CardTooLargeError, match="limit"):
        load_card_png(png, limits=Limits(max_card_bytes=1_000_000))
    with pytest.raises(CardTooLargeError, match="limit"):
        load_card_png(png, limits=Limits(max_file_bytes=100_000))


def test_text_chunk_is_plain_text(v2_card):
    raw = text_chunk("chara", v2_card)
    assert raw[4:8] == b"tEXt" and raw[8:14] == b"chara\0"


def test_a_damaged_ccv3_chunk_is_read_from_chara_and_said(tmp_path: Path, v2_card, v3_card, png_bytes):
    """SillyTavern reads only ccv3 when it is there; a V3 writer also writes chara, so that is
    read instead, and the registry and validate say so rather than lose the V3 data silently."""
    path = tmp_path / "both.png"
    path.write_bytes(with_text(embed_cards(png_bytes, {"chara": v2_card}), "ccv3", b"!!!not base64***"))
    reg = PersonaRegistry(tmp_path, builtins=False, entry_points=False)
    note = f"{path}: the 'ccv3' chunk is not valid base64; read the 'chara' chunk instead"
    assert reg.names() == ["Testa Rossa"] and reg.problems == [] and reg.notes == [note]
    assert reg.get("Testa Rossa").notes == [note] and reg.get("Testa Rossa").card == v2_card
    assert validate(path)[0] == note
    bad_json = with_text(embed_cards(png_bytes, {"chara": v2_card}), "ccv3", base64.b64encode(b"{nope"))
    assert "(ccv3 chunk): not valid JSON" in load_card_png(bad_json).notes[0]
    good = load_card_png(embed_cards(png_bytes, {"chara": v2_card, "ccv3": v3_card}))
    assert good.notes == [] and good.card == v3_card


def test_when_no_card_chunk_can_be_read_the_ccv3_problem_is_raised(png_bytes):
    both_bad = with_text(with_text(png_bytes, "chara", b"{nope"), "ccv3", b"!!!")
    with pytest.raises(CardEncodingError, match="'ccv3' chunk is not valid base64"):
        load_card_png(both_bad)


def test_a_card_chunk_in_url_safe_base64_is_read_as_node_reads_it(v2_card):
    """Node's Buffer.from(text, "base64"), which SillyTavern reads cards with, takes '-' and '_'."""
    v2_card["data"]["description"] = "ÿ~~~???>>> " * 4  # bytes whose base64 holds '+' and '/'
    standard = base64.b64encode(json.dumps(v2_card).encode())
    assert b"+" in standard and b"/" in standard
    url_safe = base64.urlsafe_b64encode(json.dumps(v2_card).encode()).rstrip(b"=")
    persona = load_card_png(with_text(make_png(), "chara", url_safe))
    assert persona.description == v2_card["data"]["description"]
