"""How much of a question's content a memory holds in its very words: the lexical side of the
relevance bar.

The bar a recalled memory must clear is its cosine similarity to the message, and a short
statement embeds far from the question that asks for it: "My dog is Rex" scored 0.26-0.31
against "What is my dog called?" with the shipped MiniLM, depending on the date written before
it, under the 0.3 bar, while off-topic chat reaches 0.28. Yet it holds the one word of the
question that says what is asked about ("dog"). So a memory also counts as relevant when it
holds most of the question's content, weighed as BM25 weighs words: each of the question's
content words by its inverse document frequency in the scope, so a word most memories have
(the user's name, "today") counts little and a word that no memory has counts fully against.

BM25's own stop words are Lucene's 33: "my", "what", "you", "do" are words to it, and every
memory of a chat has them. Here the question's closed-class words (pronouns, determiners,
auxiliaries, question words; a superset of Lucene's) are left out as well, and so are the words
that frame a question put to memory ("called", "name", "remember", "told"): what is left is what
the question is about.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_FUNCTION_WORDS = """a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing done down during each either else ever every
    few for from further had has have having he her here hers herself him himself his how i if in into is
    it its itself just me might mine more most must my myself neither no nor not now of off on once only
    or other ought our ours ourselves out over own please same shall she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up upon us
    very was we were what whatever when where whether which while who whom whose why will with would yet
    you your yours yourself yourselves"""
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS.split())
# Words that frame a question put to memory rather than say what it is about: "What is my dog
# called?", "What's my dog's name?", "Do you remember what I told you about my dog?" all ask
# about the dog, and "My dog is Rex" holds none of the rest.
_FRAME_WORDS = """call called calls name named names remember remembered recall recalled forget forgot forgotten tell
    told telling say said says saying mention mentioned know knew known"""
FRAME_WORDS = frozenset(_FRAME_WORDS.split())


def content_terms(text: str, stemmer: Any) -> list[str]:
    """The distinct content words of ``text``, tokenised and stemmed as the BM25 index's terms
    are (so they can be looked up there), function words left out."""
    from agentmm.memory.words import tokenize

    words = tokenize([text], FUNCTION_WORDS | FRAME_WORDS, stemmer)[0]
    return list(dict.fromkeys(words))


def held_share(weights: Sequence[tuple[str, float]], terms: frozenset[str] | set[str]) -> float | None:
    """The share of the question's content weight (``(term, weight)`` pairs) that a memory
    holding ``terms`` has; ``None`` for a question without content words."""
    total = sum(weight for _, weight in weights)
    if total <= 0:
        return None
    return sum(weight for term, weight in weights if term in terms) / total
