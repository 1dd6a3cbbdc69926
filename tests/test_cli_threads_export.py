"""`agentmm threads export ID -o FILE`: the file a chat's /save writes, from the command line,
so `threads import` can read a thread back without opening a chat."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from tests.test_cli import assert_one_line_error, ok_json
from tests.test_cli_threads import folded_thread, saved_file

Run = Callable[..., CompletedProcess[str]]


def test_threads_export_writes_what_save_writes_and_import_reads_it(tmp_path: Path, agentmm_here: Run) -> None:
    """There was no `threads export` (typer: "No such command 'export'"): only /save in a chat
    wrote the JSON `threads import` reads."""
    ok_json("threads", "import", str(saved_file(tmp_path)), "--thread", "docks", "--json", via=agentmm_here)
    out = tmp_path / "out.json"
    done = ok_json("threads", "export", "docks", "-o", str(out), "--json", via=agentmm_here)
    assert done == {"thread_id": "docks", "path": str(out), "format": "json", "messages": 4}
    doc = json.loads(out.read_text())
    assert (doc["thread_id"], doc["summary_through"], doc["window_start"]) == ("docks", 2, 2)
    assert [m["content"] for m in doc["messages"]] == [m.text for m in folded_thread()["messages"]]
    assert doc["messages"][3]["interrupted"] is True

    ok_json("threads", "import", str(out), "--thread", "again", "--json", via=agentmm_here)
    first, second = (ok_json("threads", "show", t, "--json", via=agentmm_here) for t in ("docks", "again"))
    assert second["messages"] == first["messages"]
    assert (second["summary"], second["window_start"]) == (first["summary"], first["window_start"])

    piped = agentmm_here("threads", "export", "docks")  # no -o: the same JSON on stdout
    assert piped.returncode == 0 and json.loads(piped.stdout)["messages"] == doc["messages"]
    md = agentmm_here("threads", "export", "docks", "-o", str(tmp_path / "t.md"))
    assert md.returncode == 0 and md.stdout.startswith("saved 4 messages to ")
    assert (tmp_path / "t.md").read_text().startswith("# agentmm thread docks")


def test_threads_export_refuses_in_one_line(tmp_path: Path, agentmm_here: Run) -> None:
    assert_one_line_error(agentmm_here("threads", "export", "nope", "-o", str(tmp_path / "x.json")), "unknown thread")
    assert_one_line_error(agentmm_here("threads", "export", "nope", "-o", str(tmp_path / "x.txt")), "save as .md")
    assert_one_line_error(agentmm_here("threads", "export", "nope", "--json"), "give -o")


def test_threads_show_export_and_delete_take_a_unique_prefix(tmp_path: Path, agentmm_here: Run) -> None:
    """They took full ids only ('unknown thread'), where the chat's /resume takes a prefix; a
    prefix that starts several ids, or none, is one line and deletes nothing."""
    for name in ("docks-1a", "docks-2b"):
        ok_json("threads", "import", str(saved_file(tmp_path)), "--thread", name, "--json", via=agentmm_here)
    assert ok_json("threads", "show", "docks-1", "--json", via=agentmm_here)["thread_id"] == "docks-1a"
    out = tmp_path / "out.json"
    exported = ok_json("threads", "export", "docks-2", "-o", str(out), "--json", via=agentmm_here)
    assert exported["thread_id"] == "docks-2b"
    assert json.loads(out.read_text())["thread_id"] == "docks-2b"
    for command in ("show", "export", "delete"):
        assert_one_line_error(agentmm_here("threads", command, "docks"), "'docks' starts 2 thread ids")
        assert_one_line_error(agentmm_here("threads", command, "quay"), "unknown thread 'quay'")
    assert ok_json("threads", "delete", "docks-1", "--json", via=agentmm_here) == {"deleted": "docks-1a"}
    listed = ok_json("threads", "list", "--json", via=agentmm_here)["threads"]
    assert [t["thread_id"] for t in listed] == ["docks-2b"]
