"""Hostile persona files: whatever a TOML persona, a card JSON or a card PNG holds, import gives a
persona that exports again in every format, or one ``PersonaError`` line; ``personas import``
(``PersonaRegistry.install``) either installs one file or leaves the folder as it was.

Card parsing itself is fuzzed byte by byte in test_fuzz.py; these go through the seams the CLI
uses, with hostile shapes (wrong types, deep nesting, huge fields, size caps).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from agentmm.cli import app
from agentmm.errors import AgentmmError
from agentmm.personas import Limits, Persona, PersonaError, PersonaRegistry, import_bytes
from agentmm.personas.cards import dumps_card
from agentmm.personas.files import render
from agentmm.personas.png import embed_cards, placeholder_png
from tests.personas.conftest import make_v2_card

HOSTILE = settings(
    max_examples=80, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
FIELDS = sorted(Persona.model_fields)
ENTRY_KEYS = ["keys", "secondary_keys", "content", "selective", "constant", "priority", "enabled", "name",
              "insertion_order", "position", "scan_depth", "raw", "case_sensitive"]  # fmt: skip
BOOK_KEYS = ["entries", "scan_depth", "token_budget", "recursive_scanning", "max_recursion_depth", "name", "raw"]

text = st.text(max_size=20)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | text
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8
)
entries = st.dictionaries(st.sampled_from(ENTRY_KEYS), values, max_size=5)
books = st.dictionaries(st.sampled_from(BOOK_KEYS), values | st.lists(entries, max_size=2), max_size=4)
persona_tables = st.fixed_dictionaries(
    {"name": text | values},
    optional={key: (books if key == "lorebook" else values) for key in FIELDS if key != "name"},
)


def toml_value(value: Any) -> str:
    """TOML for any JSON-like value (None, which TOML lacks, as an empty table)."""
    if value is None:
        return "{}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value or value in (1e999, -1e999):
            return "nan" if value != value else "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_text(table: dict[str, Any]) -> bytes:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in table.items()).encode("utf-8")


def one_line(exc: BaseException) -> None:
    assert str(exc) and "\n" not in str(exc), repr(exc)


def import_or_typed_error(data: bytes, where: str = "persona", limits: Limits | None = None) -> Persona | None:
    try:
        persona = import_bytes(data, where=where, limits=limits or Limits())
    except PersonaError as exc:
        one_line(exc)
        return None
    for fmt in ("toml", "card-v2", "card-v3", "png"):  # whatever imports exports again
        render(persona, fmt)  # type: ignore[arg-type]
    return persona


@HOSTILE
@given(table=persona_tables)
@example(table={"name": "a", "lorebook": {"entries": 5}})
@example(table={"name": "a", "sampling": {"temperature": float("nan")}})
@example(table={"name": "a", "greetings": "hello"})
def test_any_toml_persona_imports_or_is_one_typed_line(table: dict[str, Any]) -> None:
    import_or_typed_error(toml_text(table), "hostile.toml")


@settings(HOSTILE, max_examples=20)
@given(depth=st.integers(1, 3000), key=st.sampled_from(["sampling", "lorebook", "tags"]), table=st.booleans())
def test_deeply_nested_toml_is_one_typed_line(depth: int, key: str, table: bool) -> None:
    nested = "{a = " * depth + "1" + "}" * depth if table else "[" * depth + "1" + "]" * depth
    import_or_typed_error(f'name = "Deep"\n{key} = {nested}\n'.encode(), "deep.toml")


@HOSTILE
@given(
    field=st.sampled_from(["description", "first_mes", "mes_example", "name", "alternate_greetings"]),
    size=st.integers(0, 3000),
    as_png=st.booleans(),
)
def test_huge_fields_stay_under_the_caps(field: str, size: int, as_png: bool) -> None:
    """Caps are honoured whatever field is large, in JSON and inside a PNG (small caps stand in
    for the real 20 MB / 128 MB so the test stays fast)."""
    card = make_v2_card()
    card["data"][field] = ["x" * size] if field == "alternate_greetings" else "x" * max(size, 1)
    raw = (dumps_card(card, indent=None) if as_png else json.dumps(card)).encode()  # the JSON as the file holds it
    data = embed_cards(placeholder_png("Huge", 8, 8), {"chara": card}) if as_png else raw
    limits = Limits(max_card_bytes=4096, max_file_bytes=8192)
    persona = import_or_typed_error(data, "huge.png" if as_png else "huge.json", limits)
    if persona is not None:
        assert len(raw) <= limits.max_card_bytes and len(data) <= limits.max_file_bytes


@HOSTILE
@given(spec=values | st.sampled_from(["chara_card_v2", "chara_card_v3", "chara_card_v1", "CHARA_CARD_V2", " "]),
       data=values | st.just({"name": "Spec"}))  # fmt: skip
def test_wrong_spec_or_data_is_one_typed_line(spec: Any, data: Any) -> None:
    for card in ({"spec": spec, "data": data}, {"spec": spec, "spec_version": spec, "data": data, "name": "x"}):
        import_or_typed_error(json.dumps(card).encode(), "spec.json")
        png = embed_cards(placeholder_png("Spec", 8, 8), {"ccv3": card})
        import_or_typed_error(png, "spec.png")


def card_chunk_png(payload: bytes, keyword: bytes = b"chara") -> bytes:
    """A PNG whose card chunk holds ``payload`` as its text, whatever it is."""
    import struct
    import zlib

    base = placeholder_png("Chunk", 8, 8)
    body = keyword + b"\0" + payload
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    return base[:-12] + chunk + base[-12:]  # before IEND


@HOSTILE
@given(
    payload=st.binary(max_size=60)
    | st.text(max_size=60).map(lambda t: base64.b64encode(t.encode()))
    | values.map(lambda v: base64.b64encode(json.dumps(v).encode()))
    | st.just(base64.b64encode(b"\xff\xfe not utf-8")),
    keyword=st.sampled_from([b"chara", b"ccv3", b"CHARA"]),
)
def test_any_card_chunk_is_a_persona_or_one_typed_line(payload: bytes, keyword: bytes) -> None:
    import_or_typed_error(card_chunk_png(payload, keyword), "chunk.png")


# -- personas import: one file installed, or none ---------------------------------------------


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


hostile_files = (
    st.binary(max_size=120)
    | persona_tables.map(toml_text)
    | st.dictionaries(st.sampled_from(["spec", "data", "name", "description", "entries"]), values, max_size=4).map(
        lambda d: json.dumps(d).encode()
    )
    | st.just(json.dumps(make_v2_card()).encode())
    | st.just(embed_cards(placeholder_png("Png", 8, 8), {"chara": make_v2_card()}))
)


@HOSTILE
@given(data=hostile_files, name=st.sampled_from(["card.json", "card.png", "card.toml", "card"]))
def test_install_writes_one_file_or_nothing(tmp_path_factory: pytest.TempPathFactory, data: bytes, name: str) -> None:
    base = tmp_path_factory.mktemp("install")
    folder, source = base / "personas", base / name
    source.write_bytes(data)
    registry = PersonaRegistry(folder, builtins=False, entry_points=False)
    before = listing(folder)
    try:
        persona = registry.install(source)
    except PersonaError as exc:
        one_line(exc)
        assert listing(folder) == before  # nothing half-written, no temp file left
        return
    added = set(listing(folder)) - set(before)
    assert len(added) == 1 and listing(folder)[added.pop()] == data  # installed unchanged
    assert registry.get(persona.name).name == persona.name
    assert not registry.problems


@settings(HOSTILE, max_examples=25)
@given(data=hostile_files)
def test_cli_personas_import_is_one_line_or_done(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    base = tmp_path_factory.mktemp("cli")
    source, folder = base / "card.json", base / "personas"
    source.write_bytes(data)
    config = base / "config.toml"
    config.write_text(f"personas_dir = {json.dumps(str(folder))}\n")
    result = CliRunner().invoke(app, ["--config", str(config), "personas", "import", str(source), "--json"],
                                env={"AGENTMM_PERSONAS_DIR": str(folder)})  # fmt: skip
    if result.exit_code == 0:
        assert json.loads(result.stdout)["name"]
        assert len(listing(folder)) == 1
    else:
        assert isinstance(result.exception, AgentmmError), result.exception
        one_line(result.exception)
        assert listing(folder) == {}
