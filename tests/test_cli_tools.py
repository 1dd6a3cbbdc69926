"""`agentmm tools list` and the chat flags for tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentmm.cli import _approver
from tests.test_cli import agentmm, assert_one_line_error, ok_json

TAROT = '''
from langchain_core.tools import tool


@tool
def draw_tarot() -> str:
    """Draw one tarot card."""
    return "The Tower"


draw_tarot.metadata = {"requires_approval": True}
'''


def test_tools_list_shows_sources_personas_and_problems(isolated_env: Path) -> None:
    folder = isolated_env / "tools"
    folder.mkdir()
    (folder / "tarot.py").write_text(TAROT)
    (folder / "broken.py").write_text("import no_such_module_here\n")
    data = ok_json("tools", "list", "--json", env={"AGENTMM_TOOLS": '["roll_dice"]'})
    tools = {t["name"]: t for t in data["tools"]}
    assert tools["roll_dice"] == {
        "name": "roll_dice",
        "description": "Roll dice: NdS is N dice of S sides (3d8), kh/kl keeps the highest/lowest (4d6kh3), +/- adds "
        "a modifier.",
        "source": "agentmm",
        "enabled": True,
        "requires_approval": False,
        "personas": ["Bram Tolliver"],
    }
    assert tools["draw_tarot"]["source"] == str(folder / "tarot.py") and tools["draw_tarot"]["requires_approval"]
    (problem,) = data["problems"]
    assert "broken.py: ModuleNotFoundError: No module named 'no_such_module_here'" in problem
    table = agentmm("tools", "list")
    assert table.returncode == 0 and "draw_tarot" in table.stdout
    assert "skipped a plugin" in table.stderr


def test_a_tools_file_raising_keyboard_interrupt_is_one_line_in_tools_list(
    isolated_env: Path, agentmm_here: Any
) -> None:
    """It made ``tools list`` (and ``--json``) exit 130 printing nothing."""
    folder = isolated_env / "tools"
    folder.mkdir()
    (folder / "tarot.py").write_text(TAROT)
    (folder / "zz_kb.py").write_text("raise KeyboardInterrupt\n")
    listed = agentmm_here("tools", "list", "--json")
    assert listed.returncode == 0
    data = json.loads(listed.stdout)
    assert "draw_tarot" in {t["name"] for t in data["tools"]}
    assert data["problems"] == [f"{folder / 'zz_kb.py'}: KeyboardInterrupt"]
    table = agentmm_here("tools", "list")
    assert table.returncode == 0 and "draw_tarot" in table.stdout and "zz_kb.py: KeyboardInterrupt" in table.stderr


def test_unknown_tool_is_one_line_before_anything_loads(isolated_env: Path) -> None:
    assert_one_line_error(agentmm("chat", "-m", "hi", "--tool", "lockpick"), "unknown tool 'lockpick'")


def test_one_turn_approver(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The denied call is written as a piped chat writes it: ``-m`` wrote ``boom({"x": "]["})``,
    the chat ``boom(x='][')``."""
    request = {"tool": "draw_tarot", "args": {"x": "]["}, "id": "c1"}
    assert _approver(yes=True)(request) is True
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert _approver(yes=False)(request) is False
    assert capsys.readouterr().err == (
        "agentmm: note: denied tool call draw_tarot(x='][') (nobody to ask; pass --yes to allow)\n"
    )


def test_what_a_tools_file_prints_goes_to_stderr_so_json_stays_one_object(isolated_env: Path) -> None:
    folder = isolated_env / "tools"
    folder.mkdir()
    (folder / "noisy.py").write_text('print("HELLO FROM IMPORT")\n' + TAROT)
    done = agentmm("tools", "list", "--json")
    assert done.returncode == 0 and "HELLO FROM IMPORT" in done.stderr
    assert "draw_tarot" in {t["name"] for t in json.loads(done.stdout)["tools"]}
    shown = agentmm("tools", "list")  # without --json, stdout is as it was
    assert "HELLO FROM IMPORT" in shown.stdout


NOISY_AT_FD_LEVEL = '''
import os, sys, time

from langchain_core.tools import tool

os.write(1, b"RAW AT IMPORT\\n")
sys.__stdout__.write("DUNDER AT IMPORT\\n")  # no flush: left in the buffer of the stream on fd 1


@tool
def noisy() -> str:
    """Write to file descriptor 1 itself, then never return."""
    os.write(1, b"RAW IN THE TOOL\\n")
    time.sleep(100_000)
    return "never"
'''

# `agentmm chat` through the real entry point, its model a script that calls the tool `noisy`.
SCRIPTED_CHAT = """
import sys
from langchain_core.messages import AIMessage
import agentmm.model_server
from tests.graphs.scripted_model import ScriptedToolModel

call = AIMessage("", tool_calls=[{"name": "noisy", "args": {}, "id": "c1", "type": "tool_call"}])
agentmm.model_server.chat_model = lambda settings, runtime=None: ScriptedToolModel(script=[call, AIMessage("Done.")])
from agentmm.cli import main

sys.argv = ["agentmm", *sys.argv[1:]]
main()
"""


