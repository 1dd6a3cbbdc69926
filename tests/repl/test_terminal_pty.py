"""The chat's terminal in a real pseudo-terminal, without a model: a child process drives
``Terminal`` (or a ``ChatSession`` on a fake model) as the chat does, and what it writes is played
through ``tests.repl.screen`` to see what a person sees. Like a real terminal, the test answers
the line editor's cursor position requests (CPR), which change how it draws."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.repl.screen import Screen

pexpect = pytest.importorskip("pexpect")
pytest.importorskip("prompt_toolkit")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(code: str, *, keys: dict[str, str] | None = None, term: str = "xterm-256color", width: int = 60,
        env: dict[str, str] | None = None) -> str:  # fmt: skip
    """What ``code`` wrote to a ``width``-column terminal; ``keys``: once the text so far holds
    a key of it, its value is typed."""
    child = pexpect.spawn(sys.executable, ["-c", textwrap.dedent(code)], dimensions=(24, width), encoding="utf-8",
                          env={**os.environ, "TERM": term, **(env or {})}, cwd=ROOT)  # fmt: skip
    child.delaybeforesend = None
    pending, out = dict(keys or {}), ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            got = child.read_nonblocking(4096, timeout=0.2)
        except pexpect.TIMEOUT:
            got = ""
        except pexpect.EOF:
            break
        if "\x1b[6n" in got:
            child.send("\x1b[5;1R")  # the cursor's row and column, as a terminal answers
        out += got
        for wait in [w for w in pending if w in out]:
            time.sleep(0.3)
            child.send(pending.pop(wait))
    else:
        child.terminate(force=True)
        pytest.fail(f"the child did not finish: {out[-2000:]!r}")
    child.close()
    assert child.exitstatus == 0, out
    return out


def test_the_tool_question_and_its_answer_stay_whole_on_the_screen() -> None:
    """The y/N box was drawn from the start of the row, over the question: the answer typed
    landed inside the question, and only `` [y/N] y`` stayed in the scrollback."""
    code = """
        from agentmm.repl.terminal import Terminal
        term = Terminal.detect()
        term.setup_editor(None, lambda: "")
        with term.busy():
            term.reply_start()
            term.reply_chunk("Let me roll the dice for you now.")
            allowed = term.confirm("allow tool call roll_dice(expr='2d6')?")
            term.reply_chunk(" A seven.")
            term.reply_end(False)
        print("allowed" if allowed else "refused")
    """
    out = run(code, keys={"[y/N]": "y\r"})
    assert Screen(60).feed(out).lines == [
        "Let me roll the dice for you now.",
        "allow tool call roll_dice(expr='2d6')? [y/N] y",
        "A seven.",
        "allowed",
    ]


CHAT_ON_A_FAKE_MODEL = """
    import sys, tempfile, threading
    from pathlib import Path
    from agentmm.graphs.chat import persona_model
    from agentmm.repl.session import ChatSession
    from agentmm.repl.terminal import Terminal
    from tests.repl.test_session import make_agent

    agent = make_agent(Path(tempfile.mkdtemp()), ["Hello there, traveller."])
    warmed = threading.Event()
    agent.warm_up = warmed.set  # what loads the model in the background
    ChatSession(agent, Terminal.detect(), persona_model=persona_model).run()
    print("warmed up" if warmed.wait(5) else "never warmed up")
"""


@pytest.mark.parametrize("term", ["dumb", "xterm-256color"])
def test_a_person_at_any_terminal_gets_the_header_and_a_model_loading_meanwhile(term: str, tmp_path: Path) -> None:
    """Under TERM=dumb (plain line input, no colour) the header was not shown and the model was
    loaded only when the first message came."""
    env = {name: str(tmp_path / name) for name in ("AGENTMM_DATA_DIR", "AGENTMM_CACHE_DIR", "AGENTMM_PERSONAS_DIR",
                                                    "AGENTMM_TOOLS_DIR")}  # fmt: skip
    env |= {"AGENTMM_CONFIG": str(tmp_path / "config.toml"), "PROMPT_TOOLKIT_NO_CPR": "1"}
    out = run(CHAT_ON_A_FAKE_MODEL, keys={"you> ": "Hi\r", "traveller.": "\x04"}, term=term, env=env, width=100)
    lines = Screen(100).feed(out).lines
    assert lines[0].startswith("agentmm · model ") and " · thread " in lines[0], lines
    assert lines[1].startswith("/help for commands") and lines[1].endswith("Ctrl-C stops a reply · Ctrl-D leaves")
    assert ("Alt-Enter" in lines[1]) == (term != "dumb")  # plain input() has no new-line key
    assert "Hello there, traveller." in lines and "warmed up" in lines, lines
