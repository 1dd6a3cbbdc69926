"""Write a tiny image projector (mmproj GGUF) with random weights, for end-to-end tests.

No VLM or projector weights ship on PyPI, so a real image cannot reach a real llama.cpp
projector in tests otherwise. This one has LLaVA's layout (projector type ``mlp``: a one-block
ViT, then a two-layer MLP into the text model's embedding width), written with the ``gguf``
package under the key and tensor names llama.cpp's clip loader reads. Its output is
meaningless, but every step is real: llama.cpp loads it against the chat model, encodes the
picture into image tokens and the model generates after them.
"""

from __future__ import annotations

from pathlib import Path


def write_tiny_mmproj(
    path: Path, n_embd_text: int, *, image_size: int = 32, patch: int = 16, hidden: int = 32, heads: int = 2,
    ff: int = 64, blocks: int = 1, seed: int = 0,
) -> Path:  # fmt: skip
    """An mmproj for a text model of width ``n_embd_text``: ``(image_size / patch)²`` image tokens."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_string("general.name", "tiny-random-mmproj")
    writer.add_string(gguf.Keys.Clip.PROJECTOR_TYPE, "mlp")
    writer.add_bool(gguf.Keys.Clip.HAS_VISION_ENCODER, True)
    writer.add_bool(gguf.Keys.Clip.HAS_LLAVA_PROJECTOR, True)
    writer.add_bool(gguf.Keys.ClipVision.USE_GELU, True)
    vision = gguf.Keys.ClipVision
    for key, value in [(vision.IMAGE_SIZE, image_size), (vision.PATCH_SIZE, patch), (vision.EMBEDDING_LENGTH, hidden),
                       (vision.FEED_FORWARD_LENGTH, ff), (vision.PROJECTION_DIM, n_embd_text),
                       (vision.BLOCK_COUNT, blocks), (vision.Attention.HEAD_COUNT, heads)]:  # fmt: skip
        writer.add_uint32(key, value)
    writer.add_float32(vision.Attention.LAYERNORM_EPS, 1e-5)
    writer.add_array(vision.IMAGE_MEAN, [0.5, 0.5, 0.5])
    writer.add_array(vision.IMAGE_STD, [0.5, 0.5, 0.5])

    def random(name: str, *shape: int) -> None:  # numpy order: ggml's ne reversed
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    def norm(name: str, n: int) -> None:
        writer.add_tensor(f"{name}.weight", np.ones(n, dtype=np.float32))
        writer.add_tensor(f"{name}.bias", np.zeros(n, dtype=np.float32))

    def linear(name: str, n_out: int, n_in: int) -> None:
        random(f"{name}.weight", n_out, n_in)
        writer.add_tensor(f"{name}.bias", np.zeros(n_out, dtype=np.float32))

    random("v.patch_embd.weight", hidden, 3, patch, patch)
    writer.add_tensor("v.patch_embd.bias", np.zeros(hidden, dtype=np.float32))
    random("v.position_embd.weight", (image_size // patch) ** 2, hidden)
    norm("v.pre_ln", hidden)
    for block in range(blocks):
        prefix = f"v.blk.{block}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            linear(f"{prefix}.{name}", hidden, hidden)
        norm(f"{prefix}.ln1", hidden)
        norm(f"{prefix}.ln2", hidden)
        linear(f"{prefix}.ffn_up", ff, hidden)
        linear(f"{prefix}.ffn_down", hidden, ff)
    linear("mm.0", n_embd_text, hidden)
    linear("mm.2", n_embd_text, n_embd_text)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
