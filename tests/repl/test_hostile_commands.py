"""Hostile slash commands: whatever a user types after ``/command``, the REPL answers or prints one
error line and goes on (``ChatSession.handle`` never raises), and ``parse`` sorts any line into
a command, text to send, or one ``UnknownCommand`` line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentmm.graphs.chat import persona_model
from agentmm.memory.chroma_store import ChromaStore
from agentmm.models import SHIPPED_MODELS
from agentmm.repl.commands import ALIASES, BY_NAME, COMMANDS, Parsed, UnknownCommand, parse
from agentmm.repl.session import ChatSession
from tests.memory.conftest import CharacterEmbeddings
from tests.repl.test_session import ScriptedTerminal, make_agent

HOSTILE = settings(
    max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)

words = st.text(max_size=30) | st.sampled_from(["0", "1", "²", "٣", "9" * 5000, "-1", "nora", "Nora Quill"])
paths = st.sampled_from(["~nosuchuser_xyz/t.md", "a\x00b.md", "x" * 300 + ".md", "'quoted.json'", "/", ".", "sub/t.md"])
separators = st.sampled_from([" ", "  ", "\t", "\n", "\u3000", "\xa0"])


@HOSTILE
@given(line=st.text(max_size=40) | st.builds(lambda name, sep, arg: f"/{name}{sep}{arg}",
                                                st.sampled_from([*BY_NAME, *ALIASES]), separators, words))  # fmt: skip
@example(line="  //me waves")
@example(line="/save\tout.md")
def test_any_line_parses_to_a_command_text_or_one_line(line: str) -> None:
    try:
        parsed = parse(line)
    except UnknownCommand as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    if isinstance(parsed, Parsed):
        assert parsed.name in BY_NAME
        assert parsed.arg == parsed.arg.strip() or BY_NAME[parsed.name].takes_name  # quoted: inside as typed
    elif line.strip().startswith("//"):
        assert parsed == line.strip()[1:]  # the escape drops exactly one slash
    else:
        assert parsed == line


@pytest.mark.parametrize("sep", ["\t", "\n", "\u3000"])
def test_any_whitespace_separates_a_command_from_its_argument(sep: str) -> None:
    assert parse(f"/save{sep}out.md") == Parsed("save", "out.md")


class RecordingTerminal(ScriptedTerminal):
    """The scripted terminal, keeping each error message as given."""

    def __init__(self) -> None:
        super().__init__([])
        self.errors: list[str] = []

    def error(self, text: str) -> None:
        self.errors.append(text)
        super().error(text)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatSession]:
    """One REPL over the real Agent (fake chat model), with memory and one exchange in the thread,
    working in a folder of its own (a /save of a relative name writes there)."""
    base = tmp_path_factory.mktemp("repl")
    (base / "cwd").mkdir()
    embeddings = CharacterEmbeddings(dims=16)
    with (
        contextlib.chdir(base / "cwd"),
        ChromaStore.from_path(base / "store", index={"dims": 16, "embed": embeddings, "fields": ["text"]}) as store,
    ):
        agent = make_agent(base, ["Hello there.", "Again."], store=store)
        with agent:  # closed before its store: left open, the process ended in asyncio's teardown errors
            chat = ChatSession(agent, RecordingTerminal(), persona_model=persona_model)
            chat.handle("Hi, I am Ada.")
            yield chat


# /model with a shipped name really loads it (fine, but slow); every other name is an error line.
model_names = words.filter(lambda w: w.strip().lower() not in SHIPPED_MODELS)


@HOSTILE
@given(command=st.sampled_from([c.name for c in COMMANDS if c.name != "exit"]), arg=words | paths)
@example(command="greeting", arg="²")
@example(command="greeting", arg="9" * 5000)
@example(command="save", arg="~nosuchuser_xyz/t.md")
@example(command="save", arg="a\x00b.md")
@example(command="image", arg="~nosuchuser_xyz/p.png")
@example(command="audio", arg="a\x00b.wav")
@example(command="model", arg="~nosuchuser_xyz/m.gguf")
@example(command="image", arg="two\nlines.png")
@example(command="save", arg="two\nlines/t.md")
@example(command="resume", arg="a\nb")
@example(command="persona", arg="a\nb")
def test_any_argument_is_handled_or_one_error_line(session: ChatSession, command: str, arg: str) -> None:
    if command == "model" and arg.strip().lower() in SHIPPED_MODELS:
        arg = "not-" + arg
    if command == "greeting" and session.persona is None:
        session.handle("/persona nora")  # so /greeting gets as far as its number
    terminal: RecordingTerminal = session.terminal  # type: ignore[assignment]
    before = len(terminal.errors)
    assert session.handle(f"/{command} {arg}") is True  # raises nothing, ends nothing
    for message in terminal.errors[before:]:
        assert message and "\n" not in message, message
        assert not message.startswith("the turn failed"), message


def test_save_writes_nothing_half_way(session: ChatSession, tmp_path: Path) -> None:
    target = tmp_path / "deep" / "t.json"
    session.handle("/new")
    session.handle("Something to save.")
    session.handle(f"/save {target}")
    assert target.is_file(), session.terminal.errors[-3:]  # type: ignore[attr-defined]
    assert [p.name for p in target.parent.iterdir()] == ["t.json"]  # no temp file left beside it
