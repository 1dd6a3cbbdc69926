"""The CLIP text tower on onnxruntime: cut to the query's length and quantised to int8.

Why: searching images by text embeds the query first, and on this 2-core CPU open_clip's
ViT-B-32 text tower took 70-100 ms per query, ten times Chroma's query at 10k images. Two
things make it fast without changing what it computes:

- CLIP's text transformer is causal and the vector is read at the end-of-text token, so the
  padding after it (77 tokens are always fed) cannot change the vector: running only up to the
  longest query in the batch gives open_clip's vector to 1e-7 (34 ms instead of 98 on torch).
- The time left is reading 150 MB of float32 weights per query; int8 weights
  (onnxruntime's dynamic quantisation) read a quarter of that: 4-7 ms per query.

The exported graph is checked against open_clip's own vectors on sample texts (cosine of at
least ``MIN_COSINE``; else the float32 graph, which must match to ``TOLERANCE``; else torch
stays in use) and kept in ``<data_dir>/embedders`` so later processes skip the export. Only
CLIP models whose text tower is the classic causal one with argmax/EOS pooling are exported
(OpenAI and LAION CLIP ViTs, ConvNeXt, ...); others (CoCa, SigLIP's bidirectional towers) use
torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agentmm.onnx_files import cpu_session, save_folder

if TYPE_CHECKING:
    from agentmm.runtime import Runtime

FORMAT = 1  # bump whenever the exported graph or files change: old exports are then ignored
GRAPH = "text.onnx"
META = "agentmm-clip-text.json"
MIN_COSINE = 0.995  # int8 graph vs open_clip, every sample (measured 0.999 on ViT-B-32)
TOLERANCE = 1e-4  # float32 graph vs open_clip, largest element difference
_SAMPLES = [
    "a photo of the beach from last summer",
    "cat",
    "two people hiking up a snowy mountain at sunrise, with a dog running ahead of them",
    " ".join(["a very long description that runs past the tokenizer's limit"] * 12),
]


@dataclass
class TextEncoder:
    """Unit text vectors from an exported CLIP text tower, fed open_clip's token ids."""

    session: Any
    quantized: bool
    pool: str  # "argmax" or "eos"
    eos_id: int | None
    graph: bytes | Path = field(repr=False)  # what it was loaded from, to save it elsewhere

    def encode(self, ids: np.ndarray) -> np.ndarray:
        """Vectors for token ids ``[texts, context_length]`` (open_clip's tokenizer output).

        Each text runs alone, over its own tokens only: int8 quantisation scales activations
        per run, so a text batched with others would get a (slightly) different vector.
        """
        ids = np.asarray(ids, dtype=np.int64)
        ends = ids.argmax(axis=1) if self.pool == "argmax" else (ids == self.eos_id).argmax(axis=1)
        rows = [self.session.run(None, {"ids": row[None, : end + 1]})[0] for row, end in zip(ids, ends, strict=True)]
        return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)


