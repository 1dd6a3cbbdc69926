"""``agentmm memory``'s tables, fast: the CLI's rendering in-process (the commands end to end, on
a real store, are in test_cli.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from agentmm import cli

LONG = "Mira likes green tea and her birthday is on 3 March, which she told the whole crew about. " * 2
ROWS = [
    {"id": "0a1b2c3d4e5f:12:assistant", "scope": "local/Nora Quill",
     "value": {"content": LONG, "when": "2025-01-02T10:11:12+00:00"}},
    {"id": "note:0123456789ab", "scope": "local", "value": {"content": "short", "when": "2025-01-02T10:11:12+00:00"}},
]  # fmt: skip


@pytest.mark.parametrize("scored", [False, True], ids=["list", "search"])
def test_ids_are_never_cut_at_80_columns(
    scored: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``memory forget ID`` takes the whole id: at 80 columns the table showed ``0a1b2c3d4e5f:…``."""
    monkeypatch.setenv("COLUMNS", "80")
    rows = [{**row, "score": 0.5} for row in ROWS] if scored else ROWS
    cli._print_memories(rows, False)
    shown = capsys.readouterr().out
    assert max(map(len, shown.splitlines())) <= 80
    firsts = [line.split("│")[1].strip() for line in shown.splitlines() if line.startswith("│ 0a1b") or "note:" in line]
    assert firsts == ["0a1b2c3d4e5f:12:assistant", "note:0123456789ab"]
    assert "0.5000" in shown if scored else "score" not in shown
    assert "2025-01-02" in shown and "10:11:12" in shown  # the time wraps under the day, never cut


def test_thread_ids_and_model_names_are_never_cut_in_a_narrow_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """At 40 columns threads list showed '3a4e10…' and models list 'smol…': the names typed back."""
    from agentmm.threads import ThreadSummary

    monkeypatch.setenv("COLUMNS", "40")
    thread = ThreadSummary(thread_id="3a4e10c2d9f1", messages=2, turns=1, updated_at="2026-12-07T12:00:00+00:00",
                           title="a long first message that will have to give way")  # fmt: skip
    monkeypatch.setattr("agentmm.threads.list_threads", lambda saver: [thread])
    monkeypatch.setattr(cli, "_checkpointer", lambda: None)
    cli.threads_list(as_json=False)
    assert "│ 3a4e10c2d9f1 │" in capsys.readouterr().out


