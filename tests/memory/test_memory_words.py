"""The BM25 index's tokeniser gives bm25s's tokens without importing bm25s (whose package
imports scipy.sparse, ~0.2 s of CPU at every chat start with memories)."""

from __future__ import annotations

import subprocess
import sys

import bm25s
import bm25s.stopwords
import pytest
import Stemmer

from agentmm.memory.overlap import FRAME_WORDS, FUNCTION_WORDS
from agentmm.memory.words import STOPWORDS_EN, tokenize

TEXTS = [
    "Alice's sister Marguerite lives in Lisbon, and she is the one who lives there.",
    "The locker code is 7319; it was 42 before. A I x y zz",
    "Running runners ran RUN run's — naïve café Ærøskøbing straße İstanbul",
    "東京に住んでいます 我住在北京 서울에 살아요",
    "emoji 🎂🎉🐢 and under_scores, hy-phen-ated, e-mail@example.com http://x.y/z?q=1",
    "",
    "   ",
    "it is not such a thing; this is that, or these, or those",
    "What is my dog called? Do you remember what I told you about my dog?",
]


def test_the_stop_words_are_bm25s_english_ones() -> None:
    assert set(bm25s.stopwords.STOPWORDS_EN) == STOPWORDS_EN


@pytest.mark.parametrize("stemmed", [True, False], ids=["stemmed", "unstemmed"])
@pytest.mark.parametrize("stopwords", ["en", "overlap"])
def test_the_tokens_are_bm25s_tokens(stemmed: bool, stopwords: str) -> None:
    stemmer = Stemmer.Stemmer("english") if stemmed else None
    stop = STOPWORDS_EN if stopwords == "en" else FUNCTION_WORDS | FRAME_WORDS
    given = "en" if stopwords == "en" else sorted(stop)  # as retrieval and overlap called bm25s
    theirs = bm25s.tokenize(TEXTS, stopwords=given, stemmer=stemmer, return_ids=False, show_progress=False)
    assert tokenize(TEXTS, stop, stemmer) == theirs
    for text in TEXTS:  # one text at a time, as a query is
        assert tokenize([text], stop, stemmer) == bm25s.tokenize(
            [text], stopwords=given, stemmer=stemmer, return_ids=False, show_progress=False
        )


def test_a_callable_stemmer_is_called_on_the_words() -> None:
    assert tokenize(["Dogs dogs cats"], (), lambda words: [w.upper() for w in words]) == [["DOGS", "DOGS", "CATS"]]


def test_recall_over_memories_imports_no_bm25s() -> None:
    code = (
        "import sys\n"
        "from langgraph.store.memory import InMemoryStore\n"
        "from agentmm.memory.retrieval import hybrid_search\n"
        "store = InMemoryStore()\n"
        "store.put(('m',), 'a', {'text': 'The cat is called Quixotl'})\n"
        "store.put(('m',), 'b', {'text': 'Alice drinks green tea'})\n"
        "hits = hybrid_search(store, ('m',), 'what is my cat called, Quixotl?', k=2)\n"
        "assert hits[0].key == 'a' and hits[0].ranks.get('bm25') == 1, hits\n"
        "print(sorted(m for m in ('bm25s', 'scipy') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