def exportable(model: Any) -> bool:
    """Whether ``model`` is an open_clip ``CLIP`` with the causal text tower this file knows."""
    import torch

    transformer = getattr(model, "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if blocks is None or getattr(model, "attn_mask", None) is None:
        return False
    if getattr(model, "text_pool_type", None) not in ("argmax", "eos"):
        return False
    if model.text_pool_type == "eos" and getattr(model, "text_eos_id", None) is None:
        return False
    for block in blocks:
        attn = getattr(block, "attn", None)
        if not isinstance(attn, torch.nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
            return False
        if not isinstance(getattr(block, "ln_attn", torch.nn.Identity()), torch.nn.Identity):
            return False
        if hasattr(block, "ln_1_kv"):
            return False
    return True


def cache_key(model_name: str, pretrained: str | None) -> str:
    """Names an export by model, weights (a local checkpoint also by its size and time) and FORMAT."""
    identity: list[Any] = [FORMAT, model_name, pretrained]
    if pretrained is not None and Path(pretrained).expanduser().is_file():
        stat = Path(pretrained).expanduser().stat()
        identity += [str(Path(pretrained).expanduser().resolve()), stat.st_size, stat.st_mtime_ns]
    digest = hashlib.blake2b(repr(identity).encode(), digest_size=8).hexdigest()
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in model_name)[:40]
    return f"clip-text-{slug}-{digest}"


def text_encoder(
    load_model: Callable[[], Any], tokenizer: Any, key: str, directory: Path | None, runtime: Runtime | None = None
) -> TextEncoder | None:
    """The exported text tower: the one ``runtime`` (default: the process runtime) already
    holds, else the one saved in ``directory / key``, else a new export of ``load_model()``
    (saved there). ``None``: stay on torch. The model is loaded only to export: a saved export
    needs no torch weights at all. One encoder per (model, weights) per runtime: every index
    of an agent shares it."""
    from agentmm.tools.shared_runtime import process_runtime

    def load() -> TextEncoder | None:
        encoder = load_cached(directory / key) if directory is not None else None
        if encoder is None:
            encoder = export(load_model(), tokenizer, directory / key if directory is not None else None)
        return encoder

    encoder: TextEncoder | None = (runtime or process_runtime()).get(("clip text encoder", key), load)
    if encoder is not None and directory is not None and not (directory / key / META).exists():
        with contextlib.suppress(OSError):  # made in another data dir of this process: save it here too
            _save(directory / key, encoder)
    return encoder


def load_cached(directory: Path) -> TextEncoder | None:
    """The encoder saved in ``directory``; ``None`` if there is none (or it is unreadable)."""
    try:
        meta = json.loads((directory / META).read_text())
        if meta.get("format") != FORMAT:
            return None
        return _encoder(directory / GRAPH, meta)
    except Exception:
        return None


def export(model: Any, tokenizer: Any, directory: Path | None) -> TextEncoder | None:
    """Export, quantise and check the text tower; keep it in ``directory`` (``None``: in memory)."""
    if not exportable(model):
        return None
    try:
        import onnx  # noqa: F401  (torch.onnx needs it to write the graph)
    except ImportError:
        return None
    try:
        graph = _export_graph(model, tokenizer)
        expected = _reference_vectors(model, tokenizer)
        ids = tokenizer(_SAMPLES).numpy()
        meta = {"format": FORMAT, "pool": model.text_pool_type, "eos_id": getattr(model, "text_eos_id", None)}
        encoder = None
        for quantized, candidate in ((True, _quantized(graph)), (False, graph)):
            trial = _encoder(candidate, {**meta, "quantized": quantized})
            if _matches(trial.encode(ids), expected, quantized):
                encoder = trial
                break
        if encoder is None:
            return None
    except Exception:
        return None
    if directory is not None:
        with contextlib.suppress(OSError):
            _save(directory, encoder)
            encoder.graph = directory / GRAPH  # the process need not hold the bytes any longer
    return encoder


def _matches(got: np.ndarray, expected: np.ndarray, quantized: bool) -> bool:
    if quantized:
        return float((got * expected).sum(axis=1).min()) >= MIN_COSINE
    return float(np.abs(got - expected).max()) <= TOLERANCE


def _reference_vectors(model: Any, tokenizer: Any) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model.encode_text(tokenizer(_SAMPLES), normalize=True).float().numpy()


def _export_graph(model: Any, tokenizer: Any) -> bytes:
    import torch

    ids = tokenizer(["a photo of a dog", "a painting of a lighthouse in a storm"])
    ids = ids[:, : int(ids.argmax(dim=1).max()) + 1]
    buffer = io.BytesIO()
    # The tracer warns about shape checks it freezes; the graph is checked against open_clip
    # on samples of other lengths and batch sizes before it is used.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _tower(model).eval(),
            (ids,),
            buffer,
            input_names=["ids"],
            output_names=["vectors"],
            dynamic_axes={"ids": {0: "batch", 1: "tokens"}, "vectors": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


def _quantized(graph: bytes) -> bytes:
    """The graph with int8 weights for its matrix products (onnxruntime dynamic quantisation)."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="agentmm-clip-") as tmp:
        source, target = Path(tmp) / "f32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(graph)
        quiet = logging.getLogger()  # it logs advice on pre-processing through the root logger
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
        finally:
            quiet.setLevel(level)
        return target.read_bytes()


def _encoder(graph: bytes | Path, meta: dict[str, Any]) -> TextEncoder:
    # One intra-op thread: a query is a few milliseconds either way, and on a busy 2-core
    # machine (an LLM generating) spinning threads made queries several times slower.
    session = cpu_session(graph if isinstance(graph, bytes) else str(graph), threads=1)
    return TextEncoder(session, bool(meta.get("quantized")), meta["pool"], meta.get("eos_id"), graph)


def _save(directory: Path, encoder: TextEncoder) -> None:
    graph = encoder.graph if isinstance(encoder.graph, bytes) else encoder.graph.read_bytes()
    meta = {"format": FORMAT, "pool": encoder.pool, "eos_id": encoder.eos_id, "quantized": encoder.quantized}
    save_folder(directory, {GRAPH: graph, META: json.dumps(meta)})


def _tower(model: Any) -> Any:
    """open_clip's text path written out, cut to the input's length (defined here so torch is
    imported only when a model is exported). Attention is spelled out because
    ``nn.MultiheadAttention`` freezes the traced sequence length into its reshapes."""
    import torch
    from torch.nn import functional

    class CausalTextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            clip = self.clip
            batch, length = ids.shape[0], ids.shape[1]
            x = clip.token_embedding(ids) + clip.positional_embedding[:length]
            mask = clip.attn_mask[:length, :length]
            for block in clip.transformer.resblocks:
                attn = block.attn
                heads, width = attn.num_heads, attn.embed_dim
                qkv = functional.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
                q, k, v = (t.reshape(batch, length, heads, width // heads).transpose(1, 2) for t in qkv.chunk(3, -1))
                weights = torch.softmax(q @ k.transpose(-1, -2) * (width // heads) ** -0.5 + mask, dim=-1)
                mixed = (weights @ v).transpose(1, 2).reshape(batch, length, width)
                x = x + block.ls_1(attn.out_proj(mixed))
                x = x + block.ls_2(block.mlp(block.ln_2(x)))
            x = clip.ln_final(x)
            ends = ids.argmax(dim=-1) if clip.text_pool_type == "argmax" else (ids == clip.text_eos_id).int().argmax(-1)
            pooled = x[torch.arange(batch), ends]
            projection = clip.text_projection
            pooled = projection(pooled) if isinstance(projection, torch.nn.Linear) else pooled @ projection
            return functional.normalize(pooled, dim=-1)

    return CausalTextTower()