@pytest.mark.parametrize("columns", [30, 40, 60])
@pytest.mark.parametrize("scored", [False, True], ids=["list", "search"])
def test_a_terminal_too_narrow_for_the_table_gets_each_memory_whole(
    columns: int, scored: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Below ~40 columns the table shrank every column but the id to nothing (no scope, time or
    text left); each memory is a block now: its id whole on a line, then scope, time, score and
    the whole text wrapped to the width."""
    monkeypatch.setenv("COLUMNS", str(columns))
    real_id = "3f2a9c0d1b7e4a6c8d0e2f4a6b8c0d1e:12:assistant"  # as long as a turn's memory id is
    rows = [{**ROWS[0], "id": real_id}, ROWS[1]]
    rows = [{**row, "score": 0.5} for row in rows] if scored else rows
    cli._print_memories(rows, False)
    lines = capsys.readouterr().out.splitlines()
    assert real_id in lines and "note:0123456789ab" in lines
    assert all(len(line) <= columns for line in lines if line not in (real_id,))
    words = " ".join(line.strip() for line in lines).split()
    assert " ".join(words).count(" ".join(LONG.split())) == 1  # the whole text, once, in order
    facts = "local/Nora Quill · 2025-01-02 10:11:12" + (" · score 0.5000" if scored else "")
    assert " ".join(facts.split()) in " ".join(words)
    assert all(line == line.rstrip() for line in lines)


def test_memory_search_refuses_k_below_one_as_images_search_does(agentmm_here: Callable[..., Any]) -> None:
    """``memory search x -k 0`` printed "no memories" and exited 0; ``images search`` refuses it."""
    done = agentmm_here("memory", "search", "x", "-k", "0")
    assert done.returncode == 2
    assert done.stderr.strip() == "agentmm: error: -k must be at least 1, not 0"
    assert done.stdout == ""


def test_memory_add_refuses_persona_and_shared_together(agentmm_here: Callable[..., Any]) -> None:
    """README writes them as alternatives, ``[--persona P | --shared]``: the note went to the
    shared scope and ``--persona`` was dropped without a word. Nothing is written."""
    done = agentmm_here("memory", "add", "x", "--shared", "--persona", "Nora")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentmm: error: --persona and --shared are alternatives")
    assert "remembered" not in done.stdout
    listed = agentmm_here("memory", "list", "--json")
    assert json.loads(listed.stdout) == {"memories": []}


def test_add_memory_refuses_a_persona_with_shared() -> None:
    """The library (and ``POST /memories``) as the CLI: a persona and shared are alternatives."""
    from langgraph.store.memory import InMemoryStore

    from agentmm.memory.errors import MemoryStoreError
    from agentmm.memory.manage import add_memory

    store = InMemoryStore()
    with pytest.raises(MemoryStoreError, match="not both"):
        add_memory(store, "local", "Nora", "x", shared=True)
    assert store.search(("memories",)) == []


def test_add_memory_stores_a_long_text_in_pieces_as_a_chat_turn_is() -> None:
    """A 100,000-character note was one memory (``memory list`` printed 6,682 lines of it), one no
    recall could place; a chat message is cut into pieces of a quarter of recall's cap."""
    from langgraph.store.memory import InMemoryStore

    from agentmm.memory.manage import add_memory
    from agentmm.tokens import approximate_tokens

    store = InMemoryStore()
    sentence = "Mira keeps bees on the roof of the old mill and sells the honey in March. "
    text = (sentence * 40).strip()
    row = add_memory(store, "ada", None, text, max_tokens=200)
    items = {item.key: item.value for item in store.search(("memories", "ada"), limit=1000)}
    assert len(row["pieces"]) > 1 and set(row["pieces"]) == set(items)
    assert row["id"] == row["pieces"][0] and row["pieces"][1] == f"{row['id']}:2"
    contents = [items[key]["content"] for key in row["pieces"]]
    assert all(approximate_tokens(piece) <= 50 for piece in contents)
    assert " ".join(contents) == text  # cut between sentences, nothing lost
    assert {value["role"] for value in items.values()} == {"note"}
    short = add_memory(store, "ada", None, "Mira likes tea.", max_tokens=200)
    assert short["pieces"] == [short["id"]]


def test_memory_add_says_it_stored_a_long_text_in_pieces(agentmm_here: Callable[..., Any]) -> None:
    text = ("Mira keeps bees on the roof of the old mill and sells the honey in March. " * 12).strip()
    done = agentmm_here("memory", "add", text)
    assert done.returncode == 0, done.stderr
    said = done.stdout.strip()
    assert said.startswith("remembered note:") and " in 6 pieces (" in said and "memory_max_tokens 200" in said
    listed = json.loads(agentmm_here("memory", "list", "--json").stdout)["memories"]
    assert len(listed) == 6 and max(len(m["value"]["content"]) for m in listed) <= 50 * 3.5


def test_forgetting_a_note_forgets_every_piece_and_a_piece_id_that_piece_only() -> None:
    """``note:ID`` is how ``memory add`` names a note stored in pieces; forgetting it forgot the
    first of 35 and the other 34 were still recalled."""
    from langgraph.store.memory import InMemoryStore

    from agentmm.memory.manage import PIECE_PAGE, MemoryNotFoundError, add_memory, forget, forgot_line

    store = InMemoryStore()
    sentence = "Mira keeps bees on the roof of the old mill and sells the honey in March."
    # More pieces than one batch of look-ups (PIECE_PAGE) holds.
    note = add_memory(store, "ada", None, " ".join(f"{sentence} ({n})" for n in range(240)), max_tokens=200)
    kept = add_memory(store, "ada", None, "Mira likes tea.", max_tokens=200)
    other = add_memory(store, "ada", None, " ".join([sentence] * 12), max_tokens=200)

    def keys() -> set[str]:
        return {item.key for item in store.search(("memories", "ada"), limit=1000)}

    assert len(note["pieces"]) > PIECE_PAGE
    piece = forget(store, "ada", None, f"{note['id']}:5")
    assert piece["id"] == f"{note['id']}:5" and piece["pieces"] == [piece["id"]]
    assert forgot_line(piece) == f"forgot {note['id']}:5"
    whole = forget(store, "ada", None, note["id"])  # the gap at :5 hides none after it
    assert whole["id"] == note["id"] and whole["pieces"] == [k for k in note["pieces"] if k != piece["id"]]
    count, last = len(note["pieces"]) - 1, note["pieces"][-1]
    assert forgot_line(whole) == f"forgot {note['id']} in {count} pieces ({note['id']} to {last})"
    assert keys() == {kept["id"], *other["pieces"]}
    # Pieces an earlier forget of the first one left behind go when it is named again.
    store.delete(("memories", "ada", "_assistant"), other["id"])
    left = forget(store, "ada", None, other["id"])
    assert left["pieces"] == other["pieces"][1:] and keys() == {kept["id"]}
    with pytest.raises(MemoryNotFoundError):
        forget(store, "ada", None, other["id"])
    assert forget(store, "ada", None, kept["id"])["pieces"] == [kept["id"]] and keys() == set()


def test_memory_forget_forgets_a_note_s_pieces_and_says_how_many(agentmm_here: Callable[..., Any]) -> None:
    text = ("Mira keeps bees on the roof of the old mill and sells the honey in March. " * 12).strip()
    added = json.loads(agentmm_here("memory", "add", text, "--json").stdout)
    assert len(added["pieces"]) == 6
    done = agentmm_here("memory", "forget", added["id"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"forgot {added['id']} in 6 pieces ({added['id']} to {added['id']}:6)\n"
    assert json.loads(agentmm_here("memory", "list", "--json").stdout) == {"memories": []}
    again = json.loads(agentmm_here("memory", "add", text, "--json").stdout)
    forgot = json.loads(agentmm_here("memory", "forget", f"{again['id']}:2", "--json").stdout)["forgotten"]
    assert forgot["id"] == f"{again['id']}:2" and forgot["pieces"] == [forgot["id"]]
    listed = json.loads(agentmm_here("memory", "list", "--json").stdout)["memories"]
    assert sorted(m["id"] for m in listed) == sorted(set(again["pieces"]) - {forgot["id"]})


def test_a_note_over_the_cap_is_refused_before_anything_is_written(agentmm_here: Callable[..., Any]) -> None:
    """A 1 MB note was stored as 6,364 memories; over ``MAX_NOTE_CHARS`` one line says why not."""
    from langgraph.store.memory import InMemoryStore

    from agentmm.memory.manage import MAX_NOTE_CHARS, NoteTooLongError, add_memory

    store = InMemoryStore()
    text = "Mira keeps bees. " * (MAX_NOTE_CHARS // 17 + 1)
    with pytest.raises(NoteTooLongError, match=f"{len(text):,} characters, over the {MAX_NOTE_CHARS:,}"):
        add_memory(store, "ada", None, text, max_tokens=200)
    assert store.search(("memories",)) == []
    done = agentmm_here("memory", "add", text)
    assert done.returncode != 0 and "remembered" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"agentmm: error: the note is {len(text):,} characters")
    assert json.loads(agentmm_here("memory", "list", "--json").stdout) == {"memories": []}