def test_writes_to_file_descriptor_1_go_to_stderr_so_json_stays_one_object(isolated_env: Path) -> None:
    """print() was sent to stderr, but os.write(1, ...) and sys.__stdout__ reached stdout before the object."""
    import os
    import subprocess
    import sys

    folder = isolated_env / "tools"
    folder.mkdir()
    (folder / "noisy.py").write_text(NOISY_AT_FD_LEVEL)
    listed = agentmm("tools", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "noisy" in {t["name"] for t in json.loads(listed.stdout)["tools"]}
    assert "RAW AT IMPORT" in listed.stderr and "DUNDER AT IMPORT" in listed.stderr

    # A tool given up on still runs: the CLI leaves by os._exit, and the object must be out by then.
    done = subprocess.run(
        [sys.executable, "-c", SCRIPTED_CHAT, "chat", "-m", "make noise", "--tool", "noisy", "--json"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1],
        env={**os.environ, "AGENTMM_TOOL_TIMEOUT_S": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    turn = json.loads(done.stdout)
    assert turn["reply"] == "Done." and turn["trace"]["tool_calls"][0]["name"] == "noisy"
    assert "RAW IN THE TOOL" in done.stderr and "RAW AT IMPORT" in done.stderr
    shown = agentmm("tools", "list")  # without --json, stdout is as it was
    assert "RAW AT IMPORT" in shown.stdout and "DUNDER AT IMPORT" in shown.stdout


def test_json_output_that_cannot_be_written_is_quiet_for_a_gone_reader_one_line_otherwise(isolated_env: Path) -> None:
    """`| head -c 0` and `> /dev/full` gave a four-deep traceback; with stderr closed (2>&-) the
    object never reached stdout."""
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "agentmm.cli", "personas", "list", "--json"]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the object is written
    try:
        gone = subprocess.run(command, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert gone.returncode == 1 and gone.stderr == ""
    with open("/dev/full", "w") as full:
        no_room = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert no_room.returncode == 1 and "Traceback" not in no_room.stderr
    assert no_room.stderr.strip().splitlines() == ["agentmm: error: cannot write the output: No space left on device"]
    closed = subprocess.run(command, capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.close(2))
    assert closed.returncode == 0 and json.loads(closed.stdout)["personas"]


# `agentmm chat` through the real entry point, its model a script whose reply holds escape sequences.
ESCAPING_CHAT = """
import sys
from langchain_core.messages import AIMessage
import agentmm.model_server
from tests.graphs.scripted_model import ScriptedToolModel

reply = AIMessage("\\x1b]0;PWNED\\x07Plain \\x1b[31mred\\x1b[0m \\x1b[1A\\x1b[2Kend \\u2192 \\u05e7")
agentmm.model_server.chat_model = lambda settings, runtime=None: ScriptedToolModel(script=[reply])
from agentmm.cli import main

sys.argv = ["agentmm", *sys.argv[1:]]
main()
"""


def test_a_reply_reaches_the_terminal_without_escape_sequences_and_in_any_locale(isolated_env: Path) -> None:
    """chat -m wrote a reply's escape sequences raw (a window title, an erased line), and a
    character a Latin-1 terminal lacks ended the command after the turn was saved."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", ESCAPING_CHAT, "chat", "-m", "hi"], capture_output=True, timeout=120,
        cwd=Path(__file__).parents[1], env={**os.environ, "PYTHONIOENCODING": "latin-1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode("latin-1").strip() == "Plain red end ? ?"
    assert b"[thread " in done.stderr
    latin = {**os.environ, "PYTHONIOENCODING": "latin-1", "COLUMNS": "60"}
    listed = subprocess.run([sys.executable, "-m", "agentmm.cli", "personas", "list"], capture_output=True,
                            timeout=120, env=latin)  # fmt: skip
    assert listed.returncode == 0 and b"Traceback" not in listed.stderr


def test_a_piped_chat_whose_reader_has_gone_ends_quietly(isolated_env: Path) -> None:
    """`agentmm chat | head -1` said 'agentmm: error: Broken pipe' once a line, and went on."""
    import os
    import subprocess
    import sys

    script = ESCAPING_CHAT.replace("script=[reply]", "script=[reply, reply, reply]")
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-c", script, "chat"], input=b"hi\nagain\nand again\n", stdout=write,
                              stderr=subprocess.PIPE, timeout=120, cwd=Path(__file__).parents[1])  # fmt: skip
    finally:
        os.close(write)
    assert done.returncode == 1 and b"Broken pipe" not in done.stderr and b"Traceback" not in done.stderr, done.stderr
