"""What a chunk of a long write batch is about to overwrite, so a batch that fails part way
can be taken back.

A write batch with many texts is embedded and written chunk by chunk (``ChromaStore``'s
pipelined path); the store's promise that a failed batch leaves it as it was then needs the
chunks already written undone. Before each chunk is written, the item rows and vectors it will
replace are read here (nothing for keys that are new, so a fresh import reads only the ids),
and :func:`restore` puts them back over whatever the chunk wrote.

A block of several batches that must stand or fall together even across a kill (``memory
import``: its items, then their exported timestamps) keeps its backups in an :class:`UndoLog`
on disk, which the next open of the store rolls back if the block never finished.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from agentmm.memory import _records as rec
from agentmm.memory._journal import ItemRef

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection


@dataclass
class Backup:
    """The records one chunk replaces: item ids it writes, and the old rows of those that existed."""

    ids: list[str]
    items: dict[str, Any] = field(default_factory=dict)
    vectors: dict[str, Any] = field(default_factory=dict)

    @property
    def existing(self) -> dict[str, Any]:
        """The stored metadata of the items that existed, by id: what the write itself reads."""
        return dict(zip(self.items.get("ids") or [], self.items.get("metadatas") or [], strict=True))


def backup(items: Collection, vectors: Collection, ids: Sequence[str]) -> Backup:
    """Read what writing ``ids`` would overwrite (``ids`` within Chroma's batch size)."""
    old = items.get(ids=list(ids), include=["documents", "metadatas"])
    saved = Backup(ids=list(ids), items=dict(old))
    if old["ids"]:
        where = {rec.ITEM: {"$in": list(old["ids"])}}
        saved.vectors = dict(vectors.get(where=where, include=["embeddings", "metadatas"]))
    return saved


def restore(items: Collection, vectors: Collection, saved: Backup) -> None:
    """Take a chunk's write back: its items and their vectors go, the old ones return.

    Vectors are put back before their item row, as a write orders them, so an interrupted
    restore never leaves a row whose vectors are missing. The old vectors come back under ids
    of a new generation (``_records.vector_id``), and every other vector of those items goes:
    the write deleted the old ids, and adding an id again after a delete once left an item that
    search could not find (chroma-core/chroma#7758; CI, after a killed import was taken back and
    imported again). Run again after a kill part way, it ends the same.
    """
    old_vectors = saved.vectors.get("ids") or []
    fresh: list[str] = []
    if old_vectors:
        generation, counts = rec.new_generation(), Counter[str]()
        for metadata in saved.vectors["metadatas"]:
            owner = str(metadata[rec.ITEM])
            fresh.append(rec.vector_id(owner, counts[owner], generation))
            counts[owner] += 1
        vectors.upsert(ids=fresh, embeddings=saved.vectors["embeddings"], metadatas=saved.vectors["metadatas"])
    kept = set(fresh)
    now = vectors.get(where={rec.ITEM: {"$in": saved.ids}}, include=[])["ids"]
    if added := [i for i in now if i not in kept]:
        vectors.delete(ids=added)
    old_items = saved.items.get("ids") or []
    new = [i for i in saved.ids if i not in set(old_items)]
    if new:
        items.delete(ids=new)
    if old_items:
        items.upsert(
            ids=old_items,
            embeddings=[rec.placeholder_embedding(i) for i in old_items],
            documents=saved.items["documents"],
            metadatas=saved.items["metadatas"],
        )


UNDO_FILENAME = "agentmm-undo.jsonl"


class UndoLog:
    """What a block of writes replaced (``ChromaStore.all_or_nothing``), kept until the block ends.

    With a ``path`` (an embedded store's directory) each backup is appended there and synced
    before the write it covers, so a process killed part way leaves the log behind and the
    next open of the directory puts the store back (:func:`read_log`). A backup is one line:
    a kill while appending leaves at most a torn last line, whose write had not started. The
    file is deleted when the block ends, whole or taken back: that is the commit.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: list[tuple[list[ItemRef], Backup]] = []
        self.ids: set[str] = set()
        self._file: IO[bytes] | None = None

    def add(self, refs: Iterable[ItemRef], saved: Backup) -> None:
        """Note a backup of the items ``refs`` name, on disk first when the log has a path."""
        refs = [(tuple(namespace), key) for namespace, key in refs]
        if self.path is not None:
            if self._file is None:
                self._file = open(self.path, "ab")  # noqa: SIM115 - open for the block's whole life
            line = json.dumps({"refs": refs, **_backup_json(saved)}, ensure_ascii=False)
            self._file.write(line.encode("utf-8") + b"\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        self.entries.append((refs, saved))
        self.ids.update(saved.ids)

    def close(self) -> None:
        """End the block: the file goes (the block's writes stand, or were taken back)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def detach(self) -> None:
        """Let go of the file but leave it, for the next open to take the block back."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


def read_log(path: Path) -> list[tuple[list[ItemRef], Backup]]:
    """The backups a block cut short left in ``path``, oldest first; a torn line is skipped
    (its write had not started)."""
    entries = []
    for line in path.read_bytes().split(b"\n"):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        refs = [(tuple(namespace), key) for namespace, key in row["refs"]]
        entries.append((refs, _backup_from_json(row)))
    return entries


def _backup_json(saved: Backup) -> dict[str, Any]:
    vectors = saved.vectors
    embeddings = vectors.get("embeddings")
    return {
        "ids": saved.ids,
        "items": {key: list(saved.items.get(key) or []) for key in ("ids", "documents", "metadatas")},
        "vectors": {
            "ids": list(vectors.get("ids") or []),
            "metadatas": list(vectors.get("metadatas") or []),
            # float32 bytes, as Chroma keeps them: exact, and a quarter of the size of decimal text
            "embeddings": [base64.b64encode(array("f", map(float, e)).tobytes()).decode() for e in embeddings]
            if embeddings is not None
            else [],
        },
    }


def _backup_from_json(row: Mapping[str, Any]) -> Backup:
    vectors = dict(row["vectors"])
    vectors["embeddings"] = [array("f", base64.b64decode(e)).tolist() for e in vectors["embeddings"]]
    return Backup(ids=list(row["ids"]), items=dict(row["items"]), vectors=vectors)
