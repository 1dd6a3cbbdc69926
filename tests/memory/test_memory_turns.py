"""Recall and remember in the real turn graph, the memory owner's operations, the summary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agentmm.graphs.chat import build_graph
from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.conversation import scope
from agentmm.memory.locomo import EvalFileError, load_locomo
from agentmm.memory.manage import (
    ExportFileError,
    MemoryNotFoundError,
    add_memory,
    export_jsonl,
    forget,
    import_jsonl,
    list_memories,
    stats,
)
from agentmm.settings import Settings
from agentmm.state import TurnContext
from agentmm.tokens import TokenCounter
from tests.memory.conftest import CharacterEmbeddings
from tests.memory.synthetic_locomo import write_synthetic

WORDS = TokenCounter(lambda text: len(text.split()))


class Recording(FakeListChatModel):
    seen: list[list[BaseMessage]]

    def _stream(self, messages: list[Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
        self.seen.append(list(messages))
        return super()._stream(messages, *args, **kwargs)


def memory_store() -> InMemoryStore:
    return InMemoryStore(index={"dims": 64, "embed": CharacterEmbeddings(64), "fields": ["text"]})


def turn(graph: Any, text: str, thread: str, **context: Any) -> dict[str, Any]:
    return graph.invoke({"input": text}, {"configurable": {"thread_id": thread}},
                        context=TurnContext(user_name="Ada", **context))  # fmt: skip


def test_recall_across_threads_and_scope_isolation() -> None:
    store = memory_store()
    model = Recording(responses=["Noted!", "Your sister is Mira.", "Hm?", "ok"], seen=[])
    graph = build_graph(Settings(), model=model, checkpointer=InMemorySaver(), store=store, counter=WORDS)
    first = turn(graph, "My sister is called Mira.", "a")
    assert first["trace"]["path"] == ["ingest", "recall", "compose", "generate", "remember"]
    assert [w["id"] for w in first["trace"]["remembered"]] == ["a:1:user", "a:1:assistant"]

    second = turn(graph, "What is my sister called?", "b")
    recalled = second["trace"]["recalled"]
    assert any("Mira" in r["text"] for r in recalled)
    assert {"id", "score", "similarity", "found_by", "scope", "thread", "when"} <= set(recalled[0])
    assert "memories" in [p["part"] for p in second["trace"]["prompt_parts"]]
    assert "My sister is called Mira." in model.seen[1][-1].content  # placed with the turn's message
    # The recalled block is stored with the message, so the next prompt repeats it verbatim.
    assert "Mira" in second["messages"][-2].additional_kwargs["agentmm_context"]

    # Another user, and the same user with another persona, remember nothing of it.
    other_user = turn(graph, "What is my sister called?", "c", user_id="someone-else")
    assert other_user["trace"]["recalled"] == []
    assert store.list_namespaces(prefix=("memories",)) == [
        ("memories", "local", "_assistant"),
        ("memories", "someone-else", "_assistant"),
    ]


def test_each_turn_recalls_what_the_turn_before_remembered_in_an_embedded_store(
    tmp_path: Path, fake_embeddings: CharacterEmbeddings
) -> None:
    """The cached recall path (BM25 updated in place, dense hits mapped onto the cache) sees
    every write at once: turn N's messages are recallable in turn N+1, in another thread."""
    facts = ["My sister is called Mira.", "My cat Pickle hates rain.", "I sail to Oslo in June."]
    questions = ["What is my sister called?", "What does Pickle hate?", "Where do I sail to?"]
    index = {"dims": 64, "embed": fake_embeddings, "fields": ["text"]}
    with ChromaStore.from_path(tmp_path / "store", index=index) as store:  # type: ignore[arg-type]
        model = Recording(responses=["Noted!"] * 6, seen=[])
        graph = build_graph(Settings(), model=model, checkpointer=InMemorySaver(), store=store, counter=WORDS)
        for i, (fact, question) in enumerate(zip(facts, questions, strict=True)):
            turn(graph, fact, f"tell{i}")
            recalled = turn(graph, question, f"ask{i}")["trace"]["recalled"]
            assert fact in [r["text"] for r in recalled], (question, recalled)


