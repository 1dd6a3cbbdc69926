"""Keep a loaded model's KV cache across a side generation (the rolling summary's).

llama.cpp re-uses the KV cache of the longest common token prefix of one call and the next. The
summary is written with the chat's own ``Llama`` after the reply, and its prompt shares nothing
with the chat's but the template's first tokens: the turn after each fold re-used 4 tokens of
~850 instead of the persona head (~350), a full prefill every fold. ``cache_kept`` copies the
chat's cache out before such a call and puts it back after it.

Only sequence 0's KV cells are copied (``llama_state_seq_get_data``), not ``Llama.save_state``:
that also copies llama-cpp-python's score rows (``n_batch`` x vocabulary floats, ~100 MB for
SmolLM2's 49k vocabulary at n_batch 512, ~310 MB for Qwen's 152k), which a reply with
``logits_all`` off never reads. The KV copy is the used cells only: about 23 KB a token for
SmolLM2-135M (30 layers x 192 K/V dims x f16 x 2), ~20 MB for a full 900-token prompt, copied
out and back in a few ms; a model with 32 layers of 1024 K/V dims (8B class) holds ~128 KB a
token, ~1 GB at 8k tokens, copied twice per fold (still far less than re-reading 8k tokens).
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentmm.llama_runtime import LoadedModel

SEQ = 0  # llama-cpp-python decodes everything as sequence 0


@dataclass(frozen=True)
class SavedCache:
    """Sequence 0's KV cells and the tokens they hold."""

    data: Any  # a ctypes byte array
    size: int
    tokens: Any  # numpy array of the token ids, n_tokens long


def save_cache(llama: Any) -> SavedCache | None:
    """The cache of ``llama`` (a ``llama_cpp.Llama``), or None when it holds nothing (or the
    copy fails: a lost cache only costs a prefill)."""
    import llama_cpp

    n_tokens = int(llama.n_tokens)
    if n_tokens <= 0:
        return None
    ctx = llama._ctx.ctx
    size = int(llama_cpp.llama_state_seq_get_size(ctx, SEQ))
    if size <= 0:
        return None
    data = (ctypes.c_uint8 * size)()
    written = int(llama_cpp.llama_state_seq_get_data(ctx, data, size, SEQ))
    if written <= 0 or written > size:
        return None
    return SavedCache(data, written, llama.input_ids[:n_tokens].copy())


def restore_cache(llama: Any, saved: SavedCache) -> bool:
    """Put ``saved`` back into ``llama``: its KV cells and the token ids llama-cpp-python
    matches the next prompt against. On failure the cache is emptied (a full prefill next)."""
    import llama_cpp

    ctx = llama._ctx.ctx
    if int(llama_cpp.llama_state_seq_set_data(ctx, saved.data, saved.size, SEQ)) != saved.size:
        llama.reset()  # n_tokens 0: the next eval removes every cell from position 0 on
        return False
    n_tokens = len(saved.tokens)
    llama.input_ids[:n_tokens] = saved.tokens
    llama.n_tokens = n_tokens
    llama._requires_eval = True  # the logits are not restored: the next call decodes one token at least
    return True


@contextlib.contextmanager
def cache_kept(loaded: LoadedModel) -> Iterator[None]:
    """Run the body with ``loaded``'s cache copied out before and put back after. Each copy is
    taken under the model's lock (the body's calls take it themselves); a generation another
    thread makes in between is not kept, which costs that one only a prefill."""
    with loaded.lock:
        saved = None if loaded.closed else _or_none(save_cache, loaded.llama)
    try:
        yield
    finally:
        if saved is not None:
            with loaded.lock:
                if not loaded.closed and not _or_none(restore_cache, loaded.llama, saved):
                    loaded.llama.reset()


def _or_none(call: Any, *args: Any) -> Any:
    """``call(*args)``, or None when llama-cpp-python lacks or refuses a state call (builds older
    than the sequence-state API within our pin): keeping the cache is an optimisation, and a
    summary must not fail a turn for it."""
    try:
        return call(*args)
    except (AttributeError, OSError, ValueError, TypeError):
        return None
