"""A text too long to be recalled whole, cut into memories recall can place.

Recall places memories in a block of at most ``memory_max_tokens``; a text over that cap was
never recalled, and one over half of it crowded out everything else. So a chat turn's message,
reply or voice note's transcript (``graphs/memory.Remember``) and a note added by hand
(``agentmm.memory.manage.add_memory``) are stored the same way: whole when they take at most half
of the cap, else in pieces of at most a quarter of it, cut between sentences.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# Below this, a cap is too small to cut a memory for (recall places next to nothing anyway).
MIN_PIECE_TOKENS = 8


def sentences(text: str) -> list[str]:
    """``text``'s sentences, cut after ``.``, ``!``, ``?`` or ``…`` and the space that follows."""
    return [s for s in re.split(r"(?<=[.!?…])\s+", text.strip()) if s]


def memory_pieces(text: str, count: Callable[[str], int], cap: int | None) -> list[str]:
    """``text`` as one memory, or, when it takes over half of recall's cap ``cap`` (tokens as
    ``count`` counts them; ``None``: no cap), as pieces of at most a quarter of it, cut between
    sentences (between words inside a longer sentence)."""
    if cap is None or cap < MIN_PIECE_TOKENS * 4 or count(text) <= cap // 2:
        return [text]
    limit = cap // 4
    pieces: list[str] = []
    current = ""
    for sentence in sentences(text):
        joined = f"{current} {sentence}".strip()
        if current and count(joined) > limit:
            pieces.append(current)
            joined = sentence
        if count(joined) > limit:  # one sentence longer than a piece: cut between words
            *whole, joined = _by_words(joined, limit, count)
            pieces += whole
        current = joined
    return [*pieces, current] if current else pieces


def _by_words(sentence: str, limit: int, count: Callable[[str], int]) -> list[str]:
    pieces, current = [], ""
    for word in sentence.split():
        joined = f"{current} {word}".strip()
        if current and count(joined) > limit:
            pieces.append(current)
            joined = word
        current = joined
    return [*pieces, current]
