"""`/save FILE.json` keeps a thread's rolling summary and window; `agentmm threads import` makes
a new thread of such a file, all of it or nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage

from agentmm.graphs.chat import build_graph
from agentmm.repl.transcript import save, transcript
from agentmm.settings import load_settings
from agentmm.threads import import_thread, imported_values, open_checkpointer, thread_exists
from tests.test_cli import agentmm, assert_one_line_error, ok_json

EXCHANGE = '{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}'
SUMMARY = "User met Nora at the docks and asked about the Castellane ring."


def folded_thread() -> dict[str, Any]:
    """A thread's values after the summary took in its first exchange."""
    stopped = AIMessage("Fog and liars.", response_metadata={"interrupted": True})
    messages = [HumanMessage("Who took the ring?"), AIMessage("Ask the Castellanes."), HumanMessage("And the docks?"),
                stopped]  # fmt: skip
    return {"messages": messages, "summary": SUMMARY, "summary_through": 2, "window_start": 2,
            "system_prompt": "You are terse.\n\nSummary: ...", "base_prompt": "You are terse.",
            "started_at": "2026-01-02T03:04:05+00:00"}  # fmt: skip


def saved_file(tmp_path: Path, **changes: Any) -> Path:
    doc = {**transcript("abc123", folded_thread(), model="smollm2", user_name="User"), **changes}
    path = tmp_path / "saved.json"
    save(path, doc)
    return path


def test_save_json_keeps_the_summary_and_window(tmp_path: Path) -> None:
    """/save FILE.json wrote the messages only: the rolling summary of the turns before the
    window, and where the window starts, were lost."""
    saved = json.loads(saved_file(tmp_path).read_text())
    assert saved["summary"] == SUMMARY
    assert (saved["summary_through"], saved["window_start"]) == (2, 2)
    assert saved["base_prompt"] == "You are terse." and saved["started_at"] == "2026-01-02T03:04:05+00:00"
    assert saved["system_prompt"] == "You are terse.\n\nSummary: ..."


def test_threads_import_makes_the_saved_thread_again(tmp_path: Path) -> None:
    imported = ok_json("threads", "import", str(saved_file(tmp_path)), "--thread", "docks", "--json")
    assert imported == {"imported": "docks", "file": str(tmp_path / "saved.json"), "messages": 4}
    shown = ok_json("threads", "show", "docks", "--json")
    assert [m["content"] for m in shown["messages"]] == [m.text for m in folded_thread()["messages"]]
    assert shown["messages"][3]["interrupted"] is True
    assert (shown["summary"], shown["summary_through"], shown["window_start"]) == (SUMMARY, 2, 2)
    assert shown["turns"] == 2

    again = agentmm("threads", "import", str(tmp_path / "saved.json"), "--thread", "docks")
    assert_one_line_error(again, "thread 'docks' exists")
    assert ok_json("threads", "show", "docks", "--json")["messages"] == shown["messages"]  # untouched
    plain = agentmm("threads", "import", str(tmp_path / "saved.json"))  # a new id of its own
    assert plain.returncode == 0 and plain.stdout.startswith("imported 4 messages as thread ")
    assert len(ok_json("threads", "list", "--json")["threads"]) == 2


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not JSON"),
        ('{"messages": []}', "no messages"),
        ('{"thread_id": "x"}', 'no "messages" list'),
        ('{"messages": [{"role": "tool", "content": "42"}, {"role": "assistant", "content": "ok"}]}', "role 'tool'"),
        ('{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "yo"}]}', "ends with a"),
        (
            '{"messages": [' + EXCHANGE + '], "window_start": 3}',
            "do not fit its 2 messages",
        ),
        (
            '{"messages": [' + EXCHANGE + '], "persona": "Nobody"}',
            "Nobody",
        ),
    ],
)
def test_a_file_that_is_no_saved_thread_is_one_line_and_no_thread(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert_one_line_error(agentmm("threads", "import", str(path), "--thread", "t"), needle)
    assert ok_json("threads", "list", "--json")["threads"] == []


def test_a_write_that_fails_halfway_leaves_no_thread(isolated_env: Path) -> None:
    saver = open_checkpointer(isolated_env / "data")
    graph = build_graph(load_settings(), model=FakeListChatModel(responses=[""]), checkpointer=saver, tools=[])
    write = graph.bulk_update_state

    def first_step_then_fail(config: Any, steps: Any) -> Any:
        write(config, steps[:1])
        assert thread_exists(saver, "half")
        raise OSError(28, "No space left on device")

    graph.bulk_update_state = first_step_then_fail  # type: ignore[method-assign]
    with pytest.raises(OSError, match="No space"):
        import_thread(graph, "half", imported_values(transcript("x", folded_thread(), model="m", user_name="U"), "f"))
    assert not thread_exists(saver, "half")
