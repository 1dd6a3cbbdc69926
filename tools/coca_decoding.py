"""Greedy CoCa captions, each token computed once.

Why: open_clip's CoCa forward, called once per generated token, runs the text tower and the
decoder over every token so far, recomputes the cross-attention keys and values of all 255
image tokens in each of the decoder's 12 layers, and projects every position onto the 49k-word
vocabulary, though only the last is used: the cost of a caption grows with the square of its
length. Here each new token runs once through both towers with the keys and values of the
tokens before it cached (both are causal, so earlier positions never change), the image's keys
and values are projected once per caption, and only the last position is projected onto the
vocabulary. The logits match open_clip's forward to float rounding
(``tests/tools/test_caption.py``); ``BENCHMARKS.md`` has the speed.

A model without the layout this relies on (batch-first, causal blocks over
``nn.MultiheadAttention`` with one packed input projection) runs open_clip's own forward, so
another open_clip release only makes captions slower, never wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentmm.tools.cpu_share import follow_torch_share

if TYPE_CHECKING:
    import torch

START_OF_TEXT, END_OF_TEXT = 49406, 49407  # open_clip's tokenizer


@dataclass
class _Cache:
    """One self-attention layer's keys and values so far, (batch, heads, tokens, head width)."""

    k: Any = None
    v: Any = None


