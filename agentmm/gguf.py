"""Read a GGUF file's header without loading the model.

llama.cpp answers a bad file with one generic "failed to load model"; reading the header
first lets agentmm say precisely what is wrong (not a GGUF, truncated, too large) and gives
``doctor`` the model's metadata (architecture, layers, context length, chat template) in
milliseconds. Only the header and tensor table are read: large arrays (the vocabulary) are
skipped, never materialised.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from agentmm.errors import CorruptModelError, ModelNotFoundError, NotAGGUFError
from agentmm.fileio import os_errors

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_COUNT = 1 << 24  # more tensors or keys than this is a damaged header, not a model
# llama.cpp's reader refuses arrays of arrays outright; a few levels are read here (the format
# allows them), and deeper nesting is a damaged or hostile header, not a recursion crash.
MAX_ARRAY_DEPTH = 4
ALIGNMENT_KEY = "general.alignment"

# GGUF metadata value types -> struct format (scalars only; 8 = string, 9 = array).
_SCALARS: dict[int, str] = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_UINT32 = 4

# ggml tensor types -> (elements per block, bytes per block), from ggml's type traits.
_GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18),
    21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4),
    27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
}  # fmt: skip


@dataclass(frozen=True)
class GGUFInfo:
    """What agentmm needs to know about a model file before loading it."""

    path: Path
    version: int
    file_size: int
    tensor_count: int
    metadata: dict[str, Any] = field(repr=False)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name") or self.path.stem)

    def arch_value(self, key: str) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}")

    def arch_count(self, key: str) -> int | None:
        """A size such as ``block_count``: None when absent or not a count (a damaged header may
        hold a string, a NaN or a negative number there); a per-layer array gives its largest."""
        return _count(self.arch_value(key))

    @property
    def block_count(self) -> int | None:
        return self.arch_count("block_count")

    @property
    def context_length(self) -> int | None:
        return self.arch_count("context_length")

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return str(value) if value else None

    def kv_cache_bytes(self, n_ctx: int) -> int:
        """Bytes of an f16 KV cache for ``n_ctx`` tokens (0 when the header lacks the sizes)."""
        layers = self.block_count or 0
        n_embd = self.arch_count("embedding_length") or 0
        n_head = self.arch_count("attention.head_count") or 0
        n_head_kv = self.arch_count("attention.head_count_kv") or n_head
        if not (layers and n_embd and n_head):
            return 0
        return 2 * layers * n_ctx * (n_embd // n_head) * n_head_kv * 2


_U64 = struct.Struct("<Q")


class _Reader:
    def __init__(self, stream: BinaryIO, path: Path) -> None:
        self.stream = stream
        self.path = path
        self.last_array: tuple[int, int] = (0, 0)  # (item type, length) of the last top-level array

    def take(self, size: int) -> bytes:
        data = self.stream.read(size)
        if len(data) != size:
            raise CorruptModelError(f"{self.path} is truncated: its GGUF header ends early")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def count(self, what: str) -> int:
        value = self.unpack("Q")
        if value > MAX_COUNT:
            raise CorruptModelError(f"{self.path} is damaged: its header claims {value} {what}")
        return value

    def skip_strings(self, n: int) -> None:
        """Step over ``n`` strings unread: a vocabulary's 49k tokens and merges, decoded one by
        one, took most of a header read (0.3-0.8 s of every chat start, and a start reads the
        header more than once)."""
        start = self.stream.tell()
        end = os.fstat(self.stream.fileno()).st_size
        with mmap.mmap(self.stream.fileno(), 0, access=mmap.ACCESS_READ) as view:
            at = start
            for _ in range(n):
                if at + 8 > end:
                    raise CorruptModelError(f"{self.path} is truncated: its GGUF header ends early")
                size = _U64.unpack_from(view, at)[0]
                if size > MAX_COUNT:
                    raise CorruptModelError(f"{self.path} is damaged: its header claims {size} bytes in a string")
                at += 8 + size
        if at > end:
            raise CorruptModelError(f"{self.path} is truncated: its GGUF header ends early")
        self.stream.seek(at)

    def string(self) -> str:
        return self.take(self.count("bytes in a string")).decode("utf-8", errors="replace")

    def value(self, kind: int, keep: bool = True, depth: int = 0) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise CorruptModelError(f"{self.path} is damaged: arrays nested more than {MAX_ARRAY_DEPTH} deep")
            item_kind = self.unpack("I")
            n = self.count("array items")
            if depth == 0:
                self.last_array = (item_kind, n)
            if item_kind in _SCALARS and not keep:
                self.take(struct.calcsize(_SCALARS[item_kind]) * n)
                return None
            if item_kind == _STRING and not keep:
                self.skip_strings(n)
                return None
            items = [self.value(item_kind, keep, depth + 1) for _ in range(n)]
            return items if keep else None
        raise CorruptModelError(f"{self.path} is damaged: unknown GGUF value type {kind}")


def read_gguf(path: Path) -> GGUFInfo:
    """Parse ``path``'s GGUF header and check that every tensor's data lies inside the file."""
    with os_errors(missing=lambda: ModelNotFoundError(f"model file not found: {path}"),
                   folder=lambda: NotAGGUFError(f"{path} is a directory, not a GGUF model file"),
                   other=lambda why: ModelNotFoundError(f"cannot read model file {path}: {why}")):  # fmt: skip
        stream = path.open("rb")
    with stream:
        file_size = path.stat().st_size
        reader = _Reader(stream, path)
        if stream.read(4) != GGUF_MAGIC:
            raise NotAGGUFError(f"{path} is not a GGUF model file (it does not start with 'GGUF')")
        version = reader.unpack("I")
        if version not in (2, 3):
            raise CorruptModelError(f"{path}: unsupported GGUF version {version}")
        n_tensors = reader.count("tensors")
        n_kv = reader.count("metadata keys")
        metadata: dict[str, Any] = {}
        vocab: dict[str, tuple[int, int]] = {}  # tokenizer array -> (item type, length); None: not an array
        for _ in range(n_kv):
            key = reader.string()
            kind = reader.unpack("I")
            # Keep small values; skip big arrays such as the vocabulary.
            metadata[key] = reader.value(kind, keep=not key.startswith("tokenizer.ggml."))
            if key == ALIGNMENT_KEY:
                _check_alignment(path, kind, metadata[key])
            if key in _VOCAB_ARRAYS:
                vocab[key] = reader.last_array if kind == _ARRAY else (kind, -1)
        _check_vocab(path, vocab)
        data_end = _tensor_data_end(reader, n_tensors)
        alignment = metadata.get(ALIGNMENT_KEY, DEFAULT_ALIGNMENT)
        data_start = -(-stream.tell() // alignment) * alignment
    if data_end and data_start + data_end > file_size:  # no tensor data: no padding is needed either
        raise CorruptModelError(
            f"{path} is truncated: {file_size:,} bytes, but its tensors need {data_start + data_end:,}"
        )
    return GGUFInfo(path=path, version=version, file_size=file_size, tensor_count=n_tensors, metadata=metadata)


def _check_alignment(path: Path, kind: int, value: Any) -> None:
    """The alignment must be a uint32 power of two. The llama.cpp pinned here refuses anything
    else with a generic "failed to load model" (the reason only in its log); older builds read
    it through an assertion on its type, which aborts the process. This names the key."""
    if kind != _UINT32:
        raise CorruptModelError(f"{path} is damaged: its {ALIGNMENT_KEY} is not a uint32")
    if value <= 0 or value & (value - 1):
        raise CorruptModelError(f"{path} is damaged: its {ALIGNMENT_KEY} {value} is not a power of two")


# The tokenizer arrays llama.cpp reads as raw C arrays (llama-vocab.cpp). The build pinned here
# checks their types and lengths but says only "failed to load model" (the reason goes to its
# log); older builds read them unchecked (a type assertion that aborts, a short array read past
# its end). Checked here, the error names the key.
_VOCAB_ARRAYS = {
    "tokenizer.ggml.tokens": (_STRING, "strings"),
    "tokenizer.ggml.merges": (_STRING, "strings"),
    "tokenizer.ggml.scores": (6, "float32 numbers"),
    "tokenizer.ggml.token_type": (5, "int32 numbers"),
}


def _check_vocab(path: Path, arrays: dict[str, tuple[int, int]]) -> None:
    n_tokens = arrays.get("tokenizer.ggml.tokens", (0, -1))[1]
    for key, (item_kind, n) in arrays.items():
        wanted, words = _VOCAB_ARRAYS[key]
        if n < 0 or item_kind != wanted:
            raise CorruptModelError(f"{path} is damaged: its {key} is not a list of {words}")
        if key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type") and n_tokens >= 0 and n != n_tokens:
            raise CorruptModelError(f"{path} is damaged: its {key} has {n} entries for {n_tokens} tokens")


def _count(value: Any) -> int | None:
    if isinstance(value, list):
        counts = [c for c in map(_count, value) if c is not None]
        return max(counts) if counts and len(counts) == len(value) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _tensor_data_end(reader: _Reader, n_tensors: int) -> int:
    """The end of the furthest tensor, relative to the start of the data section."""
    end = 0
    for _ in range(n_tensors):
        reader.string()
        n_dims = reader.unpack("I")
        if n_dims > 8:
            raise CorruptModelError(f"{reader.path} is damaged: a tensor with {n_dims} dimensions")
        elements = 1
        for _ in range(n_dims):
            elements *= reader.unpack("Q")
        ggml_type = reader.unpack("I")
        offset = reader.unpack("Q")
        block, block_bytes = _GGML_BLOCKS.get(ggml_type, (1, 0))
        end = max(end, offset + -(-elements // block) * block_bytes)
    return end
