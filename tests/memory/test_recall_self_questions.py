"""A question about the user that has no content word ("What is my name?") recalls what the user
said of themselves, on the shipped MiniLM, through ``conversation.recall``.

Such a question's only BM25 terms were "what", "my", "you", "do" (Lucene's stop words keep
them), so BM25 ranked every memory that said them, and at a quarter weight that noise pushed
dense search's best hit ("Hi Nora, I'm Sam", its first) out of recall's candidates."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.conversation import recall, remember_turn, scope
from agentmm.memory.embeddings import SentenceTransformerEmbeddings
from agentmm.settings import Settings

NAMESPACE = scope("sam", "Nora")
CHAT = [
    ("Hi Nora, I'm Sam", "Hello Sam! Welcome to the tavern. What brings you here tonight?"),
    ("I work as a nurse at the city hospital.", "A nurse! That must be demanding work."),
    ("Yes, long shifts. What's on the menu?", "Tonight we have lamb stew and fresh bread."),
    ("The stew sounds good, I'll have that.", "Coming right up. Anything to drink?"),
    ("A cup of tea please.", "Black tea with honey, the house favourite."),
    ("Tell me about this town.", "It's a quiet harbour town, fishermen mostly."),
    ("Are there any good walks nearby?", "The cliff path to the lighthouse is lovely at dusk."),
    ("I love lighthouses. My grandfather kept one.", "How wonderful, he must have had stories."),
    ("He did, about storms and shipwrecks.", "The sea gives and takes, as they say here."),
    ("What do you do for fun, Nora?", "I play the fiddle when the tavern is quiet."),
    ("Could you play something?", "Of course, here's an old sailor's tune."),
    ("That was beautiful.", "Thank you, it was my mother's favourite."),
    ("It's getting late. Is there a room free?", "Yes, the room at the top of the stairs."),
    ("How much is it for a night?", "Two silver coins, breakfast included."),
    ("Great, I'll take it.", "Here's your key. Sleep well."),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, machine_cache: Path) -> Iterator[ChromaStore]:
    """A 30-memory chat, remembered as the remember node writes it, once for the module."""
    embedder = SentenceTransformerEmbeddings.from_settings(Settings(cache_dir=machine_cache))
    path = tmp_path_factory.mktemp("self_questions") / "store"
    with ChromaStore.from_path(path, index=embedder.index_config()) as opened:
        started = datetime(2026, 12, 1, 10, tzinfo=UTC)
        for turn, (message, reply) in enumerate(CHAT, 1):
            remember_turn(opened, NAMESPACE, thread_id="t", turn=turn, when=started + timedelta(minutes=turn),
                          exchange=[("user", "Sam", message), ("assistant", "Nora", reply)])  # fmt: skip
        yield opened
    embedder.close()


def test_a_question_without_content_words_recalls_the_users_name(store: ChromaStore) -> None:
    found = recall(store, [NAMESPACE], "What is my name?", k=5, now=datetime(2026, 12, 1, 12, tzinfo=UTC))
    assert found and found[0].key == "t:1:user", [r.key for r in found]
    # BM25 had nothing to say: no memory came in on "what" or "my" alone.
    assert all(r.found_by == ("dense",) for r in found)


def test_a_question_with_a_content_word_still_uses_bm25(store: ChromaStore) -> None:
    found = recall(store, [NAMESPACE], "Do you remember where I work?", k=5)
    assert found[0].key == "t:2:user"
    assert "bm25" in found[0].found_by
