"""The ONNX graph of a sentence-transformers BERT model, written from its files without torch.

Why: the first run on a machine exported the memory embedder with ``torch.onnx`` in a child
process, and that child peaked at 1.3 GB resident (``import torch`` alone is 647 MB, the model
traced on top), which made a first one-shot chat exceed its 1 GB budget. A BERT encoder is a
short, fixed sequence of operators, so this module writes that graph directly with
``onnx.helper`` from the model folder: ``config.json`` (sizes), ``model.safetensors`` (weights,
read with ``safetensors.numpy``), ``modules.json``, ``1_Pooling/config.json`` and
``sentence_bert_config.json`` (the pipeline and its sequence limit), and ``tokenizer.json``.
The graph is the one ``_onnx._pooled_module`` traces: embeddings -> encoder layers -> mean
pooling over real tokens -> L2 normalisation, with inputs named as the tokenizer names them and
two outputs, dynamic in batch and tokens: ``sentence_embedding``, and ``token_embeddings`` (the
last hidden states, for late-interaction reranking; onnxruntime computes only what is asked).

Only what is implemented here is accepted (``build`` returns ``None`` otherwise, and the torch
export runs as before): ``model_type == "bert"``, absolute position embeddings, erf GELU, a
Transformer module followed by mean Pooling and optionally Normalize, weights in
``model.safetensors``, a tokenizer in ``tokenizer.json`` that does not need lower-casing by
sentence-transformers.

No check against sentence-transformers is made when a graph is built (the torch export makes
one, ``_onnx._matches``): comparing needs torch and the model run by it, the very cost this
path avoids. The equivalence is proved instead by ``tests/memory/test_bert_onnx.py`` on the
shipped all-MiniLM-L6-v2: the same vectors as sentence-transformers to within 1e-4 for varied
texts, batched with padding and one by one, and truncated at ``max_seq_length``. What is built
is still loaded into onnxruntime and run once before it is kept (``_onnx.export_into``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17  # LayerNormalization is an operator from 17 on
IR_VERSION = 8  # the IR of opset 17, which every onnxruntime that runs opset 17 reads
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
BERT_INPUTS = ("input_ids", "token_type_ids", "attention_mask")  # BertTokenizer's model_input_names
MASKED = -1e9  # added to the scores of padding tokens: exp() of it is 0 in float32


@dataclass(frozen=True)
class Built:
    """A graph and what an ``OnnxEncoder`` needs to run it (see ``_onnx`` for the cache files)."""

    graph: bytes
    tokenizer_json: str
    meta: dict[str, Any]


def build(model_dir: Path) -> Built | None:
    """The graph of the model in ``model_dir``; ``None`` when it is not a model this module implements."""
    spec = _spec(model_dir)
    if spec is None:
        return None
    transformer_dir, config, max_seq_length = spec
    weights = _weights(transformer_dir)
    tokenizer_json = _tokenizer_json(transformer_dir, max_seq_length)
    names = _input_names(transformer_dir)
    if weights is None or tokenizer_json is None or names is None:
        return None
    graph = _graph(config, weights, names)
    meta = {"inputs": list(names), "max_seq_length": max_seq_length, "dims": int(config["hidden_size"])}
    return Built(graph, tokenizer_json, meta)


def _spec(model_dir: Path) -> tuple[Path, dict[str, Any], int] | None:
    """The transformer's folder, its config and the sequence limit, if the pipeline is one this module builds."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return None
    transformer_dir = model_dir / modules[0].get("path", "")
    try:
        config = json.loads((transformer_dir / "config.json").read_text())
        pooling = json.loads((model_dir / modules[1].get("path", "") / "config.json").read_text())
        st_config = json.loads((transformer_dir / "sentence_bert_config.json").read_text())
    except (OSError, ValueError):
        return None
    modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_")}
    others = [v for k, v in modes.items() if k != "pooling_mode_mean_tokens"]
    mean_only = (
        pooling.get("pooling_mode", "mean") == "mean"
        and modes.get("pooling_mode_mean_tokens") is True
        and not any(others)
    )
    if pooling.get("include_prompt", True) is not True:
        return None
    supported = (
        config.get("model_type") == "bert"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and config.get("hidden_act") == "gelu"
        and not config.get("is_decoder", False)
        and config.get("hidden_size", 0) % max(1, config.get("num_attention_heads", 0)) == 0
        and pooling.get("word_embedding_dimension", config.get("hidden_size")) == config.get("hidden_size")
        and not st_config.get("do_lower_case", False)
    )
    max_seq_length = st_config.get("max_seq_length")
    if not (mean_only and supported and isinstance(max_seq_length, int)):
        return None
    if not 0 < max_seq_length <= int(config.get("max_position_embeddings", 0)):
        return None
    return transformer_dir, config, max_seq_length


