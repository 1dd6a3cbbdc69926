"""Fuzzing the card readers: whatever the bytes, only typed PersonaErrors come out."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmm.personas import PersonaError, card_from_persona, import_bytes, load_card_json, load_card_png
from agentmm.personas.png import embed_cards, iter_chunks
from tests.personas.conftest import make_png, make_v2_card

VALID_PNG = embed_cards(make_png(), {"chara": make_v2_card()})
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)
card_keys = st.sampled_from(
    [
        "name",
        "description",
        "first_mes",
        "alternate_greetings",
        "tags",
        "extensions",
        "character_book",
        "entries",
        "keys",
        "spec",
        "data",
        "insertion_order",
        "selective",
        "agentmm",
        "sampling",
    ]
)


def check(fn, data):
    try:
        return fn(data)
    except PersonaError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data):
    check(load_card_json, data)
    check(load_card_png, data)
    check(import_bytes, data)


@FUZZ
@given(
    spec=st.sampled_from(["chara_card_v2", "chara_card_v3", None, "x"]),
    data=st.dictionaries(card_keys, json_values, max_size=8),
    book=st.dictionaries(card_keys, json_values, max_size=5),
    entries=st.lists(st.dictionaries(card_keys, json_values, max_size=6), max_size=3),
)
def test_card_shaped_json(spec, data, book, entries):
    book = {**book, "entries": entries}
    data = {"name": "Fuzz", **data, "character_book": book}
    card = {"data": data} if spec is None else {"spec": spec, "data": data}
    persona = check(load_card_json, json.dumps(card).encode())
    if persona is not None:  # whatever loads exports back to exactly the same card
        own = "v3" if spec == "chara_card_v3" else "v2"
        assert card_from_persona(persona, own) == card
        other = card_from_persona(persona, "v2" if own == "v3" else "v3")
        assert load_card_json(json.dumps(other)).name == persona.name
    check(load_card_json, json.dumps({**data, "name": "v1"}).encode())


@FUZZ
@given(st.data())
def test_mutated_png(draw):
    data = bytearray(VALID_PNG)
    for _ in range(draw.draw(st.integers(1, 6))):
        op = draw.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw.draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw.draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos : pos + draw.draw(st.integers(1, 64))]
        else:
            data[pos:pos] = draw.draw(st.binary(min_size=1, max_size=16))
    check(load_card_png, bytes(data))
    check(import_bytes, bytes(data))


def _with_chunk_text(text: bytes, keyword: bytes = b"chara") -> bytes:
    """VALID_PNG with its card chunk's text replaced, checksum recomputed."""
    import struct
    import zlib

    out = bytearray()
    for c in iter_chunks(VALID_PNG):
        if c.type == b"tEXt" and c.data.startswith(keyword + b"\0"):
            body = keyword + b"\0" + text
            out += struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
        else:
            out += VALID_PNG[c.start : c.end]
    return b"\x89PNG\r\n\x1a\n" + bytes(out)


@FUZZ
@given(st.data())
def test_mutated_card_chunk_with_valid_crc(draw):
    import base64

    payload = bytearray(json.dumps(make_v2_card()).encode())
    for _ in range(draw.draw(st.integers(1, 4))):
        pos = draw.draw(st.integers(0, len(payload) - 1))
        payload[pos] = draw.draw(st.integers(0, 255))
    encoded = base64.b64encode(bytes(payload))
    if draw.draw(st.booleans()):
        cut = draw.draw(st.integers(0, len(encoded)))
        encoded = encoded[:cut] + draw.draw(st.binary(max_size=8))
    check(load_card_png, _with_chunk_text(encoded))
