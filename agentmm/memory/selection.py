"""Which recalled memories enter the prompt: those relevant enough, within two token budgets.

Recall always finds something (BM25 matches common words, the nearest vector is near in some
way), and every memory placed in the prompt is prefilled before the first token of the reply.
So a memory must clear a relevance bar (its cosine similarity to the query) and the block of
memories must fit ``max_tokens``; the rest are dropped, each with the reason, for the trace.

A short statement embeds far from the question that asks for it ("My dog is Rex" vs "What is my
dog called?": 0.26-0.31 with the shipped MiniLM, under the 0.3 bar, where off-topic chat reaches
0.28), so similarity alone lost the very facts a user expects back. A memory that holds at least
``OVERLAP_SHARE`` of the question's content words (``agentmm.memory.overlap``: IDF-weighed, so a
word every memory has counts little) may fall ``LEXICAL_MARGIN`` short of the bar (0.2 for the
default 0.3): the words say what is asked about, the similarity still has to say the memory is
near it. Measured with
``benchmarks/memory_bar.py`` (BENCHMARKS.md): short facts asked in the user's words placed
73/84 -> 77/84, off-topic chat unchanged (12-13 memories in 7-8 of 72 messages), the development
set unchanged but for 0.02 more other memories placed per question.

A turn's block also stays in the window for the turns after it (the prompt is append-only, so
the next turn re-uses the KV cache), so the blocks add up: without a bound for the window,
memory filled it several times faster than the conversation and made it fold (a full prefill)
that much sooner. So the block must also fit ``window_room``: what is left of the window's
budget for recalled memories once the blocks earlier turns in the window placed are counted.

The same words said in several turns are several memories ("What did I say?" asked five times:
five ids, one text), and recall found them all, so one block placed them all (100 tokens of
the 200-token block in one line said five times), and the small model copied the block into its
reply. A memory with the same speaker and text as one the block holds already (``same_words``:
case and whitespace aside) is dropped ``SAME_AS_PLACED``; the first, best ranked, stays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentmm.memory.conversation import format_recalled
from agentmm.memory.retrieval import WHEN

BELOW_BAR = "below the relevance bar"
# A memory holding this share of the question's content words may be this far below the bar.
OVERLAP_SHARE = 0.5
LEXICAL_MARGIN = 0.1
OVER_CAP = "over the token cap"
OVER_WINDOW = "over the window's memory budget"
# Shown already, in an earlier turn's block the prompt keeps (judged by compose, which knows
# whether that block stays: agentmm.context).
IN_WINDOW = "already in the window"
# The same speaker and words as a memory this block placed already (best ranked first).
SAME_AS_PLACED = "same as another memory"


@dataclass(frozen=True)
class Selection:
    kept: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)  # {id, similarity, reason}
    tokens: int = 0  # of the kept memories' block, as compose places it


def select_memories(
    recalled: Sequence[dict[str, Any]],
    count_tokens: Callable[[str], int],
    *,
    user_name: str,
    min_similarity: float,
    max_tokens: int,
    window_room: int | None = None,
) -> Selection:
    """Keep ``recalled`` (``Recalled.as_trace()`` dicts, best first) that reach ``min_similarity``
    and fit, in order, in a block of ``max_tokens`` (header included, counted with
    ``count_tokens``). A memory that holds ``OVERLAP_SHARE`` of the query's content words
    (its ``overlap``) need only reach ``min_similarity - LEXICAL_MARGIN``. A memory without a
    similarity (found by BM25 alone: not among the nearest vectors at all) does not clear the
    bar; one found by the date the query names ("what did I say yesterday?") needs none. A
    memory too long to fit is skipped and a shorter one after it may still go in. ``max_tokens``
    0 keeps none. ``window_room`` (None: no bound) caps the block the same way, past its first
    memory: a memory that fits
    ``max_tokens`` but not the room is dropped as over the window's budget (the trace tells the
    two apart), except the turn's best one, which goes in whatever the room. So once the
    window's budget is spent, memory keeps answering one memory a turn, and the window grows
    by at most that until the next fold moves old blocks out. A memory with the speaker and
    words (``same_words``) of one kept before it is dropped as the same as it.
    """
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    placed: set[tuple[str, str]] = set()
    tokens = 0
    for memory in recalled:
        if same_words(memory) in placed:
            dropped.append(_dropped(memory, SAME_AS_PLACED))
            continue
        if not _relevant(memory, min_similarity):
            dropped.append(_dropped(memory, BELOW_BAR))
            continue
        size = count_tokens(format_recalled([*kept, memory], user_name))
        if size > max_tokens:
            dropped.append(_dropped(memory, OVER_CAP))
            continue
        if window_room is not None and size > window_room and kept:
            dropped.append(_dropped(memory, OVER_WINDOW))
            continue
        kept.append(memory)
        placed.add(same_words(memory))
        tokens = size
    return Selection(kept, dropped, tokens)


def same_words(memory: Mapping[str, Any]) -> tuple[str, str]:
    """What makes two recalled memories the same line in the block: who said it and the words,
    case and runs of whitespace aside ("What did I say?" and "what did I  say?")."""
    speaker = " ".join(str(memory.get("speaker") or "").split()).casefold()
    return speaker, " ".join(str(memory.get("text") or "").split()).casefold()


def _relevant(memory: dict[str, Any], min_similarity: float) -> bool:
    """Whether a recalled memory clears the relevance bar (see ``select_memories``)."""
    if WHEN in (memory.get("found_by") or ()):
        return True
    similarity = memory.get("similarity")
    if similarity is None:
        return False
    bar = min_similarity
    if (memory.get("overlap") or 0.0) >= OVERLAP_SHARE:
        bar -= LEXICAL_MARGIN
    return bool(similarity >= bar)


def memory_shown(memory: Mapping[str, Any], in_window: str) -> bool:
    """Whether a recalled memory (``Recalled.as_trace()``) is in ``in_window``, the stored
    context of the turns the prompt shows: placed once, it is not placed twice."""
    text = str(memory.get("text") or "")
    return bool(text) and text in in_window


def _dropped(memory: dict[str, Any], reason: str) -> dict[str, Any]:
    return {"id": memory.get("id"), "similarity": memory.get("similarity"), "reason": reason}