class _Weights:
    """The model's tensors read one at a time from ``model.safetensors`` (as float32, names
    without a ``bert.`` prefix): the graph takes each one as it is written, so the file is never
    held whole beside the graph (that doubled the build's peak memory)."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self._file = safe_open(str(path), framework="np")
        self._names = {key.removeprefix("bert."): key for key in self._file.keys()}  # noqa: SIM118  (not iterable)

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def __getitem__(self, name: str) -> np.ndarray:
        return self._file.get_tensor(self._names[name]).astype(np.float32, copy=False)


def _weights(transformer_dir: Path) -> _Weights | None:
    """The BERT weights; ``None`` without the embeddings (a layer's missing weight fails the build
    with KeyError, and the export goes to torch)."""
    path = transformer_dir / "model.safetensors"
    if not path.is_file():
        return None
    weights = _Weights(path)
    needed = [f"embeddings.{n}_embeddings.weight" for n in ("word", "position", "token_type")]
    return weights if all(name in weights for name in needed) else None


def _tokenizer_json(transformer_dir: Path, max_seq_length: int) -> str | None:
    """The fast tokenizer, truncating at ``max_seq_length`` and padding a batch to its longest text,
    as sentence-transformers calls it (tokenizer.json's own truncation and fixed padding are replaced)."""
    path = transformer_dir / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    from agentmm.memory._onnx import batch_tokenizer_json

    return batch_tokenizer_json(Tokenizer.from_file(str(path)), max_seq_length)


def _input_names(transformer_dir: Path) -> tuple[str, ...] | None:
    """The graph's inputs: the tokenizer's model_input_names (BERT's three when it names none)."""
    try:
        tokenizer_config = json.loads((transformer_dir / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        tokenizer_config = {}
    names = tuple(tokenizer_config.get("model_input_names") or BERT_INPUTS)
    if "input_ids" not in names or "attention_mask" not in names:
        return None
    return tuple(n for n in INPUTS if n in names)


class _Graph:
    """A model under construction: nodes, and initializers kept as serialised protobuf fields.

    Why serialised: a protobuf holding the 90 MB of weights, serialised at the end, peaked at
    over 600 MB (its copies, and the serialiser's buffer). Serialised protobuf messages merge
    when concatenated (repeated fields append), so the model is written as its small part (nodes,
    inputs, outputs) followed by one ``ModelProto.graph.initializer`` field per weight, and the
    weights are copied about twice instead.
    """

    GRAPH_FIELD = 7  # ModelProto.graph
    INITIALIZER_FIELD = 5  # GraphProto.initializer
    RAW_DATA_FIELD = 9  # TensorProto.raw_data

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[bytes] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import TensorProto, helper

        header = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(value.dtype), dims=value.shape)
        raw = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
        tensor = header.SerializeToString() + _field(self.RAW_DATA_FIELD, raw)
        self.initializers.append(_field(self.GRAPH_FIELD, _field(self.INITIALIZER_FIELD, tensor)))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        from onnx import helper

        self._count += 1
        output = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def linear(self, x: str, weights: _Weights, prefix: str) -> str:
        """``x @ W.T + b`` of a torch Linear (the transposed weight is stored)."""
        w = self.const(f"{prefix}.weight_t", weights[f"{prefix}.weight"].T.astype(np.float32))
        b = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"].astype(np.float32))
        return self.op("Add", self.op("MatMul", x, w), b)

    def layer_norm(self, x: str, weights: _Weights, prefix: str, eps: float) -> str:
        scale = self.const(f"{prefix}.weight", weights[f"{prefix}.weight"].astype(np.float32))
        bias = self.const(f"{prefix}.bias", weights[f"{prefix}.bias"].astype(np.float32))
        return self.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=eps)


def _graph(config: dict[str, Any], weights: _Weights, names: tuple[str, ...]) -> bytes:
    """The serialised ONNX model: BERT, then mean pooling over the mask, then L2 normalisation."""
    from onnx import TensorProto, helper

    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    g = _Graph()
    i64 = lambda name, *values: g.const(name, np.array(values, dtype=np.int64))  # noqa: E731
    f32 = lambda name, value: g.const(name, np.array(value, dtype=np.float32))  # noqa: E731

    # Embeddings: word + position (0..tokens-1) + token type (zeros when the tokenizer gives none).
    ids = "input_ids"
    word = g.op("Gather", g.const("word_embeddings", weights["embeddings.word_embeddings.weight"]), ids)
    # The first `tokens` rows of the position table (a Slice, as torch traces it: onnxruntime's
    # embedding fusion mis-handled a Range of positions here).
    tokens = g.op("Shape", ids, start=1, end=2)
    table = g.const("position_embeddings", weights["embeddings.position_embeddings.weight"])
    position = g.op("Slice", table, i64("zero", 0), tokens, i64("axis_0", 0))
    types = "token_type_ids" if "token_type_ids" in names else g.op("Mul", ids, i64("zero_id", 0))
    token_type = g.op(
        "Gather", g.const("token_type_embeddings", weights["embeddings.token_type_embeddings.weight"]), types
    )
    x = g.layer_norm(g.op("Add", g.op("Add", word, position), token_type), weights, "embeddings.LayerNorm", eps)

    # The attention bias: 0 over real tokens, MASKED over padding, shaped (batch, 1, 1, tokens).
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    bias = g.op(
        "Mul", g.op("Sub", f32("one", 1.0), g.op("Unsqueeze", mask, i64("axes_1_2", 1, 2))), f32("masked", MASKED)
    )

    split_heads = i64("split_heads", 0, 0, heads, hidden // heads)
    merge_heads = i64("merge_heads", 0, 0, hidden)
    scale = f32("scale", 1.0 / math.sqrt(hidden // heads))
    half, inv_sqrt2 = f32("half", 0.5), f32("inv_sqrt2", 1 / math.sqrt(2))  # erf GELU: 0.5 x (1 + erf(x / sqrt 2))
    for layer in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{layer}"

        def heads_of(name: str, perm: list[int], x: str = x, p: str = p) -> str:
            return g.op(
                "Transpose", g.op("Reshape", g.linear(x, weights, f"{p}.attention.self.{name}"), split_heads), perm=perm
            )

        q, k, v = heads_of("query", [0, 2, 1, 3]), heads_of("key", [0, 2, 3, 1]), heads_of("value", [0, 2, 1, 3])
        scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), bias)
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), merge_heads)
        attended = g.linear(context, weights, f"{p}.attention.output.dense")
        x = g.layer_norm(g.op("Add", attended, x), weights, f"{p}.attention.output.LayerNorm", eps)
        inner = g.linear(x, weights, f"{p}.intermediate.dense")
        gelu = g.op(
            "Mul",
            g.op("Mul", inner, half),
            g.op("Add", g.op("Erf", g.op("Mul", inner, inv_sqrt2)), "one"),
        )
        x = g.layer_norm(
            g.op("Add", g.linear(gelu, weights, f"{p}.output.dense"), x), weights, f"{p}.output.LayerNorm", eps
        )

    # Mean over real tokens (clamped like sentence-transformers), then x / max(|x|, 1e-12) like torch's normalize.
    weights_mask = g.op("Unsqueeze", mask, i64("axis_2", 2))
    axis_1 = i64("axis_1", 1)
    total = g.op("ReduceSum", g.op("Mul", x, weights_mask), axis_1, keepdims=0)
    count = g.op("Max", g.op("ReduceSum", weights_mask, axis_1, keepdims=0), f32("min_count", 1e-9))
    pooled = g.op("Div", total, count)
    norm = g.op("Sqrt", g.op("ReduceSum", g.op("Mul", pooled, pooled), axis_1, keepdims=1))
    g.nodes.append(helper.make_node("Div", [pooled, g.op("Max", norm, f32("min_norm", 1e-12))], ["sentence_embedding"]))

    g.nodes.append(helper.make_node("Identity", [x], ["token_embeddings"]))

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"]) for n in names]
    outputs = [
        helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden]),
        helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, ["batch", "tokens", hidden]),
    ]
    graph = helper.make_graph(g.nodes, "sentence_embedding", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="agentmm.bert_onnx")
    model.ir_version = IR_VERSION
    chunks, g.initializers = [model.SerializeToString(), *g.initializers], []
    return b"".join(chunks)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field: its key, the payload's length as a varint, the payload."""
    prefix = bytearray()
    for value in (number << 3 | 2, len(payload)):
        while value > 0x7F:
            prefix.append(value & 0x7F | 0x80)
            value >>= 7
        prefix.append(value)
    return bytes(prefix) + payload
