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
)

MEMORY_DIR = "memory"

if TYPE_CHECKING:
    from agentmm.memory.chroma_store import ChromaStore
    from agentmm.memory.embeddings import SentenceTransformerEmbeddings
    from agentmm.memory.incremental import IncrementalStore, recall_path
    from agentmm.memory.retrieval import HybridHit, RecallCache, ahybrid_search, hybrid_search
    from agentmm.runtime import Runtime

_LAZY = {
    "ChromaStore": "agentmm.memory.chroma_store",
    "SentenceTransformerEmbeddings": "agentmm.memory.embeddings",
    "HybridHit": "agentmm.memory.retrieval",
    "IncrementalStore": "agentmm.memory.incremental",
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
    "RecallCache",
    "SentenceTransformerEmbeddings",
    "StoreInUseError",
    "StoreUnreachableError",
    "ahybrid_search",
    "hybrid_search",
    "recall_path",
]


def open_store(settings: Any, *, runtime: Runtime | None = None) -> ChromaStore:
    """The configured memory store: a Chroma server by URL, else embedded in the data dir,
    with the configured sentence-transformers embeddings (loaded on first use; their ONNX
    export is cached per machine in ``settings.cache_dir``).

    With ``runtime`` (an Agent's) the store and its embedder are opened there, once, and closed
    with it (the Chroma client, the data dir's lock, the loaded model); without one the caller
    owns the store and closes it."""
    from agentmm.memory.chroma_store import ChromaStore
    from agentmm.memory.embeddings import SentenceTransformerEmbeddings

    def open_() -> ChromaStore:
        index = SentenceTransformerEmbeddings.from_settings(settings, runtime=runtime).index_config()
        if settings.memory_url:
            return ChromaStore.from_url(settings.memory_url, index=index)
        return ChromaStore.from_path(settings.data_dir / MEMORY_DIR, index=index)

    if runtime is None:
        return open_()
    where = settings.memory_url or str(settings.data_dir / MEMORY_DIR)
    return runtime.get(("memory store", where), open_, close=ChromaStore.close)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
