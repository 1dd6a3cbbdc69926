"""Long-term memory in Postgres with pgvector (``store_url``): what agentmm adds to LangGraph's
``PostgresStore`` (the change log behind incremental recall, errors, timestamps), the memory
commands moving memories between backends, ``doctor``, and an Agent remembering in Postgres."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from agentmm.memory import open_store
from agentmm.memory.conversation import recall
from agentmm.memory.errors import StoreUnreachableError, VectorExtensionError
from agentmm.memory.incremental import INCREMENTAL, IncrementalStore, recall_path
from agentmm.memory.postgres_store import PostgresMemoryStore
from agentmm.memory.retrieval import hybrid_search
from agentmm.settings import load_settings
from tests.memory.conftest import CharacterEmbeddings
from tests.pg_server import PostgresServer
from tests.test_cli import agentmm, assert_one_line_error, ok_json

NS = ("memories", "u", "p")


@pytest.fixture
def index(fake_embeddings: CharacterEmbeddings) -> dict[str, Any]:
    return {"dims": fake_embeddings.dims, "embed": fake_embeddings, "fields": ["text"]}


@pytest.fixture
def pg(postgres_url: str, index: dict[str, Any]) -> Iterator[PostgresMemoryStore]:
    with PostgresMemoryStore.from_url(postgres_url, index=index) as store:
        yield store


# --- the change log ------------------------------------------------------------------------


def test_it_is_an_incremental_store(pg: PostgresMemoryStore) -> None:
    assert isinstance(pg, IncrementalStore)
    assert recall_path(pg) == INCREMENTAL
    before = pg.revision
    pg.put(NS, "a", {"text": "Alice lives in Lisbon"})
    pg.put(NS, "b", {"text": "Bob drinks tea"})
    middle = pg.revision
    pg.delete(NS, "a")
    assert pg.changed_since(before) == {(NS, "a"), (NS, "b")}
    assert pg.changed_since(middle) == {(NS, "a")}
    assert pg.changed_since(pg.revision) == set()
    assert pg.changed_since(("not", "a snapshot")) is None


def test_a_write_that_commits_after_the_revision_was_taken_is_reported(
    pg: PostgresMemoryStore, postgres_url: str
) -> None:
    """Commit order is not id order: a transaction that began before a reader's revision and
    commits after it must still be reported (a plain max(id) revision would miss it)."""
    with psycopg.connect(postgres_url) as slow:
        slow.execute("INSERT INTO store (prefix, key, value) VALUES ('memories.u.p', 'slow', '{\"text\": \"s\"}')")
        pg.put(NS, "fast", {"text": "f"})  # committed, with a later change id
        seen = pg.revision  # the slow writer is still open
        slow.commit()
    assert pg.changed_since(seen) == {(NS, "slow")}


def test_hybrid_recall_follows_another_workers_writes(postgres_url: str, index: dict[str, Any]) -> None:
    with (
        PostgresMemoryStore.from_url(postgres_url, index=index) as reader,
        PostgresMemoryStore.from_url(postgres_url, index=index) as writer,
    ):
        for i in range(20):
            writer.put(NS, f"m{i}", {"text": f"memory number {i} about the weather"})
        first = hybrid_search(reader, NS, "weather", k=3)
        assert len(first) == 3
        writer.put(NS, "new", {"text": "Zanzibar is where Kofi was born"})
        found = hybrid_search(reader, NS, "Zanzibar Kofi", k=3)
        assert found[0].key == "new"
        assert found[0].found_by == ("dense", "bm25") or set(found[0].found_by) == {"dense", "bm25"}
        writer.delete(NS, "new")
        assert "new" not in [hit.key for hit in hybrid_search(reader, NS, "Zanzibar Kofi", k=3)]


def test_a_revision_older_than_the_pruned_log_reads_in_full(
    postgres_url: str, index: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentmm.memory.postgres_store as module

    monkeypatch.setattr(module, "LOG_KEEP", 2)
    with PostgresMemoryStore.from_url(postgres_url, index=index) as store:
        old = store.revision
        for i in range(5):
            store.put(NS, f"k{i}", {"text": str(i)})
        recent = store.revision
        store.put(NS, "k9", {"text": "9"})
    with PostgresMemoryStore.from_url(postgres_url, index=index) as store:  # opening prunes
        assert store.changed_since(old) is None
        assert store.changed_since(recent) == {(NS, "k9")}


def test_nearest_items_name_records_by_id(pg: PostgresMemoryStore) -> None:
    pg.put(NS, "a", {"text": "Alice lives in Lisbon"})
    pg.put(("memories", "other", "p"), "a", {"text": "Alice lives in Lisbon"})
    hits, everything = pg.nearest_items("Alice lives in Lisbon", 10)
    assert everything and len(hits) == 2
    assert pg.record_id(NS, "a") in dict(hits)
    scoped, _ = pg.nearest_items("Alice lives in Lisbon", 10, NS)
    assert [record for record, _ in scoped] == [pg.record_id(NS, "a")]
    assert scoped[0][1] == pytest.approx(1.0, abs=1e-4)


def test_an_update_replaces_the_items_vectors(pg: PostgresMemoryStore) -> None:
    pg.put(NS, "a", {"text": "Alice lives in Lisbon"})
    pg.put(NS, "a", {"content": "no text any more"})
    assert pg.nearest_items("Alice lives in Lisbon", 5)[0] == []


def test_a_large_batch_is_written_in_chunks(pg: PostgresMemoryStore) -> None:
    from langgraph.store.base import PutOp

    pg.batch([PutOp(NS, f"k{i}", {"text": f"t{i}"}) for i in range(17_000)])  # > 65,535 parameters at once
    assert pg.count() == 17_000


def test_timestamps_are_utc_whatever_the_servers_time_zone(postgres_url: str, index: dict[str, Any]) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{postgres_url.rsplit('/', 1)[1]}\" SET timezone TO 'Asia/Kolkata'")
    with PostgresMemoryStore.from_url(postgres_url, index=index) as store:
        store.put(NS, "a", {"text": "x"})
        item = store.get(NS, "a")
        assert item is not None and item.created_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


# --- errors ----------------------------------------------------------------------------------


def test_an_unreachable_server_is_one_typed_error(index: dict[str, Any]) -> None:
    from tests.pg_server import free_port

    with pytest.raises(StoreUnreachableError, match="cannot reach Postgres"):
        PostgresMemoryStore.from_url(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing", index=index)


def test_a_database_without_pgvector_is_one_typed_error(postgres_server: PostgresServer, index: dict[str, Any]) -> None:
    """A user who may not create the extension, in a database that does not have it."""
    name, role = f"nv_{uuid.uuid4().hex[:8]}", f"r_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    url = postgres_server.url(name).replace("postgres@", f"{role}@")
    with pytest.raises(VectorExtensionError, match="CREATE EXTENSION vector"):
        PostgresMemoryStore.from_url(url, index=index)


def test_the_cli_says_an_unreachable_store_in_one_line(tmp_path: Path) -> None:
    from tests.pg_server import free_port

    env = {"AGENTMM_MEMORY": "true", "AGENTMM_STORE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}
    assert_one_line_error(agentmm("memory", "list", env=env), "cannot reach Postgres")


# --- the shipped embedder ------------------------------------------------------------------


def test_the_shipped_embedder_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    """The real MiniLM through open_store: a paraphrase is found, hybrid recall is incremental."""
    settings = load_settings(store_url=postgres_url, memory=True)
    store = open_store(settings)
    try:
        assert isinstance(store, PostgresMemoryStore)
        store.put(NS, "sister", {"text": "My sister Mira lives in Lisbon and teaches piano."})
        store.put(NS, "car", {"text": "The blue car broke down on the motorway yesterday."})
        store.put(NS, "cat", {"text": "Our cat sleeps on the radiator all winter."})
        assert store.search(NS, query="Which city is my sister in?", limit=1)[0].key == "sister"
        found = recall(store, [NS], "Where does Mira live?", k=2, min_similarity=0.0)
        assert found[0].key == "sister"
        assert recall_path(store) == INCREMENTAL
    finally:
        store.close()


# --- the memory commands across backends -----------------------------------------------------


@pytest.mark.slow
def test_export_and_import_move_memories_between_chroma_and_postgres(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    memory_on = {"AGENTMM_MEMORY": "true"}
    postgres = {**memory_on, "AGENTMM_STORE_URL": postgres_server.new_database()}
    fresh = {**memory_on, "AGENTMM_DATA_DIR": str(tmp_path / "fresh-data")}
    for text in ["Mira lives in Lisbon.", "Kofi was born in Zanzibar.", "The ferry leaves at 7 — ünïcödé"]:
        ok_json("memory", "add", text, "--json", env=memory_on)
    ok_json("memory", "add", "A persona's own memory.", "--persona", "bram tolliver", "--json", env=memory_on)

    exports = [tmp_path / f"{i}.jsonl" for i in range(3)]
    assert ok_json("memory", "export", str(exports[0]), "--json", env=memory_on)["exported"] == 4  # SQLite + Chroma
    assert ok_json("memory", "import", str(exports[0]), "--json", env=postgres)["imported"] == 4
    assert ok_json("memory", "export", str(exports[1]), "--json", env=postgres)["exported"] == 4
    assert ok_json("memory", "import", str(exports[1]), "--json", env=fresh)["imported"] == 4
    assert ok_json("memory", "export", str(exports[2]), "--json", env=fresh)["exported"] == 4
    assert exports[1].read_bytes() == exports[0].read_bytes()
    assert exports[2].read_bytes() == exports[0].read_bytes()
    rows = [json.loads(line) for line in exports[0].read_text().splitlines()]
    assert {row["value"]["content"] for row in rows} >= {"Mira lives in Lisbon."}

    found = ok_json("memory", "search", "Where does Mira live?", "--json", env=postgres)["results"]
    assert "Lisbon" in found[0]["text"]
    assert ok_json("memory", "stats", "--json", env=postgres)["total"] == 4


def test_doctor_reports_the_postgres_store(postgres_url: str) -> None:
    from agentmm.doctor import memory_check

    check = memory_check(load_settings(store_url=postgres_url, memory=True))
    assert check["ok"], check
    assert "pgvector" in check["detail"] and "0 memories" in check["detail"]
    bad = memory_check(load_settings(store_url="postgresql://postgres@127.0.0.1:1/x", memory=True))
    assert not bad["ok"] and "cannot reach Postgres" in bad["detail"]


# --- an Agent remembering in Postgres --------------------------------------------------------


def test_an_agent_remembers_in_postgres_and_another_agent_recalls_it(postgres_url: str) -> None:
    from agentmm.graphs.agent import Agent

    def agent() -> Agent:
        return Agent(model=FakeListChatModel(responses=["Noted."] * 4), store_url=postgres_url, memory=True)

    with agent() as first:
        told = first.chat("My sister Mira lives in Lisbon and teaches piano.", thread_id="t1")
        assert len(told.trace["remembered"]) == 2
        asked = first.chat("Where does my sister live?", thread_id="t2")
        assert asked.trace["recall_path"] == INCREMENTAL
        assert any("Lisbon" in memory["text"] for memory in asked.trace["recalled"])
    with agent() as second:  # another worker on the same database
        asked = second.chat("Which city is Mira in?", thread_id="t3")
        assert any("Lisbon" in memory["text"] and memory["thread"] == "t1" for memory in asked.trace["recalled"])


def test_the_recall_cache_stays_exact_while_workers_write(postgres_url: str, index: dict[str, Any]) -> None:
    """Two writers (as two worker processes would) put and delete while a third recalls: after
    they stop, the reader's cached corpus is exactly the scope."""
    import threading

    from agentmm.memory.retrieval import recall_cache

    with (
        PostgresMemoryStore.from_url(postgres_url, index=index) as reader,
        PostgresMemoryStore.from_url(postgres_url, index=index) as one,
        PostgresMemoryStore.from_url(postgres_url, index=index) as two,
    ):
        reader.put(NS, "seed", {"text": "the first memory"})
        hybrid_search(reader, NS, "memory", k=1)

        def write(store: PostgresMemoryStore, name: str) -> None:
            for i in range(40):
                store.put(NS, f"{name}{i}", {"text": f"{name} wrote memory {i}"})
                if i % 3 == 0:
                    store.delete(NS, f"{name}{i // 2}")

        writers = [threading.Thread(target=write, args=(s, n)) for s, n in ((one, "a"), (two, "b"))]
        for thread in writers:
            thread.start()
        while any(thread.is_alive() for thread in writers):
            hybrid_search(reader, NS, "memory", k=3)
        for thread in writers:
            thread.join()
        hybrid_search(reader, NS, "memory", k=3)
        (corpus,) = recall_cache(reader).corpora.values()
        assert {key for _, key in corpus.items} == {item.key for item in reader.search(NS, limit=1000)}
