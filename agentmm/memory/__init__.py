"""Long-term memory: a LangGraph store over Chroma, local embeddings, hybrid recall.

Importing this package is cheap: chromadb, LangGraph's store and sentence-transformers
load on first use of the name that needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentmm.memory.errors import (
    EmbedderError,
    EmbeddingDimsMismatchError,
    InvalidFilterError,
    MemoryStoreError,
    StoreInUseError,
    StoreUnreachableError,
    VectorExtensionError,
)

MEMORY_DIR = "memory"

if TYPE_CHECKING:
    from agentmm.memory.chroma_store import ChromaStore
    from agentmm.memory.embeddings import SentenceTransformerEmbeddings
    from agentmm.memory.incremental import IncrementalStore, recall_path
    from agentmm.memory.postgres_store import PostgresMemoryStore
    from agentmm.memory.retrieval import HybridHit, RecallCache, ahybrid_search, hybrid_search
    from agentmm.runtime import Runtime

_LAZY = {
    "ChromaStore": "agentmm.memory.chroma_store",
    "SentenceTransformerEmbeddings": "agentmm.memory.embeddings",
    "HybridHit": "agentmm.memory.retrieval",
    "IncrementalStore": "agentmm.memory.incremental",
    "PostgresMemoryStore": "agentmm.memory.postgres_store",
    "RecallCache": "agentmm.memory.retrieval",
    "recall_path": "agentmm.memory.incremental",
    "hybrid_search": "agentmm.memory.retrieval",
    "ahybrid_search": "agentmm.memory.retrieval",
}

__all__ = [
    "ChromaStore",
    "EmbedderError",
    "EmbeddingDimsMismatchError",
    "HybridHit",
    "IncrementalStore",
    "InvalidFilterError",
    "MemoryStoreError",
    "PostgresMemoryStore",
    "RecallCache",
    "SentenceTransformerEmbeddings",
    "StoreInUseError",
    "StoreUnreachableError",
    "VectorExtensionError",
    "ahybrid_search",
    "hybrid_search",
    "recall_path",
]


def open_store(settings: Any, *, runtime: Runtime | None = None) -> ChromaStore | PostgresMemoryStore:
    """The configured memory store: Postgres with pgvector by ``store_url``, a Chroma server by
    ``memory_url``, else Chroma embedded in the data dir; with the configured
    sentence-transformers embeddings (loaded on first use; their ONNX export is cached per
    machine in ``settings.cache_dir``).

    With ``runtime`` (an Agent's) the store and its embedder are opened there, once, and closed
    with it (the Chroma client and the data dir's lock, or the Postgres pool; the loaded model);
    without one the caller owns the store and closes it."""
    from agentmm.memory.embeddings import SentenceTransformerEmbeddings

    def open_() -> ChromaStore | PostgresMemoryStore:
        index = SentenceTransformerEmbeddings.from_settings(settings, runtime=runtime).index_config()
        if settings.store_url:
            try:
                from agentmm.memory.postgres_store import PostgresMemoryStore
            except ImportError as exc:  # the fleet extra (psycopg, LangGraph's Postgres store) is missing
                raise MemoryStoreError(f"long-term memory in Postgres needs the fleet extra: {exc}") from exc
            return PostgresMemoryStore.from_url(settings.store_url, index=index)
        from agentmm.memory.chroma_store import ChromaStore

        if settings.memory_url:
            return ChromaStore.from_url(settings.memory_url, index=index)
        return ChromaStore.from_path(settings.data_dir / MEMORY_DIR, index=index)

    if runtime is None:
        return open_()
    where = settings.store_url or settings.memory_url or str(settings.data_dir / MEMORY_DIR)
    return runtime.get(("memory store", where), open_, close=_close)


def _close(store: ChromaStore | PostgresMemoryStore) -> None:
    store.close()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
