"""What a chunk of a long write batch is about to overwrite, so a batch that fails part way
can be taken back.

A write batch with many texts is embedded and written chunk by chunk (``ChromaStore``'s
pipelined path); the store's promise that a failed batch leaves it as it was then needs the
chunks already written undone. Before each chunk is written, the item rows and vectors it will
replace are read here (nothing for keys that are new, so a fresh import reads only the ids),
and :func:`restore` puts them back over whatever the chunk wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentmm.memory import _records as rec

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
    restore never leaves a row whose vectors are missing.
    """
    vectors.delete(where={rec.ITEM: {"$in": saved.ids}})
    old_vectors = saved.vectors.get("ids") or []
    if old_vectors:
        vectors.upsert(ids=old_vectors, embeddings=saved.vectors["embeddings"], metadatas=saved.vectors["metadatas"])
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
