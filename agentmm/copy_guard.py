"""Keeping a reply from copying its prompt: a sampling guard for llama.cpp (``persona_copy_limit``).

Small models playing a persona answer a question they cannot place by copying text they can see:
in ``agentmm eval persona`` five of Qwen2.5-Coder-0.5B's seven identity misses (with the introduction
example) were verbatim copies of the greeting, of a lore entry, of the user's own message or of
an earlier reply (BENCHMARKS.md), and the 135M model repeats whole earlier replies turn after
turn. This guard forbids the token that would make the reply repeat ``limit`` tokens in a row
that already stand in the prompt or earlier in the reply, as Hugging Face's
``no_repeat_ngram_size`` does, with a ``limit`` long enough that names and short phrases
("I'm Ilse Varga, the navigator") stay free; the model has to go on in words of its own.

It is a llama-cpp-python logits processor, one per reply: the prompt's n-grams are indexed on
its first call (one pass), the reply's as its tokens come.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from llama_cpp import Llama


class CopyGuard:
    """Forbids the next token of any ``limit``-token run that the reply would copy."""

    def __init__(self, llama: Llama, limit: int) -> None:
        if limit < 2:
            raise ValueError(f"a copy limit is at least 2 tokens, not {limit}")
        self.llama = llama
        self.limit = limit
        self.tokens: list[int] = []
        self.prompt_length = 0
        # The (limit - 1) tokens before each position, to the tokens that followed them there.
        self.next_of: dict[tuple[int, ...], set[int]] = {}

    def __call__(self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        # llama-cpp-python hands over its whole token buffer; what was evaluated is n_tokens of it.
        n = self.llama.n_tokens
        if not self.tokens or n != len(self.tokens) + 1:  # a call's first token: the prompt
            self.tokens, self.next_of = [], {}
            self.prompt_length = n
            self._add(input_ids[:n].tolist())
        else:
            self._add([int(input_ids[n - 1])])
        context = self.limit - 1
        if n - self.prompt_length >= context and (banned := self.next_of.get(tuple(self.tokens[-context:]))):
            scores[sorted(banned)] = -float("inf")
        return scores

    def _add(self, new: list[int]) -> None:
        """Append ``new`` tokens, indexing every run they complete."""
        context = self.limit - 1
        start = max(len(self.tokens), context)
        self.tokens.extend(new)
        tokens = self.tokens
        for i in range(start, len(tokens)):
            self.next_of.setdefault(tuple(tokens[i - context : i]), set()).add(tokens[i])