@dataclass
class CocaDecoder:
    """CoCa's next-token logits for one batch of encoded images, fed a token at a time."""

    model: Any
    image_embs: Any
    length: int = 0  # tokens fed so far
    _text: list[_Cache] = field(default_factory=list)
    _decoder: list[_Cache] = field(default_factory=list)
    _image_kv: list[tuple[Any, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        text, decoder = self.model.text, self.model.text_decoder
        self._text = [_Cache() for _ in text.transformer.resblocks]
        self._decoder = [_Cache() for _ in decoder.resblocks]
        self._image_kv = [_image_kv(block, self.image_embs) for block in decoder.cross_attn]

    @staticmethod
    def supports(model: Any) -> bool:
        """Whether the model has the layout this class computes with."""
        text, decoder = getattr(model, "text", None), getattr(model, "text_decoder", None)
        transformer = getattr(text, "transformer", None)
        if transformer is None or decoder is None or getattr(text, "attn_mask", None) is None:
            return False  # the text tower must be causal for its cache to hold
        if not (getattr(transformer, "batch_first", False) and getattr(decoder, "batch_first", False)):
            return False
        crossing = getattr(decoder, "cross_attn", [])
        blocks = [*transformer.resblocks, *decoder.resblocks, *crossing]
        return (
            bool(crossing)
            and all(hasattr(block, "ln_1_kv") for block in crossing)
            and all(_plain_attention(block) for block in blocks)
        )

    def next_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (batch, vocabulary) of the token after ``tokens``, which extend the tokens of
        the previous call; only the new ones are computed."""
        import torch

        text, decoder = self.model.text, self.model.text_decoder
        new = tokens[:, self.length :]
        start, end = self.length, tokens.shape[1]
        x = text.token_embedding(new).to(text.transformer.get_cast_dtype())
        x = x + text.positional_embedding[start:end].to(x.dtype)
        causal = torch.ones(end - start, end, dtype=torch.bool, device=x.device).tril(start)
        text_mask = causal & _valid_keys(text, tokens)[:, None, None, :]  # (batch, 1, new, all)
        for block, cache in zip(text.transformer.resblocks, self._text, strict=True):
            x = _self_attention_block(block, x, cache, text_mask)
        for block, cache, cross, (k, v) in zip(decoder.resblocks, self._decoder, decoder.cross_attn,
                                               self._image_kv, strict=True):  # fmt: skip
            x = _self_attention_block(block, x, cache, causal)
            x = x + cross.ls_1(_attend(cross.attn, cross.ln_1(x), k, v, None))
            x = x + cross.ls_2(cross.mlp(cross.ln_2(x)))
        self.length = end
        out = decoder.ln_final(x[:, -1])
        return out @ decoder.text_projection if decoder.text_projection is not None else out


def _plain_attention(block: Any) -> bool:
    import torch

    attn = getattr(block, "attn", None)
    return (
        isinstance(attn, torch.nn.MultiheadAttention)
        and attn.batch_first
        and attn._qkv_same_embed_dim
        and attn.in_proj_weight is not None
        and all(hasattr(block, name) for name in ("ln_1", "ln_2", "ls_1", "ls_2", "mlp"))
    )


def _valid_keys(text: Any, tokens: torch.Tensor) -> torch.Tensor:
    """Which token positions may be attended to in the text tower (batch, tokens), as
    open_clip's padding mask has it: padding ids are masked where it masks them, including the
    one-position shift of its legacy CoCa mode (``correct_cls_mask`` off)."""
    import torch

    valid = torch.ones_like(tokens, dtype=torch.bool)
    if not (getattr(text, "use_pad_mask", False) or text.cls_emb is not None):
        return valid
    valid = tokens != text.pad_id
    if text.cls_emb is not None and not getattr(text, "correct_cls_mask", False):
        valid = torch.cat([torch.ones_like(valid[:, :1]), valid[:, :-1]], dim=1)
    return valid


def _split(attn: Any, x: torch.Tensor, part: slice) -> torch.Tensor:
    """One of the packed input projections (q, k or v) of ``x``, split into heads."""
    import torch.nn.functional as F

    bias = attn.in_proj_bias
    projected = F.linear(x, attn.in_proj_weight[part], None if bias is None else bias[part])
    batch, length, width = projected.shape
    return projected.view(batch, length, attn.num_heads, width // attn.num_heads).transpose(1, 2)


def _attend(attn: Any, q_x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Any) -> torch.Tensor:
    """``attn`` (an ``nn.MultiheadAttention``) of ``q_x`` over keys and values already projected."""
    import torch.nn.functional as F

    width = attn.embed_dim
    q = _split(attn, q_x, slice(0, width))
    mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    batch, _, length, _ = mixed.shape
    return attn.out_proj(mixed.transpose(1, 2).reshape(batch, length, width))


def _self_attention_block(block: Any, x: torch.Tensor, cache: _Cache, mask: torch.Tensor) -> torch.Tensor:
    """open_clip's ``ResidualAttentionBlock`` on the new positions ``x``, with the keys and
    values of the earlier ones from ``cache`` (which gains the new ones)."""
    import torch

    width = block.attn.embed_dim
    h = block.ln_1(x)
    k, v = _split(block.attn, h, slice(width, 2 * width)), _split(block.attn, h, slice(2 * width, 3 * width))
    if cache.k is not None:
        k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
    cache.k, cache.v = k, v
    x = x + block.ls_1(_attend(block.attn, h, k, v, mask))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def _image_kv(block: Any, image_embs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One cross-attention layer's keys and values of the image tokens, split into heads."""
    width = block.attn.embed_dim
    normed = block.ln_1_kv(image_embs)
    return _split(block.attn, normed, slice(width, 2 * width)), _split(block.attn, normed, slice(2 * width, 3 * width))


def greedy_caption_tokens(model: Any, pixels: torch.Tensor, *, max_tokens: int, min_tokens: int) -> torch.Tensor:
    """Token ids (start token first) of each image's caption, one most-likely token at a time.

    The image is encoded once; each step computes only the newest token (``CocaDecoder``).
    Finished rows are padded with the end token, which decoding cuts at.
    """
    import torch

    with torch.inference_mode():
        encoded = model(pixels)
        latent, embeddings = encoded["image_features"], encoded["image_embs"]
        fast = CocaDecoder(model, embeddings) if CocaDecoder.supports(model) else None
        tokens = torch.full((pixels.shape[0], 1), START_OF_TEXT, dtype=torch.long, device=pixels.device)
        done = torch.zeros(pixels.shape[0], dtype=torch.bool, device=pixels.device)
        for step in range(max_tokens):
            follow_torch_share()  # perceived beside a voice note: take up its cores once it is done
            if fast is not None:
                logits = fast.next_logits(tokens)
            else:
                logits = model(pixels, tokens, image_latent=latent, image_embs=embeddings, output_labels=False)
                logits = logits["logits"][:, -1]
            if step < min_tokens:
                logits[:, END_OF_TEXT] = float("-inf")
            chosen = logits.argmax(dim=-1).masked_fill(done, END_OF_TEXT)
            tokens = torch.cat([tokens, chosen[:, None]], dim=1)
            done |= chosen == END_OF_TEXT
            if bool(done.all()):
                break
    return tokens
