"""Which recalled memories enter the prompt: those relevant enough, within a token budget.

Recall always finds something (BM25 matches common words, the nearest vector is near in some
way), and every memory placed in the prompt is prefilled before the first token of the reply.
So a memory must clear a relevance bar (its cosine similarity to the query) and the block of
memories must fit ``max_tokens``; the rest are dropped, each with the reason, for the trace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentmm.memory.conversation import format_recalled

BELOW_BAR = "below the relevance bar"
OVER_CAP = "over the token cap"


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
) -> Selection:
    """Keep ``recalled`` (``Recalled.as_trace()`` dicts, best first) that reach ``min_similarity``
    and fit, in order, in a block of ``max_tokens`` (header included, counted with
    ``count_tokens``). A memory without a similarity (found by BM25 alone: not among the
    nearest vectors at all) does not clear the bar. A memory too long to fit is skipped and a
    shorter one after it may still go in. ``max_tokens`` 0 keeps none.
    """
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    tokens = 0
    for memory in recalled:
        similarity = memory.get("similarity")
        if similarity is None or similarity < min_similarity:
            dropped.append(_dropped(memory, BELOW_BAR))
            continue
        size = count_tokens(format_recalled([*kept, memory], user_name))
        if size > max_tokens:
            dropped.append(_dropped(memory, OVER_CAP))
            continue
        kept.append(memory)
        tokens = size
    return Selection(kept, dropped, tokens)


def _dropped(memory: dict[str, Any], reason: str) -> dict[str, Any]:
    return {"id": memory.get("id"), "similarity": memory.get("similarity"), "reason": reason}
