"""Keeping a reply from ending before its first word: a sampling guard for llama.cpp.

After a tool's error the shipped 135M model often ends its reply at once (the end-of-turn token
first): the user heard nothing, and the thread kept an empty reply. Written again with the
same prompt it mostly does the same. This guard, used for that second try only, forbids the
tokens that end generation until the reply holds a character that is not white space, so the
model has to say something; after ``patience`` tokens of white space it lets the reply end.

It is a llama-cpp-python logits processor, one per reply (``Generation.stream(words_first=True)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from llama_cpp import Llama

    from agentmm.llama_runtime import LoadedModel

PATIENCE = 8


class WordsFirst:
    """Forbids the ``ends`` tokens until a generated token's text holds a word."""

    def __init__(self, llama: Llama, ends: Sequence[int], pieces: Sequence[bytes], patience: int = PATIENCE) -> None:
        self.llama = llama
        self.ends = sorted(ends)
        self.pieces = pieces
        self.patience = patience
        self.prompt_length: int | None = None
        self.done = False

    def __call__(self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        # llama-cpp-python hands over its whole token buffer; what was evaluated is n_tokens of it.
        n = self.llama.n_tokens
        if self.prompt_length is None:
            self.prompt_length = n
        if self.done or not self.ends:
            return scores
        made = [int(token) for token in input_ids[self.prompt_length : n]]
        if len(made) >= self.patience or any(self.pieces[token].strip() for token in made):
            self.done = True
            return scores
        scores[self.ends] = -float("inf")
        return scores


def end_tokens(loaded: LoadedModel) -> list[int]:
    """The vocabulary's end-of-generation tokens (end of text, end of turn), found once per model."""
    if loaded.end_tokens is None:
        import llama_cpp

        vocab = loaded.llama._model.vocab
        loaded.end_tokens = [i for i in range(loaded.llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    return loaded.end_tokens