def test_memories_already_in_the_window_are_not_recalled() -> None:
    graph = build_graph(
        Settings(),
        model=Recording(responses=["a", "b"], seen=[]),
        checkpointer=InMemorySaver(),
        store=memory_store(),
        counter=WORDS,
    )
    turn(graph, "My sister is called Mira.", "a")
    again = turn(graph, "Mira says hello.", "a")
    assert all(r["thread"] != "a" for r in again["trace"]["recalled"])


def test_interrupted_reply_is_not_remembered() -> None:
    store = memory_store()
    context = TurnContext()
    context.cancel.set()
    model = Recording(responses=["a long reply here"], seen=[])
    graph = build_graph(Settings(), model=model, checkpointer=InMemorySaver(), store=store, counter=WORDS)
    state = graph.invoke({"input": "hello"}, {"configurable": {"thread_id": "t"}}, context=context)
    assert [w["id"] for w in state["trace"]["remembered"]] == ["t:1:user"]


def test_owner_operations_round_trip(tmp_path: Path, fake_embeddings: CharacterEmbeddings) -> None:
    index = {"dims": 64, "embed": fake_embeddings, "fields": ["text"]}
    with ChromaStore.from_path(tmp_path / "one", index=index) as store:
        note = add_memory(store, "ada", "Tamsin", "The lamp is from 1871.")
        add_memory(store, "ada", None, "I like tea.", shared=True)
        store.put(scope("ada", "Tamsin"), "t:1:user", {"text": "[1 May 2026] Ada: hi", "content": "hi"})
        assert {m["id"] for m in list_memories(store, "ada", None)} >= {note["id"], "t:1:user"}
        assert stats(store, "ada") == {"scopes": {"ada/Tamsin": 2, "ada/_shared": 1}, "total": 3}
        first = tmp_path / "first.jsonl"
        assert export_jsonl(store, "ada", None, first) == 3
        forgotten = forget(store, "ada", None, note["id"])
        assert forgotten["id"] == note["id"]
        with pytest.raises(MemoryNotFoundError):
            forget(store, "ada", None, note["id"])
    with ChromaStore.from_path(tmp_path / "two", index=index) as other:
        assert import_jsonl(other, first) == 3
        second = tmp_path / "second.jsonl"
        export_jsonl(other, "ada", None, second)
    assert second.read_text() == first.read_text()  # lossless, timestamps included


def test_bad_import_files_write_nothing(tmp_path: Path, fake_embeddings: CharacterEmbeddings) -> None:
    bad = tmp_path / "bad.jsonl"
    with ChromaStore.from_path(tmp_path / "s", index={"dims": 64, "embed": fake_embeddings, "fields": ["text"]}) as s:
        for content in ["not json\n", json.dumps({"format": "other"}) + "\n",
                        json.dumps({"format": "agentmm-memory/1", "namespace": ["memories", "a", "b"],
                                    "id": "x", "value": {"text": "ok"}}) + "\n{broken\n"]:  # fmt: skip
            bad.write_text(content)
            with pytest.raises(ExportFileError):
                import_jsonl(s, bad)
        assert stats(s)["total"] == 0


def test_locomo_reader(tmp_path: Path) -> None:
    samples = load_locomo(write_synthetic(tmp_path / "syn.json"))
    assert len(samples) == 2 and samples[0].sessions[0].date_time.endswith("2023")
    assert {q.category for q in samples[0].qa} == {1, 2, 3, 4, 5}
    for content, needle in [("{", "not JSON"), ("[]", "list of LoCoMo samples"),
                            ('[{"conversation": {"speaker_a": "x"}}]', "no session_N"),
                            ('[{"conversation": {"session_1": [{"text": "hi"}]}}]', "speaker")]:  # fmt: skip
        bad = tmp_path / "bad.json"
        bad.write_text(content)
        with pytest.raises(EvalFileError, match=needle):
            load_locomo(bad)


def test_export_to_an_unwritable_place_is_a_typed_error(tmp_path: Path, fake_embeddings: CharacterEmbeddings) -> None:
    from agentmm.memory.errors import MemoryStoreError

    blocker = tmp_path / "file"
    blocker.write_text("")
    with ChromaStore.from_path(tmp_path / "s", index={"dims": 64, "embed": fake_embeddings, "fields": ["text"]}) as s:
        add_memory(s, "ada", None, "I like tea.")
        with pytest.raises(MemoryStoreError, match="cannot write"):
            export_jsonl(s, "ada", None, blocker / "out.jsonl")


