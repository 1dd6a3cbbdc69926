"""The multi-hop second recall round: names the best first-round memory brings seed a second
search, so a memory that shares no word with the question but that name is found."""

from __future__ import annotations

from datetime import UTC, datetime

from langgraph.store.base import Item, PutOp

from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.conversation import recall
from agentmm.memory.multihop import linked_names, two_round_search
from agentmm.memory.retrieval import hybrid_search

SCOPE = ("memories", "u1", "yara")
QUESTION = "What does Yara's brother in Kyoto do?"
MEMORIES = {
    "brother": "My brother Emil moved to Kyoto last spring",
    "job": "Emil just started a new job as a librarian",
    **{f"noise{i}": f"We talked about {topic} for a while" for i, topic in enumerate(
        ["gardening tomatoes", "the weather in Oslo", "a documentary on whales", "baking sourdough bread",
         "the football match", "old vinyl records", "a hiking trail", "the price of coffee"])},
}  # fmt: skip


def _fill(store: ChromaStore) -> None:
    store.batch([PutOp(SCOPE, key, {"text": text, "content": text, "speaker": "Yara"})
                 for key, text in MEMORIES.items()])  # fmt: skip


def _item(text: str, speaker: str = "Yara") -> Item:
    now = datetime.now(UTC)
    return Item(value={"content": text, "speaker": speaker}, key=text[:8], namespace=SCOPE, created_at=now,
                updated_at=now)  # fmt: skip


def test_linked_names_skip_the_question_the_speaker_and_sentence_openers() -> None:
    hits = [_item("Yesterday Yara said her brother Emil works with Tomas in Kyoto's old library")]
    assert linked_names(hits, "Where does Yara's brother live in Kyoto?") == ["Emil", "Tomas"]
    assert linked_names(hits, "Where does emil live?") == ["Tomas", "Kyoto"]
    assert linked_names([_item("Honestly Monday was long. I'm tired")], "how was it") == []
    many = [_item("Anna, Bruno, Carla and Dario came"), _item("Elena too")]
    assert linked_names(many, "who came", limit=3) == ["Anna", "Bruno", "Carla"]


def test_second_round_finds_the_memory_the_first_one_names(vector_store: ChromaStore) -> None:
    _fill(vector_store)
    first = [hit.key for hit in hybrid_search(vector_store, SCOPE, QUESTION, k=3)]
    assert first[0] == "brother" and "job" not in first  # one round cannot make the hop
    hits = two_round_search(vector_store, SCOPE, QUESTION, k=3)
    assert hits[0].key == "brother" and "job" in [hit.key for hit in hits]
    job = next(hit for hit in hits if hit.key == "job")
    assert "bm25" in job.ranks  # found by the name, lexically, in the second round
    brother = next(hit for hit in hits if hit.key == "brother")
    assert brother.dense_score is not None and set(brother.ranks) <= {"dense", "bm25"}


def test_no_names_means_one_round(vector_store: ChromaStore) -> None:
    vector_store.batch([PutOp(SCOPE, "tea", {"text": "green tea every morning", "content": "green tea every morning"})])
    assert two_round_search(vector_store, SCOPE, "tea", k=3) == hybrid_search(vector_store, SCOPE, "tea", k=3)


def test_recall_with_two_rounds_brings_the_linked_memory(vector_store: ChromaStore) -> None:
    _fill(vector_store)
    one = {r.key for r in recall(vector_store, [SCOPE], QUESTION, k=3, min_similarity=0.99)}
    two = {r.key for r in recall(vector_store, [SCOPE], QUESTION, k=3, min_similarity=0.99, rounds=2)}
    # Dense-only hits are held to the (here unreachable) relevance bar: what is left was found by words.
    assert one == {"brother"} and two == {"brother", "job"}
