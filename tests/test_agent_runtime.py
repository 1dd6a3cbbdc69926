"""An Agent owns what it opens, and only that: ``Agent.close`` frees the model, the embedder, the
memory store (its data-dir lock) and the thread database it opened, never what the caller passed
in; two agents in one process share nothing; a closed agent says so in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver

from agentmm.errors import RuntimeClosedError
from agentmm.graphs.agent import Agent
from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.conversation import scope
from agentmm.settings import load_settings
from agentmm.threads import thread_exists
from tests.memory.conftest import CharacterEmbeddings


def fake_store(path: Path) -> ChromaStore:
    embeddings = CharacterEmbeddings(64)
    return ChromaStore.from_path(path, index={"dims": 64, "embed": embeddings, "fields": ["text"]})


def test_what_the_caller_passed_stays_usable_after_close(tmp_path: Path) -> None:
    model = FakeListChatModel(responses=["Hello!", "Again!"])
    saver = InMemorySaver()
    store = fake_store(tmp_path / "store")
    agent = Agent(load_settings(memory=True), model=model, checkpointer=saver, store=store)
    first = agent.chat("My sister is called Mira.")
    agent.close()

    assert model.invoke("hi").text == "Again!"
    assert thread_exists(saver, first.thread_id)
    store.put(("notes",), "k", {"text": "still open"})
    assert store.get(("notes",), "k") is not None
    # A second agent goes on with them.
    again = Agent(load_settings(memory=True), model=FakeListChatModel(responses=["Yes."]), checkpointer=saver,
                  store=store)  # fmt: skip
    assert again.chat("Still there?", first.thread_id).reply == "Yes."
    again.close()
    store.close()


def test_a_closed_agent_is_one_typed_line(tmp_path: Path) -> None:
    agent = Agent(load_settings(), model=FakeListChatModel(responses=["Hi."]))
    agent.chat("Hello")
    agent.close()
    agent.close()  # twice is a no-op
    for use in (lambda: agent.chat("Hello again"), lambda: agent.checkpointer, lambda: agent.model,
                lambda: agent.store, lambda: agent.personas):  # fmt: skip
        with pytest.raises(RuntimeClosedError, match=r"^(this )?agent is closed: make a new Agent to go on$"):
            use()


def test_close_releases_the_store_and_threads_it_opened(tmp_path: Path) -> None:
    settings = load_settings(memory=True, data_dir=tmp_path / "data")
    agent = Agent(settings, model=FakeListChatModel(responses=["Hi."]))
    store, saver = agent.store, agent.checkpointer
    agent.close()
    with pytest.raises(Exception, match="closed"):
        store.get(("notes",), "k")
    with pytest.raises(Exception, match="closed"):
        saver.conn.execute("select 1")
    # The data dir's lock went with it: a second agent opens the memory store at once.
    second = Agent(settings, model=FakeListChatModel(responses=["Hi."]))
    assert second.store is not None and second.store is not store
    second.close()


@pytest.mark.e2e
def test_close_frees_the_model_the_agent_loaded(shipped_model: Path) -> None:
    agent = Agent(load_settings(n_ctx=512, max_tokens=4))
    agent.chat("Hello")
    loaded = agent.model.load()  # type: ignore[attr-defined]
    assert not loaded.closed
    agent.close()
    assert loaded.closed  # the Llama is freed, not waiting for the garbage collector


@pytest.mark.e2e
def test_two_agents_in_one_process_share_nothing(tmp_path: Path, shipped_model: Path) -> None:
    minilm = load_settings().embedding_model
    from agentmm.memory.embeddings import default_model_path

    one = Agent(load_settings(data_dir=tmp_path / "one", n_ctx=1024, memory=True, max_tokens=8, seed=1))
    two = Agent(load_settings(data_dir=tmp_path / "two", n_ctx=768, memory=True, max_tokens=8, seed=1,
                              embedding_model=str(default_model_path()) if minilm is None else None))  # fmt: skip
    try:
        turn = one.chat("My sister is called Mira and she lives in Lisbon.")
        assert one.model.load() is not two.model.load()  # type: ignore[attr-defined]
        assert one.model.load().llama.n_ctx() == 1024 and two.model.load().llama.n_ctx() == 768  # type: ignore[attr-defined]
        assert one.store is not two.store
        assert one.store.embeddings.load() is not two.store.embeddings.load()  # type: ignore[union-attr]
        # The turn is in the first agent's thread and memory, nowhere in the second's.
        assert thread_exists(one.checkpointer, turn.thread_id)
        assert not thread_exists(two.checkpointer, turn.thread_id)
        where = scope(one.settings.user_id)[:1]  # every user's and persona's memories
        assert one.store.search(where, limit=10)  # type: ignore[union-attr]
        assert not two.store.search(where, limit=10)  # type: ignore[union-attr]
        assert not two.store.search(where, query="Who is my sister?", limit=10)  # type: ignore[union-attr]
        # Closing one leaves the other whole.
        one.close()
        assert two.chat("Hello there").reply is not None
    finally:
        one.close()
        two.close()
