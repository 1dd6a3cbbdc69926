"""``IncrementalStore``: what a LangGraph store offers so hybrid recall need not re-read it.

Hybrid recall (``agentmm.memory.retrieval``) keeps each scope's texts and their BM25 index in
a cache. Over a store that reports every write made to it (a ``revision`` token and the items
``changed_since`` one) and answers dense search with record ids (``nearest_items``, mapped onto
the cached items by ``record_id``), a turn re-reads only the items written since the last one.
Any other ``BaseStore`` (LangGraph's ``InMemoryStore``, the dev server's store, LangGraph's plain
``PostgresStore``) works too, but each turn then reads the whole scope again (up to ``max_corpus`` items): the *full
read* path, measured in BENCHMARKS.md ("Recall without an incremental store"), said in the
trace (``recall_path``) and logged once per store.

Two implementations here: the embedded ``ChromaStore`` (its process's write journal) and
``PostgresMemoryStore`` (``store_url``: a change log filled by a trigger, read by snapshot, so
exact with any number of worker processes). A Chroma server store has no journal of its own
(others write to it), so its ``revision`` is ``None`` and it takes the full read path.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from agentmm.memory._journal import ItemRef

INCREMENTAL = "incremental"
FULL_READ = "full read"


@runtime_checkable
class IncrementalStore(Protocol):
    """A store whose writes a cache can follow exactly (see the module docstring)."""

    @property
    def revision(self) -> Any | None:
        """A token of the store's state now; ``None`` when this store cannot tell (then it is
        read in full, as any other store)."""
        ...

    def changed_since(self, revision: Any) -> set[ItemRef] | None:
        """The items written (put or deleted) since ``revision``; ``None`` if unknown."""
        ...

    def record_id(self, namespace: tuple[str, ...], key: str) -> str:
        """The id ``nearest_items`` gives the item ``(namespace, key)``."""
        ...

    def nearest_items(
        self, query: str, n: int, namespace: tuple[str, ...] | None = None
    ) -> tuple[list[tuple[str, float]], bool]:
        """Record ids of the ``n`` items nearest to ``query`` (under ``namespace`` if given),
        best first with their cosine similarity, and whether that was every candidate."""
        ...


def recall_path(store: Any) -> str:
    """Which path hybrid recall takes over ``store``: ``"incremental"`` or ``"full read"``."""
    return INCREMENTAL if isinstance(store, IncrementalStore) and store.revision is not None else FULL_READ
