"""The write journal that lets caches over an embedded store update incrementally."""

from __future__ import annotations

from pathlib import Path

from agentmm.memory._journal import WriteJournal
from agentmm.memory.chroma_store import ChromaStore


def test_journal_reports_refs_written_since_a_revision() -> None:
    journal = WriteJournal(size=3)
    start = journal.revision
    journal.record([(("a",), "k1")])
    middle = journal.revision
    journal.record([(("a",), "k2"), (("b",), "k1")])
    assert journal.changed_since(start) == {(("a",), "k1"), (("a",), "k2"), (("b",), "k1")}
    assert journal.changed_since(middle) == {(("a",), "k2"), (("b",), "k1")}
    assert journal.changed_since(journal.revision) == set()
    for i in range(3):
        journal.record([(("c",), f"k{i}")])
    assert journal.changed_since(start) is None  # fell out of the journal
    assert journal.changed_since(("another-token", 0)) is None
    assert journal.changed_since((journal.token, 99)) is None


def test_store_revision_follows_writes_and_each_hold(tmp_path: Path) -> None:
    with ChromaStore.from_path(tmp_path / "s") as store, ChromaStore.from_path(tmp_path / "s") as twin:
        before = store.revision
        assert before is not None
        twin.put(("t",), "k", {"v": 1})  # another store of this process, same directory
        assert store.changed_since(before) == {(("t",), "k")}
        assert store.revision == twin.revision != before
    with ChromaStore.from_path(tmp_path / "s") as reopened:
        # Another process may have written in between: an old revision is not trusted.
        assert reopened.changed_since(before) is None
