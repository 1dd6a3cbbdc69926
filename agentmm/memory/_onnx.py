"""A sentence-transformers model run by onnxruntime: the same vectors, in less time.

Why: on this 2-core CPU, embedding one recall query with sentence-transformers on torch took
12-16 ms; the same graph on onnxruntime 5-7 ms, which is most of recall's budget. A process
that finds the exported graph in its cache also never imports torch or sentence-transformers
(several seconds). sentence-transformers' own ``backend="onnx"`` needs optimum-onnx, whose
releases pin ``transformers<4.58`` (agentmm runs 5.x), so the graph is made here, once per
model: written from the model's files without torch where ``bert_onnx`` implements the model
(the default does), else exported with ``torch.onnx``; either way run with onnxruntime
(installed with chromadb).

Only models that are a transformer followed by mean pooling (and optionally L2 normalising),
like all-MiniLM-L6-v2, are exported; the exported graph must reproduce sentence-transformers'
vectors on sample texts (long ones included, for truncation) or it is not used.

Run as ``python -m agentmm.memory._onnx MODEL_DIR EXPORT_DIR``, this module exports a model into
a cache folder in a process of its own (``SentenceTransformerEmbeddings`` starts it), so that
torch is imported there and not in the chat's process. A BERT model like the default one is not
traced at all: ``bert_onnx`` writes its graph from the model's files without torch (the torch
export peaked at 1.3 GB resident, this at a fraction of that), and only a model it does not
implement goes to ``torch.onnx``; the folder's meta says which ``builder`` made it.
Processes exporting the same model at once take turns on a lock file beside the folder; the
one that comes second finds the export done. The folder is written whole and renamed into
place (``save_folder``), so a reader sees a whole export or none. Exit status: 0 exported (or
already there), ``NOT_EXPORTABLE`` the model cannot run on onnxruntime (recorded in the folder,
so later processes go to torch without trying again), anything else an error (said on stderr).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentmm.onnx_files import cpu_session, save_folder

FORMAT = 2  # bump whenever what is exported (graph, files) changes: old caches are then ignored
GRAPH = "model.onnx"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TOKENIZER = "tokenizer.json"
META = "agentmm-embedder.json"
SENTENCE = "sentence_embedding"
TOKENS = "token_embeddings"  # the last hidden states, for late-interaction reranking
# The exported graph must give sentence-transformers' vectors to within float rounding.
TOLERANCE = 1e-4
NOT_EXPORTABLE = 3  # the child's exit status for a model that cannot run on onnxruntime
_SAMPLES = [
    "hello",
    "[08 May 2023] Caroline: I went to the LGBTQ support group yesterday.\n(in reply to: Melanie: How are you?)",
    "What did Mira's sister study in Lisbon?",
    " ".join(["a long message that runs past the model's input limit"] * 60),
]


@dataclass
class OnnxEncoder:
    """Mean-pooled, L2-normalised sentence vectors from an exported transformer.

    One session with one intra-op thread: a single query is fastest that way, and on a
    busy 2-core machine (an LLM generating) more threads made queries several times slower.
    Batches of texts are split across ``workers`` concurrent runs of that session instead.
    """

    session: Any
    tokenizer: Any
    input_names: tuple[str, ...]
    dims: int
    workers: int = 1

    def __post_init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Vectors of ``texts`` in order; texts are batched by length so little is padding."""
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        # At least one batch per worker: a turn's two messages are embedded side by side.
        size = max(1, min(batch_size, -(-len(texts) // self.workers)))
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        out = np.empty((len(texts), self.dims), dtype=np.float32)
        pool = self._executor() if len(batches) > 1 else None
        inputs = ([texts[i] for i in batch] for batch in batches)
        results = pool.map(self._run, inputs) if pool is not None else map(self._run, inputs)
        for batch, vectors in zip(batches, results, strict=True):
            out[batch] = vectors
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        return self.session.run([SENTENCE], self._feed(self.tokenizer.encode_batch(texts)))[0]

    def _feed(self, encodings: Sequence[Any]) -> dict[str, np.ndarray]:
        feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}  # fmt: skip
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        return feed

    def token_vectors(self, texts: Sequence[str], batch_size: int = 64) -> list[np.ndarray]:
        """Each text's token vectors (``[CLS]``/``[SEP]`` and padding left out), each row of unit
        length: what late interaction compares (``agentmm.memory.rerank``)."""
        out: list[np.ndarray] = []
        for start in range(0, len(texts), batch_size):
            encodings = self.tokenizer.encode_batch(list(texts[start : start + batch_size]))
            feed = self._feed(encodings)
            hidden = self.session.run([TOKENS], feed)[0]
            for rows, mask in zip(hidden, feed["attention_mask"].astype(bool), strict=True):
                out.append(unit_rows(rows[mask]))
        return out

    def close(self) -> None:
        """Stop the worker threads (the session is freed with this object)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _executor(self) -> ThreadPoolExecutor | None:
        if self.workers <= 1:
            return None
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="agentmm-embed")
            return self._pool


def unit_rows(hidden: np.ndarray) -> np.ndarray:
    """A text's token vectors without its first and last ([CLS], [SEP]), rows scaled to unit length."""
    rows = hidden[1:-1] if len(hidden) > 2 else hidden
    return (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def exportable(model: Any) -> bool:
    """Whether the sentence-transformers model is a transformer + mean pooling (+ normalize)."""
    modules = list(model)
    names = [type(m).__name__ for m in modules]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return False
    transformer, pooling = modules[0], modules[1]
    config = pooling.get_config_dict() if hasattr(pooling, "get_config_dict") else {}
    mean = config.get("pooling_mode") == "mean" or config.get("pooling_mode_mean_tokens") is True
    return (
        mean
        and hasattr(transformer, "auto_model")
        and hasattr(getattr(model, "tokenizer", None), "backend_tokenizer")
        and not getattr(transformer, "do_lower_case", False)
    )


def cache_key(model_dir: Path) -> str:
    """Names an export by the model's files (path, sizes, times) and FORMAT."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(repr((str(model_dir.resolve()), FORMAT)).encode())
    for path in sorted(model_dir.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(repr((str(path.relative_to(model_dir)), stat.st_size, stat.st_mtime_ns)).encode())
    return f"{model_dir.name}-{digest.hexdigest()}"


def load_cached(directory: Path, threads: int = 1) -> OnnxEncoder | None:
    """An encoder from an earlier export in ``directory``; ``None`` if there is none (or it is unreadable)."""
    try:
        meta = json.loads((directory / META).read_text())
        if meta.get("format") != FORMAT:
            return None
        return _encoder(str(directory / GRAPH), (directory / TOKENIZER).read_text(), meta, threads)
    except Exception:
        return None


def unusable(directory: Path) -> bool:
    """Whether an earlier export found that this model cannot run on onnxruntime."""
    try:
        meta = json.loads((directory / META).read_text())
    except (OSError, ValueError):
        return False
    return bool(meta.get("format") == FORMAT and meta.get("unusable"))


def export(model: Any, directory: Path | None, threads: int = 1) -> OnnxEncoder | None:
    """Export a loaded sentence-transformers model, check it, and keep it in ``directory``
    (``None``: in memory only). ``None`` when the model cannot be exported or does not match."""
    if not exportable(model):
        return None
    try:
        import onnx  # noqa: F401  (torch.onnx needs it to write the graph)
    except ImportError:
        return None
    try:
        graph, meta = _export_graph(model)
        tokenizer = _tokenizer_json(model)
        encoder = _encoder(graph, tokenizer, meta, threads)
        if not _matches(encoder, model):
            return None
    except Exception:
        return None
    if directory is not None:
        with contextlib.suppress(OSError):
            _save(directory, graph, tokenizer, meta)
    return encoder


def export_into(model_dir: Path, directory: Path) -> int:
    """The child's work: export the model at ``model_dir`` into ``directory`` unless another
    process did while this one waited for the lock. Returns the exit status (module docstring)."""
    from filelock import FileLock

    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory.parent / f".{directory.name}.lock")):
        if unusable(directory):
            return NOT_EXPORTABLE
        if load_cached(directory) is not None:
            return 0
        if _build_without_torch(model_dir, directory):
            return 0
        from agentmm.memory.embeddings import load_sentence_transformer

        model = load_sentence_transformer(str(model_dir), "cpu", local=True)
        if export(model, directory) is not None:
            return 0
        if exportable(model):  # onnx missing, or an export that did not match: try again next time
            print(f"{model_dir.name} could not be exported for onnxruntime", file=sys.stderr)
            return NOT_EXPORTABLE
        save_folder(directory, {META: json.dumps({"format": FORMAT, "unusable": True})})
        return NOT_EXPORTABLE


def _build_without_torch(model_dir: Path, directory: Path) -> bool:
    """Write the graph with ``bert_onnx`` (no torch) and keep it, if the model is one it builds.
    What it builds must load into onnxruntime and give finite unit vectors; its equivalence with
    sentence-transformers is proved by the tests (``bert_onnx``'s docstring says why not here).
    ``False`` sends the export to torch."""
    from agentmm.memory import bert_onnx

    try:
        built = bert_onnx.build(model_dir)
        if built is None:
            return False
        meta = {"format": FORMAT, **built.meta, "builder": "bert_onnx"}
        vectors = _encoder(built.graph, built.tokenizer_json, meta, 1).encode(_SAMPLES)
    except Exception as exc:  # a model that looked like BERT but is not quite: torch exports it instead
        print(
            f"{model_dir.name}: built without torch failed ({type(exc).__name__}), exporting with torch",
            file=sys.stderr,
        )
        return False
    if not (np.isfinite(vectors).all() and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)):
        return False
    _save(directory, built.graph, built.tokenizer_json, meta)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m agentmm.memory._onnx MODEL_DIR EXPORT_DIR", file=sys.stderr)
        return 2
    try:
        return export_into(Path(args[0]), Path(args[1]))
    except Exception as exc:  # one line for the parent, which reports it or falls back to torch
        print(f"{type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1


def _matches(encoder: OnnxEncoder, model: Any) -> bool:
    """The export gives sentence-transformers' vectors, in a padded batch and one by one."""
    expected = model.encode(_SAMPLES, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    alone = np.concatenate([encoder.encode([text]) for text in _SAMPLES])
    return max(float(np.abs(got - expected).max()) for got in (encoder.encode(_SAMPLES), alone)) <= TOLERANCE


def _export_graph(model: Any) -> tuple[bytes, dict[str, Any]]:
    import io

    import torch

    transformer = model[0]
    names = tuple(n for n in model.tokenizer.model_input_names if n in INPUTS)
    wrapper = _pooled_module(transformer.auto_model, names).eval()
    sample = model.tokenizer(["hello world", "a second, longer sentence"], padding=True, return_tensors="pt")
    args = tuple(sample[n] for n in names)
    buffer = io.BytesIO()
    # The tracer warns about shape checks it freezes; they hold for every input the graph gets
    # (the mask always given, as long as the ids), and _matches checks the result anyway.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            args,
            buffer,
            input_names=list(names),
            output_names=[SENTENCE, TOKENS],
            dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in [*names, TOKENS]}, SENTENCE: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    dims = int(model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else 0) or None
    meta = {
        "format": FORMAT,
        "inputs": list(names),
        "max_seq_length": int(model.max_seq_length),
        "dims": dims,
        "builder": "torch.onnx",
    }
    return buffer.getvalue(), meta


def _tokenizer_json(model: Any) -> str:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
    return batch_tokenizer_json(tokenizer, int(model.max_seq_length))


def batch_tokenizer_json(tokenizer: Any, max_seq_length: int) -> str:
    """``tokenizer`` (a ``tokenizers.Tokenizer``) as sentence-transformers calls it, saved: it
    truncates at ``max_seq_length`` and pads a batch to its longest text (whatever truncation
    and fixed padding its file had are replaced; the pad token is the file's, else ``[PAD]``)."""
    pad_token = tokenizer.padding["pad_token"] if tokenizer.padding else "[PAD]"
    pad_id = tokenizer.padding["pad_id"] if tokenizer.padding else tokenizer.token_to_id(pad_token)
    tokenizer.enable_truncation(max_seq_length)
    tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad_token)
    return tokenizer.to_str()


def _encoder(graph: bytes | str, tokenizer_json: str, meta: dict[str, Any], threads: int) -> OnnxEncoder:
    from tokenizers import Tokenizer

    session = cpu_session(graph, threads=1)
    tokenizer = Tokenizer.from_str(tokenizer_json)
    dims = meta.get("dims") or int(next(o for o in session.get_outputs() if o.name == SENTENCE).shape[-1])
    return OnnxEncoder(session, tokenizer, tuple(meta["inputs"]), int(dims), workers=max(1, threads))


def _save(directory: Path, graph: bytes, tokenizer_json: str, meta: dict[str, Any]) -> None:
    save_folder(directory, {GRAPH: graph, TOKENIZER: tokenizer_json, META: json.dumps(meta)})


def _pooled_module(transformer: Any, names: tuple[str, ...]) -> Any:
    """The transformer, mean pooling over real tokens and L2 normalisation, as one module
    (defined here so torch is imported only when a model is exported)."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs: Any) -> Any:
            kwargs = dict(zip(names, inputs, strict=True))
            hidden = self.transformer(**kwargs).last_hidden_state
            mask = kwargs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1), hidden

    return Pooled()


if __name__ == "__main__":
    sys.exit(main())
