"""Typed errors of the long-term memory store.

Each is an ``AgentmmError``, so the CLI prints it as one line; each names the store (a
directory or a URL) so the user knows which setting or process to look at.
"""

from __future__ import annotations

from pathlib import Path

from agentmm.errors import AgentmmError


class MemoryStoreError(AgentmmError):
    """The memory store cannot be opened, read or written."""


class StoreInUseError(MemoryStoreError):
    """Another process holds the embedded store directory.

    Two processes writing one Chroma directory corrupt it (see MODELS.md), so the second one
    is refused with the holder's PID instead; a Chroma server (``from_url``) is the way to
    share one store between processes.
    """

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"PID {pid}" if pid else "another process"
        super().__init__(
            f"memory store {path} is in use by {holder}; close it, or run a Chroma server "
            f"(chroma run --path {path}) and connect by URL"
        )


class StoreDamagedError(MemoryStoreError):
    """The embedded store's database file is not a database, or is damaged (cut short, overwritten)."""


class StoreUnreachableError(MemoryStoreError):
    """A store's server (a Chroma server URL, a Postgres ``store_url``) does not answer."""


class VectorExtensionError(MemoryStoreError):
    """A Postgres memory store's database lacks pgvector and it cannot be created there."""


class EmbeddingDimsMismatchError(MemoryStoreError):
    """The store's vectors were made by a model of another width than the configured one."""


class InvalidFilterError(MemoryStoreError, ValueError):
    """A search filter uses an unknown operator or compares a range with a non-number."""


class EmbedderError(MemoryStoreError):
    """The embedding model cannot be found or loaded."""


class StoreWithoutIndexWarning(UserWarning):
    """A LangGraph store given for long-term memory has no vector index: recall keeps a memory
    only when its embedding is near the message, so with none it never recalls anything. A
    warning, not an error: such a store still serves tools that read and write it."""
