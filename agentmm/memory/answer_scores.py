"""LoCoMo's answer scores: token F1 and exact match of a predicted answer against the gold one.

As LoCoMo's own evaluation (snap-research/locomo, ``task_eval/evaluation.py``) scores them:
answers are lower-cased, stripped of punctuation, commas and the words a/an/the/and, and split
on whitespace; F1 compares Porter stems (PyStemmer's ``porter``, already a dependency for BM25;
NLTK's variant that LoCoMo uses differs from it on a few words); exact match is equality of the
two token sets. Per category: multi-hop (1) answers are comma-separated lists, each gold part
scored by its best-matching predicted part and the parts averaged; open-domain (3) gold answers
keep only their first ';'-separated part; temporal (2) and single-hop (4) are plain F1.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import cache
from typing import Any

MULTI_HOP, OPEN_DOMAIN = 1, 3
_DROPPED = re.compile(r"\b(a|an|the|and)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


@cache
def _stemmer() -> Any:
    import Stemmer  # PyStemmer

    return Stemmer.Stemmer("porter")


def normalize(text: str) -> str:
    """LoCoMo's ``normalize_answer``."""
    text = str(text).replace(",", "").lower().translate(_PUNCTUATION)
    return " ".join(_DROPPED.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    """F1 over the Porter stems of the two normalized answers."""
    stem = _stemmer().stemWords
    predicted, wanted = stem(normalize(prediction).split()), stem(normalize(gold).split())
    same = sum((Counter(predicted) & Counter(wanted)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(wanted)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> bool:
    """The two normalized answers hold the same words."""
    return set(normalize(prediction).split()) == set(normalize(gold).split())


def gold_answer(answer: Any, category: int) -> str:
    """The gold answer as LoCoMo scores it (an open-domain one up to its first ';')."""
    text = str(answer if answer is not None else "")
    return text.split(";")[0].strip() if category == OPEN_DOMAIN else text


def answer_f1(prediction: str, gold: str, category: int) -> float:
    """The category's F1: multi-hop lists part by part, the others whole."""
    if category != MULTI_HOP:
        return token_f1(prediction, gold)
    predicted = [p.strip() for p in prediction.split(",")]
    wanted = [g.strip() for g in gold.split(",")]
    return sum(max(token_f1(p, g) for p in predicted) for g in wanted) / len(wanted)
