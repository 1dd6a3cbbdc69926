"""A text too long to be recalled whole, cut into memories recall can place.

Recall places memories in a block of at most ``memory_max_tokens``; a text over that cap was
never recalled, and one over half of it crowded out everything else. So a chat turn's message,
reply or voice note's transcript (``graphs/memory.Remember``) and a note added by hand
(``agentmm.memory.manage.add_memory``) are stored the same way: whole when they take at most half
of the cap, else in pieces of at most a quarter of it, cut between sentences, then between words,
then (a run with no space in it, as Chinese or Japanese is written) between characters.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

# Below this, a cap is too small to cut a memory for (recall places next to nothing anyway).
MIN_PIECE_TOKENS = 8

# Sentence ends written with no space after them: the ideographic full stop (and its half-width
# form) and the full-width exclamation and question marks.
_CJK_ENDS = "。｡！？"
_SENTENCE_END = re.compile(rf"(?<=[.!?…])\s+|(?<=[{_CJK_ENDS}])\s*")
_ZERO_WIDTH_JOINER = "\u200d"


def sentences(text: str) -> list[str]:
    """``text``'s sentences, cut after ``.``, ``!``, ``?`` or ``…`` and the space that follows,
    and after ``。``, ``！`` or ``？`` with or without one."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def memory_pieces(text: str, count: Callable[[str], int], cap: int | None) -> list[str]:
    """``text`` as one memory, or, when it takes over half of recall's cap ``cap`` (tokens as
    ``count`` counts them; ``None``: no cap), as pieces of at most a quarter of it, cut between
    sentences (between words inside a longer sentence, between characters inside a longer word)."""
    if cap is None or cap < MIN_PIECE_TOKENS * 4 or count(text) <= cap // 2:
        return [text]
    limit = cap // 4

    def by_characters(word: str) -> list[str]:
        return _by_characters(word, limit, count)

    def by_words(sentence: str) -> list[str]:  # one sentence longer than a piece
        return _packed(sentence.split(), _spaced, limit, count, by_characters)

    return _packed(sentences(text), _join, limit, count, by_words)


def _packed(
    units: list[str],
    join: Callable[[str, str], str],
    limit: int,
    count: Callable[[str], int],
    smaller: Callable[[str], list[str]],
) -> list[str]:
    """``units`` (sentences, or a sentence's words) joined into pieces of at most ``limit``
    tokens, each as many whole units as fit; a unit longer than a piece is cut by ``smaller``
    (into words, or characters), its last part left to start the next piece."""
    pieces: list[str] = []
    current = ""
    for unit in units:
        joined = join(current, unit)
        if current and count(joined) > limit:
            pieces.append(current)
            joined = unit
        if count(joined) > limit:
            *whole, joined = smaller(joined)
            pieces += whole
        current = joined
    return [*pieces, current] if current else pieces


def _join(left: str, right: str) -> str:
    """Two sentences as the text had them: no space after a CJK sentence end."""
    if not left:
        return right
    return f"{left}{right}" if left[-1] in _CJK_ENDS else f"{left} {right}"


def _spaced(left: str, right: str) -> str:
    """Two words of a sentence, a space between them."""
    return f"{left} {right}".strip()


def _by_characters(word: str, limit: int, count: Callable[[str], int]) -> list[str]:
    """``word`` in runs of at most ``limit`` tokens (at least one character each), never cut
    between a character and the marks that combine with it. Each run is the longest that fits:
    found by doubling then bisecting, so a long run costs few counts of short texts."""
    marks = _clusters(word)
    pieces: list[str] = []
    start = 0
    while start < len(marks):
        fits, over = 1, 2  # prefix lengths (in clusters): ``fits`` fits (or is one), ``over`` may not
        while start + over <= len(marks) and count("".join(marks[start : start + over])) <= limit:
            fits, over = over, over * 2
        over = min(over, len(marks) - start + 1)
        while over - fits > 1:
            middle = (fits + over) // 2
            if count("".join(marks[start : start + middle])) <= limit:
                fits = middle
            else:
                over = middle
        pieces.append("".join(marks[start : start + fits]))
        start += fits
    return pieces


def _clusters(word: str) -> list[str]:
    """``word``'s characters, each with the combining marks, variation selectors and
    zero-width-joined characters that follow it (a cut between them would garble both pieces)."""
    clusters: list[str] = []
    for char in word:
        joins = clusters and (
            unicodedata.category(char) in ("Mn", "Mc", "Me")
            or char == _ZERO_WIDTH_JOINER
            or clusters[-1].endswith(_ZERO_WIDTH_JOINER)
        )
        if joins:
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters
