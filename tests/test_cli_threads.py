"""`/save FILE.json` keeps a thread's rolling summary and window; `agentmm threads import` makes
a new thread of such a file, all of it or nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from agentmm.graphs.chat import build_graph
from agentmm.repl.transcript import save, transcript
from agentmm.settings import load_settings
from agentmm.threads import (
    import_thread,
    imported_values,
    open_checkpointer,
    read_saved_thread,
    thread_exists,
    thread_values,
)
from tests.test_cli import assert_one_line_error, ok_json

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


def test_threads_import_makes_the_saved_thread_again(tmp_path: Path, agentmm_here: Any) -> None:
    imported = ok_json("threads", "import", str(saved_file(tmp_path)), "--thread", "docks", "--json")
    assert imported == {"imported": "docks", "file": str(tmp_path / "saved.json"), "messages": 4}
    shown = ok_json("threads", "show", "docks", "--json", via=agentmm_here)
    assert [m["content"] for m in shown["messages"]] == [m.text for m in folded_thread()["messages"]]
    assert shown["messages"][3]["interrupted"] is True
    assert (shown["summary"], shown["summary_through"], shown["window_start"]) == (SUMMARY, 2, 2)
    assert shown["turns"] == 2

    again = agentmm_here("threads", "import", str(tmp_path / "saved.json"), "--thread", "docks")
    assert_one_line_error(again, "thread 'docks' exists")
    assert ok_json("threads", "show", "docks", "--json", via=agentmm_here)["messages"] == shown["messages"]  # untouched
    plain = agentmm_here("threads", "import", str(tmp_path / "saved.json"))  # a new id of its own
    assert plain.returncode == 0 and plain.stdout.startswith("imported 4 messages as thread ")
    assert len(ok_json("threads", "list", "--json", via=agentmm_here)["threads"]) == 2


def tool_thread() -> dict[str, Any]:
    """A thread opened with a persona's second greeting, whose second turn called two tools
    (one call that did not parse, one result an error) before it answered."""
    asks = AIMessage("Let me roll.", tool_calls=[{"name": "roll_dice", "args": {"sides": 20}, "id": "call_1"},
                                                 {"name": "clock", "args": {}, "id": "call_2"}],
                     invalid_tool_calls=[{"name": "roll_dice", "args": "{sides", "id": "call_3",
                                          "error": "not JSON", "type": "invalid_tool_call"}])  # fmt: skip
    messages = [AIMessage("Ahoy.", response_metadata={"greeting": 2}), HumanMessage("Roll for me."), asks,
                ToolMessage("17", tool_call_id="call_1", name="roll_dice"),
                ToolMessage("error: no clock", tool_call_id="call_2", name="clock", status="error"),
                ToolMessage("error: malformed tool call", tool_call_id="call_3", name="roll_dice", status="error"),
                AIMessage("A seventeen.")]  # fmt: skip
    return {"messages": messages}


def test_a_thread_that_called_tools_is_saved_and_imported_whole(isolated_env: Path, tmp_path: Path) -> None:
    """/save FILE.json kept no tool calls, so threads import refused such a thread ("role
    'tool'"), and a greeting came back as greeting 0 whichever it was."""
    path = tmp_path / "tools.json"
    save(path, transcript("abc", tool_thread(), model="smollm2", user_name="User"))
    assert ok_json("threads", "import", str(path), "--thread", "dice", "--json")["messages"] == 7
    saver = open_checkpointer(isolated_env / "data")
    imported = thread_values(saver, "dice")[0]["messages"]
    saver.conn.close()
    assert [m.model_dump(exclude={"id"}) for m in imported] == [
        m.model_dump(exclude={"id"}) for m in tool_thread()["messages"]
    ]


def test_threads_show_json_has_the_tool_calls_save_keeps(tmp_path: Path, agentmm_here: Any) -> None:
    """``threads show --json`` gave a tool-calling reply as its text alone and a tool result
    without its call id or tool: only ``/save``'s file had the calls. It gives each message's
    tool keys as the file does (one writer, ``threads.message_dict``), the rest as before."""
    path = tmp_path / "tools.json"
    save(path, transcript("abc", tool_thread(), model="smollm2", user_name="User"))
    ok_json("threads", "import", str(path), "--thread", "dice", "--json", via=agentmm_here)
    shown = ok_json("threads", "show", "dice", "--json", via=agentmm_here)["messages"]
    asks, rolled, no_clock = shown[2], shown[3], shown[4]
    assert asks["tool_calls"] == [{"name": "roll_dice", "args": {"sides": 20}, "id": "call_1"},
                                  {"name": "clock", "args": {}, "id": "call_2"}]  # fmt: skip
    assert asks["invalid_tool_calls"] == [{"name": "roll_dice", "args": "{sides", "id": "call_3", "error": "not JSON"}]
    assert rolled == {"role": "tool", "content": "17", "tool_call_id": "call_1", "name": "roll_dice"}
    assert no_clock == {"role": "tool", "content": "error: no clock", "tool_call_id": "call_2", "name": "clock",
                        "status": "error"}  # fmt: skip
    text = agentmm_here("threads", "show", "dice").stdout.splitlines()
    # The text form too: a reply that called tools was 'assistant> Let me roll.' alone.
    assert text[3] == ("assistant> Let me roll. [tool roll_dice(sides=20)] [tool clock()] [tool roll_dice({sides)]")
    assert text[4] == "tool roll_dice> 17"
    saved = json.loads(path.read_text())["messages"]
    left_out = {"greeting", "greeting_index", "no_reply"}  # the file's own keys, for threads import
    assert shown == [{key: value for key, value in row.items() if key not in left_out} for row in saved]
    assert shown[0] == {"role": "assistant", "content": "Ahoy."}
    assert shown[-1] == {"role": "assistant", "content": "A seventeen."}


def test_the_lore_timers_are_saved_and_imported(isolated_env: Path, tmp_path: Path) -> None:
    """/save FILE.json and threads import left out the lorebook's sticky and cooldown timers
    (``lore_timers``): an imported thread started them all afresh."""
    timers = {
        "sticky": {"3f1c0a9e2b7d4c58": {"entry": "the ring", "start": 2, "end": 7, "protected": False}},
        "cooldown": {"3f1c0a9e2b7d4c58": {"entry": "the ring", "start": 4, "end": 9, "protected": True}},
    }
    path = tmp_path / "timed.json"
    save(path, transcript("abc", {**folded_thread(), "lore_timers": timers}, model="smollm2", user_name="User"))
    assert json.loads(path.read_text())["lore_timers"] == timers
    assert ok_json("threads", "import", str(path), "--thread", "timed", "--json")["messages"] == 4
    saver = open_checkpointer(isolated_env / "data")
    values = thread_values(saver, "timed")[0]
    saver.conn.close()
    assert values["lore_timers"] == timers
    assert transcript("x", folded_thread(), model="m", user_name="U")["lore_timers"] == {}  # none running


def test_a_no_reply_line_is_saved_and_imported_as_one(tmp_path: Path) -> None:
    """/save FILE.json kept no ``no_reply`` mark: imported, the line said when the model gave no
    reply twice was an ordinary reply, the character's words in later prompts and summaries."""
    from agentmm.graphs.chat import COPIED_MEMORY, NO_REPLY, _no_reply

    thread = {"messages": [HumanMessage("Hi."), _no_reply(AIMessage(""), COPIED_MEMORY)]}
    path = tmp_path / "cut.json"
    save(path, transcript("abc", thread, model="smollm2", user_name="User"))
    row = json.loads(path.read_text())["messages"][1]
    assert (row["content"], row["no_reply"]) == (NO_REPLY[COPIED_MEMORY], COPIED_MEMORY)
    imported = read_saved_thread(path)["messages"][1]
    assert (imported.text, imported.response_metadata) == (NO_REPLY[COPIED_MEMORY], {"no_reply": COPIED_MEMORY})


def test_a_file_saved_before_greeting_index_imports_its_greeting_as_the_first(tmp_path: Path) -> None:
    doc = transcript("abc", tool_thread(), model="smollm2", user_name="User")
    del doc["messages"][0]["greeting_index"]
    assert imported_values(doc, "f")["messages"][0].response_metadata == {"greeting": 0}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not JSON"),
        ('{"messages": []}', "no messages"),
        ('{"thread_id": "x"}', 'no "messages" list'),
        (
            '{"messages": [{"role": "system", "content": "42"}, {"role": "assistant", "content": "ok"}]}',
            "role 'system'",
        ),
        ('{"messages": [{"role": "tool", "content": "42"}, {"role": "assistant", "content": "ok"}]}', "tool_call_id"),
        (
            '{"messages": [' + EXCHANGE + ', {"role": "tool", "content": "4", "tool_call_id": "c1", "name": "dice"},'
            ' {"role": "assistant", "content": "ok"}]}',
            "call 'c1', which the reply before it did not make",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "",'
            ' "tool_calls": [{"name": "dice", "args": {}, "id": "c1"}]}]}',
            "ends with a reply",
        ),
        ('{"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "yo"}]}', "ends with a"),
        (
            '{"messages": [' + EXCHANGE + '], "window_start": 3}',
            "do not fit its 2 messages",
        ),
        ('{"messages": [' + EXCHANGE + '], "lore_timers": []}', '"lore_timers" is not an object'),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "no_reply": 1}]}',
            '"no_reply" is not a reason',
        ),
        (
            '{"messages": [' + EXCHANGE + '], "persona": "Nobody"}',
            "Nobody",
        ),
        # A tool call never answered, answered twice, or answered as another tool: no turn makes
        # such a thread (it was imported). A greeting beyond the persona's, or one mid-thread.
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "",'
            ' "tool_calls": [{"name": "dice", "args": {}, "id": "c1"}]}, {"role": "assistant", "content": "ok"}]}',
            "message 2 makes tool call 'c1', which no result after it answers",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "",'
            ' "tool_calls": [{"name": "dice", "args": {}, "id": "c1"}]},'
            ' {"role": "tool", "content": "4", "tool_call_id": "c1", "name": "dice"},'
            ' {"role": "tool", "content": "5", "tool_call_id": "c1", "name": "dice"},'
            ' {"role": "assistant", "content": "ok"}]}',
            "message 4 answers call 'c1' again",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "",'
            ' "tool_calls": [{"name": "dice", "args": {}, "id": "c1"}]},'
            ' {"role": "tool", "content": "4", "tool_call_id": "c1", "name": "clock"},'
            ' {"role": "assistant", "content": "ok"}]}',
            "message 3 answers call 'c1' as 'clock', but that call was to 'dice'",
        ),
        (
            '{"messages": [{"role": "assistant", "content": "Ahoy.", "greeting": true, "greeting_index": 5}, '
            + EXCHANGE
            + '], "persona": "Nora Quill"}',
            "opens with greeting 5, but Nora Quill has 2 greetings (0 to 1)",
        ),
        (
            '{"messages": [' + EXCHANGE + ', {"role": "assistant", "content": "Ahoy.", "greeting": true}]}',
            "message 3 is a greeting, which only opens a thread",
        ),
        (
            '{"messages": [' + EXCHANGE + ', {"role": "user", "content": "c"},'
            ' {"role": "assistant", "content": [{"type": "text", "text": "d"}]}]}',
            "message 4 has content that is a list, not text",
        ),
    ],
)
def test_a_file_that_is_no_saved_thread_is_one_line_and_no_thread(
    tmp_path: Path, content: str, needle: str, agentmm_here: Any
) -> None:
    """In this process (``agentmm_here``): the line is the point, not the process; the first
    import above runs the CLI in a process of its own."""
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert_one_line_error(agentmm_here("threads", "import", str(path), "--thread", "t"), needle)
    assert ok_json("threads", "list", "--json", via=agentmm_here)["threads"] == []


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
