"""The relevance bar on the shipped MiniLM: a short fact told in one thread is placed when a new
thread asks for it, and chat that asks nothing of memory places nothing.

"My dog is Rex" embeds far from "What is my dog called?" (under the 0.3 bar: testers found
nothing recalled); it holds the question's content word, which lets it in at a lower bar
(``agentmm.memory.selection``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.conversation import recall, remember_turn, scope
from agentmm.memory.embeddings import SentenceTransformerEmbeddings
from agentmm.memory.selection import select_memories
from agentmm.settings import Settings

BAR = Settings().memory_min_similarity


def placed(store: ChromaStore, namespace: tuple[str, ...], message: str) -> list[dict[str, object]]:
    """What the recall node puts in the prompt for ``message`` (the token cap left out)."""
    found = recall(store, [namespace], message, k=5, now=datetime(2026, 12, 7, tzinfo=UTC))
    return select_memories([r.as_trace() for r in found], len, user_name="Ada", min_similarity=BAR,
                           max_tokens=1 << 20).kept  # fmt: skip


@pytest.fixture
def embedder(settings: Settings) -> Iterator[SentenceTransformerEmbeddings]:
    """The shipped model as the app opens it: its ONNX export cached for the test session."""
    loaded = SentenceTransformerEmbeddings.from_settings(settings)
    yield loaded
    loaded.close()


def test_a_short_fact_from_another_thread_is_recalled_and_small_talk_recalls_nothing(
    tmp_path: Path, embedder: SentenceTransformerEmbeddings
) -> None:
    namespace = scope("ada", "Mira")
    with ChromaStore.from_path(tmp_path / "store", index=embedder.index_config()) as store:
        said = [("My dog is Rex", "What a lovely name!"), ("I went to the market and bought apples.", "Yum, apples!"),
                ("Work was long today.", "Rest well tonight.")]  # fmt: skip
        for turn, (message, reply) in enumerate(said, 1):
            remember_turn(store, namespace, thread_id="first", turn=turn, when=datetime(2026, 12, 1, 10, tzinfo=UTC),
                          exchange=[("user", "Ada", message), ("assistant", "Mira", reply)])  # fmt: skip
        question = "What is my dog called?"
        rex = next(r for r in recall(store, [namespace], question, k=5) if r.key == "first:1:user")
        # The case the bar missed: similarity alone leaves the fact out.
        assert rex.similarity is not None and rex.similarity < BAR
        assert "first:1:user" in [m["id"] for m in placed(store, namespace, question)]
        for message in ("What is the capital of France?", "Tell me a joke.", "Describe a harbour town at dawn."):
            assert placed(store, namespace, message) == [], message
