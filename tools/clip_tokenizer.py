"""CLIP's BPE tokenizer without torch, for text search on the onnxruntime text tower.

``open_clip.get_tokenizer`` imports open_clip, and with it torch, torchvision, timm and
transformers (about 5 s of a 7-9 s ``agentmm images search "a dog"``), only to read a BPE
vocabulary and return a ``torch.LongTensor``. Where a model uses open_clip's plain
``SimpleTokenizer`` (its built-in config names no Hugging Face tokenizer, no reduction, no extra
special tokens), this is that tokenizer, step for step, over open_clip's own vocabulary file,
found without importing the package; its ids are a NumPy array. Any other model gets
open_clip's tokenizer (``None`` here).
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import itertools
import json
import string
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

_VOCAB = "bpe_simple_vocab_16e6.txt.gz"
_CONTEXT_LENGTH = 77  # open_clip's DEFAULT_CONTEXT_LENGTH
_SPECIAL = ("<start_of_text>", "<end_of_text>")


def _open_clip_dir() -> Path | None:
    """open_clip's package folder, found without importing it (that imports torch)."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def simple_tokenizer(model_name: str) -> ClipBpeTokenizer | None:
    """The tokenizer ``open_clip.get_tokenizer(model_name)`` would give, where that is a plain
    ``SimpleTokenizer`` over open_clip's vocabulary; ``None`` for any other (a hub or local-dir
    model, a Hugging Face or SigLIP tokenizer, a reduction mask, extra special tokens)."""
    package = _open_clip_dir()
    if package is None or ":" in model_name or "siglip" in model_name.lower() or "/" in model_name:
        return None
    config_file, vocab = package / "model_configs" / f"{model_name}.json", package / _VOCAB
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not vocab.is_file() or not isinstance(config, dict):
        return None
    text = config.get("text_cfg") or {}
    options = dict(text.get("tokenizer_kwargs") or {})
    clean = options.pop("clean", "lower")
    if text.get("hf_tokenizer_name") or options or clean not in ("lower", "canonicalize"):
        return None
    return ClipBpeTokenizer(vocab, int(text.get("context_length", _CONTEXT_LENGTH)), clean)


@lru_cache
def _bytes_to_unicode() -> dict[int, str]:
    """open_clip's byte -> printable character table (the BPE works on these characters)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(word))


class ClipBpeTokenizer:
    """open_clip's ``SimpleTokenizer`` (clean ``lower`` or ``canonicalize``): texts -> an
    ``int64`` array ``[len(texts), context_length]``, start and end tokens included, a text too
    long cut to the context with its last token the end token."""

    def __init__(self, vocab_file: Path, context_length: int = _CONTEXT_LENGTH, clean: str = "lower") -> None:
        import regex

        with gzip.open(vocab_file) as stream:
            merges = stream.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
        pairs = [tuple(merge.split()) for merge in merges]
        vocab = list(_bytes_to_unicode().values())
        vocab += [v + "</w>" for v in vocab]
        vocab += ["".join(pair) for pair in pairs]
        vocab += list(_SPECIAL)
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.bpe_ranks = {pair: i for i, pair in enumerate(pairs)}
        self.cache: dict[str, str] = {t: t for t in _SPECIAL}
        self.pattern = regex.compile(
            "|".join(_SPECIAL) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE
        )
        self.sot, self.eot = self.encoder[_SPECIAL[0]], self.encoder[_SPECIAL[1]]
        self.context_length = context_length
        self.clean = clean

    def _clean(self, text: str) -> str:
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        if self.clean == "canonicalize":
            text = text.replace("_", " ").translate(str.maketrans("", "", string.punctuation)).lower()
            return " ".join(text.split()).strip()
        return " ".join(text.split()).strip().lower()

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = (*token[:-1], token[-1] + "</w>")
        pairs = _pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        joined = " ".join(word)
        self.cache[token] = joined
        return joined

    def encode(self, text: str) -> list[int]:
        table = _bytes_to_unicode()
        ids: list[int] = []
        for token in self.pattern.findall(self._clean(text)):
            chars = "".join(table[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[piece] for piece in self.bpe(chars).split(" "))
        return ids

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray[Any, Any]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = context_length or self.context_length
        result = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.sot, *self.encode(text), self.eot]
            if len(tokens) > length:
                tokens = tokens[:length]
                tokens[-1] = self.eot
            result[row, : len(tokens)] = tokens
        return result
