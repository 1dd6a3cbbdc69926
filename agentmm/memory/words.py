"""The BM25 index's tokeniser: bm25s's ``tokenize`` as agentmm calls it, without importing bm25s.

Importing the bm25s package imports scipy.sparse (~0.2 s of CPU), and every chat start with
memories paid it for the tokeniser alone (recall keeps its own index, ``agentmm.memory.bm25``).
The steps are bm25s's (0.3.x): lower-case, scikit-learn's word pattern, stop words left out
before stemming, each word stemmed on its own; the tests check the tokens against bm25s's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

# bm25s's default pattern (scikit-learn's CountVectorizer): words of two or more characters.
_WORD = re.compile(r"(?u)\b\w\w+\b")
# bm25s.stopwords.STOPWORDS_EN (its stopwords="en").
_STOPWORDS_EN = """a an and are as at be but by for if in into is it no not of on or such that the their then there
    these they this to was will with"""
STOPWORDS_EN = frozenset(_STOPWORDS_EN.split())


def tokenize(texts: Sequence[str], stopwords: Iterable[str], stemmer: Any = None) -> list[list[str]]:
    """Each text's words (stemmed by ``stemmer``'s ``stemWords``, or by calling it, where given),
    as ``bm25s.tokenize(texts, stopwords=..., stemmer=..., return_ids=False)`` gives them."""
    stop = frozenset(stopwords)
    docs = [[word for word in _WORD.findall(text.lower()) if word not in stop] for text in texts]
    if stemmer is None:
        return docs
    unique = list(dict.fromkeys(word for doc in docs for word in doc))
    stem = stemmer.stemWords if hasattr(stemmer, "stemWords") else stemmer
    stems = dict(zip(unique, stem(unique), strict=True))
    return [[stems[word] for word in doc] for doc in docs]
