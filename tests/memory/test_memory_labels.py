"""Names that LangGraph refuses as namespace labels ("Dr. Who", "john.doe") still get memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmm.memory.conversation import NO_PERSONA, SHARED, label, scope, scope_text, unlabel
from agentmm.memory.manage import add_memory, list_memories, stats
from tests.test_cli import Run, ok_json

NAMES = ["Mira", "Dr. Who", "john.doe", "...", "100%", "\x00x", "日本.語", "🐉", "a%2"]


def test_labels_are_valid_distinct_and_read_back() -> None:
    labels = [label(name) for name in NAMES]
    assert all(lab and "." not in lab and "\x00" not in lab for lab in labels)
    assert len(set(labels)) == len(NAMES)
    assert [unlabel(lab) for lab in labels] == NAMES


def test_names_that_were_valid_labels_keep_them_and_any_label_comes_back() -> None:
    """Memories written before escaping existed stay in their scope, and a label an import
    brought as it was (any valid label) is found again by the name it reads as."""
    for name in ["Mira", "Ilse Varga", "100%", "日本語", "🐉", "a%2", "_x", "%41", "%252E", "%2E",
                 "_shared", "_assistant", "%5Fshared"]:  # fmt: skip
        assert label(name) == name or "." in unlabel(name)
        assert label(unlabel(name)) == name


def test_a_dotted_persona_and_user_have_their_own_scope(vector_store) -> None:  # type: ignore[no-untyped-def]
    add_memory(vector_store, "john.doe", "Dr. Who", "the TARDIS is blue")
    add_memory(vector_store, "john.doe", None, "not the Doctor's")
    add_memory(vector_store, "john", "Dr. Who", "another user")
    rows = list_memories(vector_store, "john.doe", "Dr. Who")
    assert [r["value"]["content"] for r in rows] == ["the TARDIS is blue"]
    assert rows[0]["scope"] == "john.doe/Dr. Who"
    assert scope("john.doe", "Dr. Who") == ("memories", "john%2Edoe", "Dr%2E Who")
    assert scope_text(scope("john.doe", "Dr. Who")) == "john.doe/Dr. Who"
    assert stats(vector_store, "john.doe")["scopes"] == {"john.doe/Dr. Who": 1, f"john.doe/{NO_PERSONA}": 1}


@pytest.mark.e2e
def test_chat_as_a_dotted_persona_remembers(tmp_path: Path, agentmm_here: Run) -> None:
    """In this process (``agentmm_here``), each command a fresh ``cli.main`` that opens the store
    anew: the turns on the shipped model and embedder are the point, not the process."""
    env = {"AGENTMM_MEMORY": "true", "AGENTMM_USER_ID": "john.doe"}
    ok_json("personas", "new", "Dr. Who", "--json", env=env, via=agentmm_here)
    first = ok_json("chat", "-p", "Dr. Who", "-m", "My companion is called Rose.", "--json", "--max-tokens", "8",
                    env=env, via=agentmm_here)  # fmt: skip
    assert [r["scope"] for r in first["trace"]["remembered"]] == ["john.doe/Dr. Who"] * 2
    second = ok_json("chat", "-p", "Dr. Who", "-m", "Who is my companion?", "--json", "--max-tokens", "8", env=env,
                     via=agentmm_here)  # fmt: skip
    assert any("Rose" in r["text"] for r in second["trace"]["recalled"])
    listed = ok_json("memory", "list", "--persona", "Dr. Who", "--json", env=env, via=agentmm_here)["memories"]
    assert len(listed) == 4 and {m["scope"] for m in listed} == {"john.doe/Dr. Who"}


def test_a_persona_named_as_a_store_scope_keeps_its_own_memories() -> None:
    assert scope("ada", "_shared") != scope("ada", shared=True) and scope("ada", "_shared")[2] == "%5Fshared"
    assert scope("ada", "_assistant") != scope("ada") and scope("ada", "_assistant")[2] == "%5Fassistant"
    assert {scope("ada", shared=True)[2], scope("ada")[2]} == {SHARED, NO_PERSONA}
    assert scope_text(scope("ada", "_shared")) == "ada/%5Fshared"
    assert scope_text(scope("ada", shared=True)) == "ada/_shared"
