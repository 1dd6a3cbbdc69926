"""Hostile memory imports: whatever an export file holds, ``import_jsonl`` (what ``agentmm memory
import`` calls) imports every row or raises one ``MemoryStoreError`` line and leaves the store
exactly as it was; what it imports reads back, lists and exports like any other memory.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.conversation import ROOT
from agentmm.memory.errors import MemoryStoreError
from agentmm.memory.manage import EXPORT_FORMAT, add_memory, export_jsonl, import_jsonl, list_memories, stats
from tests.memory.conftest import CharacterEmbeddings

HOSTILE = settings(
    max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# Characters that break line-based readers, JSON or SQLite in the wild.
TRICKY = ["\u2028", "\u2029", "\x85", "\x1c", "\x0b", "\x0c", "\r", "\n", "\ufeff", "\x00", ".", "é", "😀"]
text = st.text(st.sampled_from(TRICKY) | st.characters(exclude_categories=["Cs"]), max_size=30)
plain = st.text(st.characters(exclude_categories=["Cs", "Cc"], exclude_characters="."), max_size=12)
label = st.sampled_from(["ada", "nora", "_assistant", "_shared"]) | plain
bad_label = st.sampled_from(["", "a.b", "a\x00b", "memories"]) | text
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=10,
)
timestamps = st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()) | st.sampled_from(
    ["2024-03-01T10:00:00+00:00", "2024-03-01T10:00:00.123456+00:00", "2024-03-01"]
)
bad_timestamps = st.sampled_from(["yesterday", "", "9999-99-99", "2024-03-01T25:00"]) | json_values


@st.composite
def export_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A row as ``memory export`` writes it, then maybe one field made wrong."""
    row: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "namespace": [ROOT, draw(label), draw(label)],
        "id": draw(st.sampled_from(["note:abc", "m1", "m2"]) | text),
        "value": {"text": draw(text), "content": draw(text), "role": "note"},
        "created_at": draw(timestamps),
        "updated_at": draw(timestamps),
    }
    if draw(st.integers(0, 4)) == 3:  # not 0: hypothesis tries 0 first and often
        key = draw(st.sampled_from(sorted(row)))
        if draw(st.booleans()):
            del row[key]
        elif key.endswith("_at"):
            row[key] = draw(bad_timestamps)
        elif key == "namespace":
            row[key] = draw(st.lists(label | bad_label, max_size=5).map(lambda ls: [ROOT, *ls]) | json_values)
        else:
            row[key] = draw(json_values)
    if isinstance(row.get("value"), dict) and draw(st.integers(0, 9)) == 7:
        row["value"]["deep"] = draw(st.sampled_from([DEEP, SURROGATE]))
    return row


DEEP, SURROGATE = "<<deep>>", "<<surrogate>>"


def encode(row: dict[str, Any]) -> str:
    """JSON text of a row; the markers become what json.dumps will not write: nesting past
    Python's recursion limit, and a lone surrogate escape."""
    text = json.dumps(row, ensure_ascii=False)
    text = text.replace(json.dumps(DEEP), "[" * 3000 + "]" * 3000)
    return text.replace(json.dumps(SURROGATE), '"\\ud800"')


@st.composite
def export_files(draw: st.DrawFn) -> str:
    lines = [encode(row) for row in draw(st.lists(export_rows(), min_size=1, max_size=4))]
    if draw(st.integers(0, 4)) == 3:  # a line that is not a row at all
        lines.insert(draw(st.integers(0, len(lines))), draw(text | st.sampled_from(["{", "[1]", "null", "NaN"])))
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n", "\n\n"]))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaStore]:
    embeddings = CharacterEmbeddings(dims=16)
    path = tmp_path_factory.mktemp("hostile") / "store"
    with ChromaStore.from_path(path, index={"dims": 16, "embed": embeddings, "fields": ["text"]}) as s:
        add_memory(s, "ada", "nora", "Ada's sister lives in Lisbon.")
        add_memory(s, "ada", None, "Ada drinks her tea without sugar.")
        yield s