def test_what_the_user_showed_and_played_is_remembered(tmp_path: Path) -> None:
    from agentmm.tools.perception import Perception
    from tests.tools.fake_captioner import FakeCaptioner
    from tests.tools.media_files import make_image, write_wav

    def transcribe(path: Path) -> tuple[str, str, str]:
        return "meet me at the pier at noon", "en", "fake-asr"

    store = memory_store()
    model = Recording(responses=["What a sweet dog!", "See you there.", "The sleeping dog on the beach."], seen=[])
    graph = build_graph(
        Settings(),
        model=model,
        checkpointer=InMemorySaver(),
        store=store,
        counter=WORDS,
        perception=Perception(FakeCaptioner("a dog asleep on a beach"), transcribe),
    )
    photo, voice = make_image(tmp_path / "dog.png"), write_wav(tmp_path / "v.wav")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"PK\x03\x04" + b"\0" * 64)  # a ZIP renamed .png: an error observation, never a memory
    first = turn(graph, "look!", "a", attachments=[str(photo), str(broken)])
    assert [w["id"] for w in first["trace"]["remembered"]] == ["a:1:observation", "a:1:user", "a:1:assistant"]
    seen = store.get(scope("local", None), "a:1:observation")
    assert seen is not None
    assert seen.value["content"] == "[Ada sends you a picture that contains: a dog asleep on a beach]"
    assert "broken" not in json.dumps([item.value for item in store.search(scope("local", None), limit=50)])

    # A voice note alone is the user's words already: it is not written twice.
    second = turn(graph, "", "a", attachments=[str(voice)])
    assert [w["id"] for w in second["trace"]["remembered"]] == ["a:2:user", "a:2:assistant"]

    # Another thread recalls the picture from what it showed.
    third = turn(graph, "Do you remember the dog on the beach I showed you?", "b")
    assert any("dog asleep on a beach" in r["text"] for r in third["trace"]["recalled"])


def test_a_long_voice_note_is_remembered_in_pieces_recall_can_place(tmp_path: Path) -> None:
    """A voice note over ~40 s was one memory longer than recall's token cap (200), so it was
    never recalled ('over the token cap'). Now it is stored in pieces, cut between sentences, and
    undoing the turn removes every piece."""
    from agentmm.memory.conversation import forget_turn
    from agentmm.tools.perception import Perception
    from tests.tools.fake_captioner import FakeCaptioner
    from tests.tools.media_files import write_wav

    filler = " ".join(f"Then we walked past house number {i} on the long road." for i in range(30))
    transcript = f"{filler} My cousin Bartholomew keeps seven goats in Lisbon. {filler}"  # ~700 words

    def transcribe(path: Path) -> tuple[str, str, str]:
        return transcript, "en", "fake-asr"

    store = memory_store()
    model = Recording(responses=["What a walk.", "Seven goats."], seen=[])
    graph = build_graph(Settings(n_ctx=4096, memory_max_tokens=200), model=model, checkpointer=InMemorySaver(),
                        store=store, counter=WORDS,
                        perception=Perception(FakeCaptioner(lambda image: ""), transcribe))  # fmt: skip
    first = turn(graph, "", "a", attachments=[str(write_wav(tmp_path / "v.wav"))])
    ids = [w["id"] for w in first["trace"]["remembered"] if ":user" in w["id"]]
    assert ids[:3] == ["a:1:user", "a:1:user:2", "a:1:user:3"] and len(ids) > 10
    pieces = [store.get(scope("local", None), key).value["content"] for key in ids]
    assert " ".join(pieces) == transcript  # nothing lost, nothing repeated
    assert all(len(p.split()) <= 200 // 4 and p.endswith(".") for p in pieces)

    second = turn(graph, "Where does my cousin Bartholomew keep his goats?", "b")
    assert any("Bartholomew keeps seven goats" in r["text"] for r in second["trace"]["recalled"])

    forgotten = forget_turn(store, "a", 1)
    assert set(ids) <= set(forgotten)
    assert not [i for i in store.search(scope("local", None), limit=100) if i.value.get("thread") == "a"]
