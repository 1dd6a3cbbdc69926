"""Fixtures for the memory tests: a fast deterministic embedder and fresh stores."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from langchain_core.embeddings import Embeddings

from agentmm.memory.chroma_store import ChromaStore


class CharacterEmbeddings(Embeddings):
    """Character-frequency vectors through fixed random projections (after LangGraph's test embedder).

    Each character's projection comes from a hash of the character, so a text embeds the same
    in every process and test order.
    """

    def __init__(self, dims: int = 64) -> None:
        self.dims = dims
        self._projections: dict[str, list[float]] = {}

    def _projection(self, char: str) -> list[float]:
        if char not in self._projections:
            digest = hashlib.shake_256(char.encode()).digest(self.dims * 4)
            raw = [int.from_bytes(digest[i * 4 : i * 4 + 4], "little") / 2**32 - 0.5 for i in range(self.dims)]
            self._projections[char] = raw
        return self._projections[char]

    def _embed(self, text: str) -> list[float]:
        counts = Counter(text)
        total = sum(counts.values())
        if total == 0:
            return [1.0] + [0.0] * (self.dims - 1)
        vector = [0.0] * self.dims
        for char, count in counts.items():
            for i, p in enumerate(self._projection(char)):
                vector[i] += count / total * p
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        return [x / norm for x in vector]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._embed(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._embed(text)


@pytest.fixture
def fake_embeddings() -> CharacterEmbeddings:
    return CharacterEmbeddings(dims=64)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChromaStore]:
    """A store without an index (key-value and filters only)."""
    with ChromaStore.from_path(tmp_path / "store") as s:
        yield s


@pytest.fixture
def vector_store(tmp_path: Path, fake_embeddings: CharacterEmbeddings) -> Iterator[ChromaStore]:
    """A store that embeds the ``text`` field of each value."""
    index = {"dims": fake_embeddings.dims, "embed": fake_embeddings, "fields": ["text"]}
    with ChromaStore.from_path(tmp_path / "vstore", index=index) as s:
        yield s


def _make_vector_store(path: Path, embeddings: CharacterEmbeddings, fields: list[str] | None) -> ChromaStore:
    return ChromaStore.from_path(path, index={"dims": embeddings.dims, "embed": embeddings, "fields": fields})


@pytest.fixture
def make_vector_store() -> Callable[[Path, CharacterEmbeddings, list[str] | None], ChromaStore]:
    """Opens a store with a given embedder and indexed fields (``None``: the whole value)."""
    return _make_vector_store


@pytest.fixture
def embeddings_cls() -> type[CharacterEmbeddings]:
    """The fake embedder's class, for tests that subclass it."""
    return CharacterEmbeddings