def snapshot(store: ChromaStore) -> dict[tuple[tuple[str, ...], str], tuple[Any, str, str]]:
    out = {}
    for namespace in store.list_namespaces(prefix=(ROOT,), limit=10_000):
        for item in store.search(namespace, limit=10_000):
            if item.namespace == namespace:
                out[(namespace, item.key)] = (item.value, item.created_at.isoformat(), item.updated_at.isoformat())
    return out


def as_utc(stamp: str) -> datetime:
    """An exported time as the store keeps it: without a zone it is taken as UTC."""
    when = datetime.fromisoformat(stamp)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def one_line(exc: BaseException) -> None:
    assert str(exc) and "\n" not in str(exc) and "\r" not in str(exc), repr(exc)


def check_consistent(store: ChromaStore) -> None:
    """What `memory stats` counts is what `memory list` shows, for every user."""
    report = stats(store)
    users = {scope.split("/")[0] for scope in report["scopes"]}
    listed = sum(len(list_memories(store, user, None, limit=100_000)) for user in users)
    assert listed == report["total"] == len(snapshot(store))


@HOSTILE
@given(content=export_files())
@example(content=json.dumps({"format": EXPORT_FORMAT, "namespace": [ROOT, "a.b", "c"], "id": "x", "value": {}}))
@example(content=json.dumps({"format": EXPORT_FORMAT, "namespace": [ROOT, "a"], "id": "x", "value": {}}))
@example(content=json.dumps({"format": EXPORT_FORMAT, "namespace": [ROOT, "a", "b"], "id": "x", "value": {},
                             "created_at": "yesterday", "updated_at": "2024-03-01T10:00:00+00:00"}))  # fmt: skip
@example(content=encode({"format": EXPORT_FORMAT, "namespace": [ROOT, "a", "b"], "id": "x", "value": {"t": SURROGATE}}))
@example(content=encode({"format": EXPORT_FORMAT, "namespace": [ROOT, "a", "b"], "id": "x", "value": {"t": DEEP}}))
def test_an_import_is_whole_or_one_typed_line_and_no_change(store: ChromaStore, tmp_path_factory: Any,
                                                             content: str) -> None:  # fmt: skip
    path = tmp_path_factory.getbasetemp() / "import.jsonl"
    path.write_text(content, encoding="utf-8", newline="")
    before = snapshot(store)
    try:
        count = import_jsonl(store, path)
    except MemoryStoreError as exc:
        one_line(exc)
        assert snapshot(store) == before
        return
    after = snapshot(store)
    rows = [json.loads(line) for line in content.split("\n") if line.strip()]
    latest = {(tuple(r["namespace"]), r["id"]): r for r in rows}
    assert count == len(latest)  # a memory given twice is one memory: the later row wins
    for ref, row in latest.items():
        value, created, updated = after[ref]
        assert value == row["value"]
        stamps = [as_utc(s) for s in (row.get("created_at"), row.get("updated_at")) if s]
        if stamps:
            assert datetime.fromisoformat(created) == stamps[0] and datetime.fromisoformat(updated) == stamps[-1]
    assert set(after) - set(latest) == set(before) - set(latest)  # nothing else changed
    check_consistent(store)


@settings(HOSTILE, max_examples=10)
@given(words=st.lists(text.filter(str.strip), min_size=1, max_size=3))
@example(words=["line\u2028separator", "next\x85line", "para\u2029graph"])
def test_export_import_export_is_identical_whatever_the_text(
    store: ChromaStore, tmp_path_factory: Any, words: list[str]
) -> None:
    user = f"roundtrip-{uuid.uuid4().hex}"  # a scope of its own in the shared store
    for word in words:
        add_memory(store, user, "nora", word)
    base = tmp_path_factory.getbasetemp()
    first, second = base / "first.jsonl", base / "second.jsonl"
    assert export_jsonl(store, user, None, first) == len(words)
    assert import_jsonl(store, first) == len(words)
    export_jsonl(store, user, None, second)
    assert second.read_bytes() == first.read_bytes()
