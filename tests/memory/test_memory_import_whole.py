"""``agentmm memory import`` is all or nothing: an import killed part way (SIGKILL, Ctrl-C, a
failing write) leaves the store as it was before, never part of the file.

The import runs in ``ChromaStore.all_or_nothing``: what each write replaces is logged in the
store's directory first, and the next open takes back a block that did not finish. The first
test kills a real child process in the middle of a long (pipelined) import; the second cuts an
import short after each of its Chroma writes, as ``test_memory_crash`` does for one batch (the
taking back fails there too, as it would in a dead process, so the next open must do it).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from langgraph.store.base import PutOp

from agentmm.memory import _undo
from agentmm.memory._lock import DirectoryLock
from agentmm.memory.chroma_store import PIPELINE_CHUNK, ChromaStore
from agentmm.memory.manage import EXPORT_FORMAT, import_jsonl
from tests.memory.conftest import CharacterEmbeddings
from tests.memory.test_memory_crash import DyingClient, Killed
from tests.test_crash_safety import kill_at

ROOT = Path(__file__).resolve().parents[2]
OLD = ("memories", "ada", "nora")
NEW = ("memories", "ada", "brand-new")


class HangingEmbeddings(CharacterEmbeddings):
    """The memory tests' embedder; its ``hang_at``-th ``embed_documents`` call writes ``marker``
    and waits to be killed (or raises ``KeyboardInterrupt`` with ``interrupt``)."""

    def __init__(self, marker: str = "", hang_at: int = 0, interrupt: bool = False) -> None:
        super().__init__(dims=64)
        self.marker, self.hang_at, self.interrupt, self.calls = marker, hang_at, interrupt, 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        if self.calls == self.hang_at:
            if self.interrupt:
                raise KeyboardInterrupt
            Path(self.marker).write_text(str(os.getpid()))
            time.sleep(600)
        return super().embed_documents(texts)


def index(embeddings: CharacterEmbeddings) -> dict[str, Any]:
    return {"dims": embeddings.dims, "embed": embeddings, "fields": ["text"]}


def seed(path: Path) -> None:
    """Three memories the import will change one of, and leave the others alone."""
    with ChromaStore.from_path(path, index=index(CharacterEmbeddings(64))) as store:
        store.batch([PutOp(OLD, f"k{i}", {"text": f"old memory {i} of the harbour"}) for i in range(3)])


def write_export(path: Path, new: int) -> Path:
    """An export that changes k0 (first, so the first chunk written holds it) and adds ``new``."""
    rows = [(OLD, "k0", "changed memory about a red bicycle")]
    rows += [(NEW, f"n{i}", f"brand new memory number {i} about boats") for i in range(new)]
    stamp = "2024-03-01T10:00:00.000000+00:00"
    row = {"format": EXPORT_FORMAT, "created_at": stamp, "updated_at": stamp}
    lines = [json.dumps({**row, "namespace": list(ns), "id": key, "value": {"text": text}}) for ns, key, text in rows]
    file = path / "export.jsonl"
    file.write_text("\n".join(lines) + "\n")
    return file


def snapshot(path: Path) -> dict[str, Any]:
    """Everything a user can see: items with values and times, listed namespaces, and that every
    item is found by meaning (has its vectors)."""
    with ChromaStore.from_path(path, index=index(CharacterEmbeddings(64))) as store:
        items = store.search(("memories",), limit=10_000)
        for item in items:
            found = store.search(item.namespace, query=item.value["text"], limit=10_000)
            assert item.key in {hit.key for hit in found if hit.score is not None}, f"{item.key} has no vector"
        return {
            "items": {(i.namespace, i.key): (i.value, i.created_at, i.updated_at) for i in items},
            "namespaces": store.list_namespaces(prefix=("memories",)),
        }


def child(store_path: str, export: str, marker: str) -> None:
    """An import in this process whose third embedding call waits to be killed (run as a child)."""
    with ChromaStore.from_path(store_path, index=index(HangingEmbeddings(marker, hang_at=3))) as store:
        import_jsonl(store, Path(export))


@pytest.mark.slow
def test_an_import_killed_part_way_leaves_nothing_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "store"
    seed(path)
    before = snapshot(path)
    export = write_export(tmp_path, new=2 * PIPELINE_CHUNK + 40)  # three chunks
    marker = tmp_path / "importing"
    code = "import sys; from tests.memory.test_memory_import_whole import child; child(*sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(export), str(marker)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        # The third chunk is embedded only once the first was written: the import is part way.
        kill_at(proc, marker)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)

    assert snapshot(path) == before
    assert not (path / _undo.UNDO_FILENAME).exists()
    with ChromaStore.from_path(path, index=index(CharacterEmbeddings(64))) as store:
        assert import_jsonl(store, export) == 2 * PIPELINE_CHUNK + 41  # and the import then goes through
    after = snapshot(path)
    assert len(after["items"]) == 2 * PIPELINE_CHUNK + 43
    assert after["items"][(OLD, "k0")][0] == {"text": "changed memory about a red bicycle"}


def test_ctrl_c_part_way_takes_the_import_back_in_the_process(tmp_path: Path) -> None:
    path = tmp_path / "store"
    seed(path)
    before = snapshot(path)
    export = write_export(tmp_path, new=2 * PIPELINE_CHUNK + 40)
    with ChromaStore.from_path(path, index=index(HangingEmbeddings(hang_at=3, interrupt=True))) as store:
        with pytest.raises(KeyboardInterrupt):
            import_jsonl(store, export)
        assert not (path / _undo.UNDO_FILENAME).exists()
        assert len(store.search(("memories",), limit=10_000)) == 3
    assert snapshot(path) == before


@pytest.mark.parametrize("writes", range(7))
def test_an_import_cut_short_after_any_write_is_whole_or_absent(tmp_path: Path, writes: int) -> None:
    import chromadb
    from chromadb.config import Settings

    path = tmp_path / "store"
    seed(path)
    before = snapshot(path)
    export = write_export(tmp_path, new=3)

    lock = DirectoryLock(path)
    lock.acquire()
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    try:
        dying = ChromaStore(
            DyingClient(client, writes),  # type: ignore[arg-type]
            index=index(CharacterEmbeddings(64)),
            location=str(path),
            dir_lock=lock,
        )
        with contextlib.suppress(Killed):
            import_jsonl(dying, export)
            assert not (path / _undo.UNDO_FILENAME).exists()
    finally:
        client.close()
        lock.release()

    after = snapshot(path)
    assert not (path / _undo.UNDO_FILENAME).exists()
    if writes >= 6:
        assert after != before  # enough writes for the whole import
    if after != before:  # the whole file, times included
        assert len(after["items"]) == 6
        assert after["items"][(OLD, "k0")][0] == {"text": "changed memory about a red bicycle"}
        assert after["items"][(NEW, "n2")][1].isoformat() == "2024-03-01T10:00:00+00:00"
        assert after["items"][(OLD, "k0")][2].isoformat() == "2024-03-01T10:00:00+00:00"


def test_a_whole_import_leaves_no_log(tmp_path: Path) -> None:
    path = tmp_path / "store"
    seed(path)
    with ChromaStore.from_path(path, index=index(CharacterEmbeddings(64))) as store:
        assert import_jsonl(store, write_export(tmp_path, new=3)) == 4
    assert not (path / _undo.UNDO_FILENAME).exists()
    assert len(snapshot(path)["items"]) == 6
