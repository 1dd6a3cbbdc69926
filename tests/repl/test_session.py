"""The REPL's session logic, fast: a scripted terminal and a fake chat model through the real
Agent, graph, checkpointer and (for memory) a Chroma store with a tiny embedder."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from rich.console import Console

from agentmm.graphs.agent import Agent
from agentmm.graphs.chat import persona_model
from agentmm.memory.chroma_store import ChromaStore
from agentmm.repl.session import ChatSession
from agentmm.repl.terminal import Terminal
from agentmm.repl.turns import run_turn
from agentmm.settings import load_settings
from agentmm.threads import thread_values
from tests.memory.conftest import CharacterEmbeddings


class ScriptedTerminal(Terminal):
    """Plain terminal whose user types ``lines`` and answers ``answers`` to y/N questions."""

    def __init__(self, lines: list[str], answers: list[bool] | None = None) -> None:
        super().__init__(editor=False, live=False)
        self.lines = list(lines)
        self.answers = list(answers or [])
        self.questions: list[str] = []
        self.out = Console(file=io.StringIO(), width=200, no_color=True, soft_wrap=True, highlight=False)
        self.err = Console(file=io.StringIO(), width=200, no_color=True, soft_wrap=True, highlight=False)

    def read(self) -> str | None:
        return self.lines.pop(0) if self.lines else None

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answers.pop(0)

    @property
    def stdout(self) -> str:
        return self.out.file.getvalue()  # type: ignore[attr-defined]

    @property
    def stderr(self) -> str:
        return self.err.file.getvalue()  # type: ignore[attr-defined]


_AGENTS: list[Agent] = []  # made by this module's tests: closed after each (close_agents)


def make_agent(tmp_path: Path, replies: list[str], store: Any = None, **settings: Any) -> Agent:
    """An Agent over a fake chat model; one made by a test here is closed after it, one made
    elsewhere (a module fixture) is its maker's to close."""
    chosen = load_settings(data_dir=tmp_path / "data", n_ctx=2048, max_tokens=128, **settings)
    return _closed_after_the_test(Agent(chosen, model=FakeListChatModel(responses=replies), store=store))


def _closed_after_the_test(agent: Agent) -> Agent:
    _AGENTS.append(agent)
    return agent


@pytest.fixture(autouse=True)
def close_agents() -> Iterator[None]:
    """Close the agents a test made. Left open, each kept its turn loop's thread and the async
    SQLite saver open on it (``TurnLoop``) until the process exited, where the interpreter's
    teardown collected their async generators on loops it had stopped: the run then ended in
    "Task was destroyed but it is pending!" and "aclose(): asynchronous generator is already
    running" lines (the CLI's chat closes its Agent: ``with Agent(settings)``)."""
    _AGENTS.clear()  # another module's (its fixture closes them)
    yield
    while _AGENTS:
        _AGENTS.pop().close()


def chat(agent: Agent, lines: list[str], thread: str | None = None, persona: str | None = None) -> ScriptedTerminal:
    terminal = ScriptedTerminal(lines)
    ChatSession(agent, terminal, thread, persona=persona, persona_model=persona_model).run()
    return terminal


def messages(agent: Agent, thread_id: str) -> list[tuple[str, str]]:
    values, _ = thread_values(agent.checkpointer, thread_id)
    return [(m.type, m.text) for m in values["messages"]]


def thread_of(terminal: ScriptedTerminal) -> str:
    return terminal.stderr.strip().splitlines()[-1].removeprefix("[thread ").rstrip("]")


@pytest.fixture
def memory_store(tmp_path: Path) -> Iterator[ChromaStore]:
    embeddings = CharacterEmbeddings(dims=64)
    with ChromaStore.from_path(tmp_path / "store", index={"dims": 64, "embed": embeddings, "fields": ["text"]}) as s:
        yield s


def test_conversation_why_retry_save_undo(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, ["*waves* Hello Mira!", "Hi again, Mira.", "Your name is Mira."])
    md, js = tmp_path / "t.md", tmp_path / "t.json"
    term = chat(agent, ["Hi, I am Mira.", "/why", "/retry", f"/save {md}", f"/save {js}", "What is my name?",
                        "/undo", "/exit", "never read"])  # fmt: skip
    assert "*waves* Hello Mira!" in term.stdout
    assert "prompt parts" in term.stdout and "timings" in term.stdout
    assert "retrying: Hi, I am Mira." in term.stderr
    thread = thread_of(term)
    assert messages(agent, thread) == [("human", "Hi, I am Mira."), ("ai", "Hi again, Mira.")]
    assert "**User:**" in md.read_text() and "Hi again, Mira." in md.read_text()
    doc = json.loads(js.read_text())
    assert doc["thread_id"] == thread
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant"]
    assert "undone: What is my name?" in term.stderr
    assert term.lines == ["never read"]


@pytest.mark.parametrize("leave", [[], ["/exit"], ["Hi.", "/new"]])
def test_leaving_a_thread_where_nothing_was_said_names_no_thread(tmp_path: Path, leave: list[str]) -> None:
    """Ctrl-D (the end of the lines) or /exit where nothing was said in this thread said
    "[thread X]", a thread there is none of (a new thread is saved with its first turn): it says
    so instead. After /new, the thread left is the new one; the one before it was saved."""
    from agentmm.threads import list_threads, thread_exists

    agent = make_agent(tmp_path, ["Hello."])
    session = ChatSession(agent, ScriptedTerminal(leave), persona_model=persona_model)
    session.run()
    assert not thread_exists(agent.checkpointer, session.thread_id)
    said = session.terminal.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert said[-1] == "[nothing was said in this thread, so it was not saved]"
    assert not any(session.thread_id in line for line in said if line.startswith("[thread "))
    if "Hi." in leave:
        assert len(list_threads(agent.checkpointer)) == 1


def test_attachments_are_checked_by_their_bytes_when_attached(tmp_path: Path) -> None:
    from tests.tools.media_files import make_image, write_wav

    agent = make_agent(tmp_path, [])
    picture, voice = make_image(tmp_path / "p.png"), write_wav(tmp_path / "v.wav")
    disguised = tmp_path / "v.png"
    disguised.write_bytes(voice.read_bytes())
    session = ChatSession(agent, ScriptedTerminal([f"/image {disguised}", f"/audio {picture}", f"/image {picture}",
                                                    f"/audio {voice}", f"/image {tmp_path}",
                                                    f"/image {tmp_path}/../{tmp_path.name}/p.png"]),
                          persona_model=persona_model)  # fmt: skip
    session.run()
    assert "p.png is attached already" in session.terminal.stderr  # type: ignore[attr-defined]
    errors = [line for line in session.terminal.stderr.splitlines() if "error:" in line]  # type: ignore[attr-defined]
    assert "v.png is audio, not a picture: attach it with /audio" in errors[0]
    assert "p.png is a picture, not audio: attach it with /image" in errors[1]
    assert "not a file" in errors[2]
    assert session.attachments == [picture, voice]


def test_a_picture_no_model_here_can_see_is_a_note_not_an_error(tmp_path: Path) -> None:
    """Piped, "no image captioner is available offline" read "agentmm: error: ..." while the
    turn went on; an unreadable file is still an error."""
    from tests.tools.media_files import make_image

    agent = make_agent(tmp_path, ["A picture!", "Hm."])
    picture, broken = make_image(tmp_path / "p.png"), tmp_path / "b.png"
    broken.write_bytes(picture.read_bytes()[:60])
    term = chat(agent, [f"/image {picture}", "What is this?"])
    assert "agentmm: note: p.png: no image captioner is available offline" in term.stderr
    assert "error" not in term.stderr and "A picture!" in term.stdout
    session = ChatSession(agent, ScriptedTerminal([]), persona_model=persona_model)
    session._show_observations([{"file": str(broken), "kind": "image", "error": "truncated"}])
    assert session.terminal.stderr == "agentmm: error: b.png: truncated\n"  # type: ignore[attr-defined]


def test_bad_input_is_one_line_and_the_session_goes_on(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, ["Fine, thanks."])
    paste = "word " * 200_000  # a 1 MB paste
    term = chat(agent, ["/hepl", f"/image {tmp_path / 'missing.png'}", "/resume nope", f"/save {tmp_path}/t.txt",
                        paste, "/undo", "/retry", "/why", "/greeting 1", "How are you?"])  # fmt: skip
    errors = [line for line in term.stderr.splitlines() if line.startswith("agentmm: error:")]
    assert len(errors) == 9, term.stderr
    expected = (
        "did you mean /help?",
        "no such file",
        "unknown thread 'nope'",
        "save as .md or .json",
        "shorten it or raise n_ctx",
        "nothing to undo",
        "nothing to retry",
        "no turn yet",
        "no persona",
    )
    for needle in expected:
        assert any(needle in e for e in errors), needle
    assert "Traceback" not in term.stderr
    # The paste that did not fit left nothing behind; the next message is turn 1.
    assert messages(agent, thread_of(term)) == [("human", "How are you?"), ("ai", "Fine, thanks.")]


def test_a_bare_slash_is_one_error_line_and_the_chat_goes_on(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, ["Hello."])
    term = chat(agent, ["/", "/   ", "Hi"])
    errors = [line for line in term.stderr.splitlines() if line.startswith("agentmm: error:")]
    assert errors == ["agentmm: error: a command needs a name after /: /help lists them "
                      "(// sends a line beginning with /)"] * 2, term.stderr  # fmt: skip
    assert messages(agent, thread_of(term)) == [("human", "Hi"), ("ai", "Hello.")]


HOSTILE_REPLY = "\x1b]0;PWNED\x07 a \x1b[1A\x1b[2K b"


def test_escape_sequences_in_a_reply_are_shown_and_saved_as_text_only(tmp_path: Path) -> None:
    """A model's reply cannot set the window title or erase lines: streamed (the fake streams it a
    character at a time, so the sequences come in pieces), nor in a Markdown /save."""
    agent = make_agent(tmp_path, [HOSTILE_REPLY])
    term = chat(agent, ["Hi", f"/save {tmp_path / 't.md'}", f"/save {tmp_path / 't.json'}"])
    assert term.stdout == " a  b\n"
    markdown = (tmp_path / "t.md").read_text()
    assert "\n\na  b\n" in markdown and not any(c in markdown for c in "\x1b\x07"), markdown
    saved = json.loads((tmp_path / "t.json").read_text())
    assert saved["messages"][1]["content"] == HOSTILE_REPLY  # JSON escapes it: kept as the model wrote it


def test_escape_sequences_in_a_reply_do_not_reach_a_live_terminal() -> None:
    """The live terminal re-renders a reply as Markdown: neither the stream nor the redraw holds
    the reply's own escapes (only the terminal's, which erase the streamed text)."""
    term = Terminal(editor=False, live=True)
    term.out = Console(file=io.StringIO(), width=80, height=25, force_terminal=True, highlight=False)
    term.reply_start()
    for piece in ["*waves* \x1b]0;PW", "NED\x07 a \x1b[", "1A\x1b", "[2K b\x1b"]:
        term.reply_chunk(piece)
    term.reply_end(False)
    shown = term.out.file.getvalue()  # type: ignore[attr-defined]
    assert "PWNED" not in shown and "NED" not in shown and "\x07" not in shown and "\x1b]" not in shown
    assert "\x1b[1A" not in shown and "\x1b[2K" not in shown
    assert "waves" in shown and "a  b" in shown


def test_quoted_names_and_paths_are_read_without_their_quotes(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, ["Hello."])
    term = chat(agent, ["Hi", "/persona 'Nora Quill'", f"/save '{tmp_path / 'my notes.md'}'",
                        f'/save "{tmp_path / "t.json"}"', "/model 'no-such-model'"])  # fmt: skip
    assert "Nora Quill plays from your next message on" in term.stderr, term.stderr
    assert (tmp_path / "my notes.md").is_file() and (tmp_path / "t.json").is_file(), term.stderr
    assert "model not found: no-such-model (" in term.stderr, term.stderr


def test_resume_shows_the_thread_and_continues_it(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, ["Hello!", "Still here."])
    first = chat(agent, ["Hi there"])
    thread = thread_of(first)
    second = chat(agent, ["/threads", "Are you there?", "/why"], thread=thread)
    assert thread in second.stdout
    assert "User> Hi there" in second.stderr and "assistant> Hello!" in second.stderr
    assert "turn 2" in second.stdout
    third = chat(agent, [f"/resume {thread[:6]}", "/new"])
    assert f"resumed thread {thread}" in third.stderr and "new thread" in third.stderr


def test_persona_greeting_and_model(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, ["Evening."])
    term = chat(agent, ["/persona nora", "/greeting", "/greeting 1", "/persona Nobody At All", "/model", "Hello"])
    assert "playing Nora Quill" in term.stderr
    assert "[0]" in term.stdout and "[1]" in term.stdout
    assert ("agentmm: error: no persona named 'Nobody At All' (known: Bram Tolliver, Ilse Varga, Nora Quill)"
            in term.stderr.splitlines())  # fmt: skip
    assert "model smollm2 · n_ctx 2048" in term.stdout
    thread = thread_of(term)
    history = messages(agent, thread)
    assert history[0][0] == "ai" and history[1] == ("human", "Hello")  # opened with greeting 1
    values, _ = thread_values(agent.checkpointer, thread)
    assert values["persona"] == "Nora Quill"
    assert values["messages"][0].response_metadata["greeting"] == 1


def test_the_played_persona_and_its_model_are_read_as_chat_dash_m_reads_them(tmp_path: Path) -> None:
    """``cli._played`` and ``ChatSession.__init__`` each read the played persona; the /persona
    model check was a copy of ``graphs.chat.persona_model``. One function each now."""
    from agentmm.repl.session import played_persona

    agent = make_agent(tmp_path, ["Evening.", "Hm."], persona="Ilse Varga")
    thread = thread_of(chat(agent, ["Hello"], persona="Nora Quill"))
    assert played_persona(agent, None, None) == "Ilse Varga"  # a new thread: the configured one
    assert played_persona(agent, "Bram Tolliver", thread) == "Bram Tolliver"
    assert played_persona(agent, None, thread) == "Nora Quill"
    assert ChatSession(agent, ScriptedTerminal([]), thread, persona_model=persona_model).persona == "Nora Quill"
    asked: list[str] = []

    def wants(settings: Any, persona: Any) -> None:
        asked.append(persona.name)

    ChatSession(agent, ScriptedTerminal(["/persona bram"]), thread, persona_model=wants).run()
    assert asked == ["Bram Tolliver"]


def test_memory_commands_and_undo_forgets(tmp_path: Path, memory_store: ChromaStore) -> None:
    agent = make_agent(tmp_path, ["Noted, you like tea."], store=memory_store)
    term = chat(agent, ["/remember Mira likes green tea", "/memory", "/memory tea", "I like tea", "/why", "/undo"])
    note_id = term.stderr.split("remembered ")[1].split()[0]
    assert note_id in term.stdout
    assert "recalled memories" in term.stdout
    assert "forgot 2 memories" in term.stderr
    left = [item.key for item in memory_store.search(("memories",), limit=50)]
    assert left == [note_id]
    chat(agent, [f"/forget {note_id}", "/forget nope"])
    assert memory_store.search(("memories",), limit=50) == []


def test_remember_stores_a_long_note_in_pieces_as_memory_add_does(tmp_path: Path, memory_store: ChromaStore) -> None:
    """/remember went around the split ``memory add`` makes (5934139): a note far over
    ``memory_max_tokens`` was one memory no recall could place. It is now stored in pieces, and
    the line says so as ``memory add``'s does."""
    agent = make_agent(tmp_path, [], store=memory_store, memory_max_tokens=64)
    term = chat(agent, ["/remember " + "Mira keeps a lighthouse on the northern cape " * 40])
    keys = sorted(item.key for item in memory_store.search(("memories",), limit=500))
    assert len(keys) > 1 and all(key.startswith(keys[0]) for key in keys), keys
    assert f"remembered {keys[0]} in {len(keys)} pieces" in term.stderr
    assert "memory_max_tokens 64" in term.stderr


def test_memory_ids_are_whole_in_a_narrow_terminal(tmp_path: Path, memory_store: ChromaStore) -> None:
    """/forget takes the whole id, which /memory shows: a 60-column table must not cut it."""
    agent = make_agent(tmp_path, ["Noted."], store=memory_store)
    term = ScriptedTerminal(["/remember " + "Mira likes green tea and hates rain " * 3, "/memory", "/memory tea"])
    term.out = Console(file=io.StringIO(), width=60, no_color=True, highlight=False)
    ChatSession(agent, term, persona_model=persona_model).run()
    note_id = term.stderr.split("remembered ")[1].split()[0]
    firsts = [line.split("│")[0].strip() for line in term.stdout.splitlines() if line.startswith("note:")]
    assert firsts == [note_id, note_id], term.stdout


@pytest.mark.parametrize("width", [40, 24])
def test_thread_ids_are_whole_in_a_narrow_terminal(tmp_path: Path, width: int) -> None:
    """/resume takes a thread id, which /threads shows: a narrow table must not cut it (it showed
    ``78fb9d…``); the first message gives way."""
    agent = make_agent(tmp_path, ["Noted."] * 2)
    first = thread_of(chat(agent, ["A rather long first message about the weather in Lisbon"]))
    term = ScriptedTerminal(["A second thread, also with a long first message", "/threads"])
    term.out = Console(file=io.StringIO(), width=width, no_color=True, highlight=False)
    ChatSession(agent, term, persona_model=persona_model).run()
    second = thread_of(term)
    rows = [line.split("│") for line in term.stdout.splitlines() if line.count("│") >= 2]
    assert sorted(cells[1].strip() for cells in rows if cells[1].strip()) == sorted([first, second]), term.stdout


def test_the_status_line_gives_way_by_whole_fields_in_a_narrow_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 60 columns the line editor cut the status line mid-number ('context 259/102' for
    259/1024); whole fields give way, the thread id first, then the persona."""
    agent = make_agent(tmp_path, [])
    session = ChatSession(agent, ScriptedTerminal([]), "a-thread-id-of-some-length", persona="Nora Quill",
                          persona_model=persona_model)  # fmt: skip
    session.last_trace = {"usage": {"prompt_tokens": 200, "completion_tokens": 59}, "budget": {"n_ctx": 1024}}
    wide = session.toolbar(200)
    assert wide.endswith(" · Nora Quill · thread a-thread-id-of-some-length · context 259/1024 (25%)")
    for width in (60, 50, 40):
        line = session.toolbar(width)
        assert len(line) <= width or line.count(" · ") == 0, line
        assert set(line.split(" · ")) <= set(wide.split(" · ")), line  # each field whole, or gone
        assert "thread" not in line
    assert session.toolbar(len(wide) - 1) == wide.replace(" · thread a-thread-id-of-some-length", "")
    monkeypatch.setattr(shutil, "get_terminal_size", lambda *args: os.terminal_size((60, 24)))
    assert session.toolbar() == " smollm2 · Nora Quill · context 259/1024 (25%)"  # the terminal's width


@pytest.mark.parametrize("persona", ["山田花子", "🦊 Fox"])
def test_the_status_line_fits_by_terminal_cells_not_characters(tmp_path: Path, persona: str) -> None:
    """A CJK persona name or an emoji takes two cells a character: measured with len(), the
    status line kept fields that did not fit and still overflowed a narrow terminal."""
    from rich.cells import cell_len

    agent = make_agent(tmp_path, [])
    session = ChatSession(agent, ScriptedTerminal([]), "a-thread-id-of-some-length", persona=persona,
                          persona_model=persona_model)  # fmt: skip
    wide = session.toolbar(200)
    assert cell_len(wide) > len(wide)
    for width in range(cell_len(wide) - 1, 20, -1):
        line = session.toolbar(width)
        assert cell_len(line) <= width or line.count(" · ") == 0, (width, line)
        assert set(line.split(" · ")) <= set(wide.split(" · ")), line  # each field whole, or gone
    assert session.toolbar(cell_len(wide)) == wide


class FakeTurn:
    """A TurnStream stand-in: asks to run a tool, streams, can press Ctrl-C on itself."""

    def __init__(self, chunks: list[str], press_ctrl_c: int = 0) -> None:
        self.chunks = chunks
        self.press = press_ctrl_c
        self.cancelled = False
        self.on_observations: Any = None
        self.on_approval: Any = None
        self.asked: list[bool] = []
        self.result: Any = None

    def cancel(self) -> None:
        self.cancelled = True

    def __iter__(self) -> Iterator[str]:
        if self.on_approval is not None:
            self.asked.append(self.on_approval({"tool": "roll_dice", "args": {"expr": "2d6"}, "id": "c1"}))
        for i, chunk in enumerate(self.chunks):
            if i == 1:
                for _ in range(self.press):
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.15)
            if self.cancelled:
                break
            yield chunk
        time.sleep(0.2)  # still saving when further presses arrive
        self.result = type("Result", (), {"interrupted": self.cancelled, "trace": {}})()


def test_tool_approval_goes_through_the_terminal() -> None:
    term = ScriptedTerminal([], answers=[True])
    turn = FakeTurn(["a", "b"])
    outcome = run_turn(turn, term)
    assert turn.asked == [True]
    assert "roll_dice(expr='2d6')" in term.questions[0]
    assert outcome.error is None and term.stdout == "ab\n"


def test_ctrl_c_twice_stops_the_reply_and_waits_for_the_save() -> None:
    term = ScriptedTerminal([], answers=[True])
    turn = FakeTurn(["a", "b", "c"], press_ctrl_c=2)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or "ignored" in a background job
    outcome = run_turn(turn, term)  # no KeyboardInterrupt escapes
    assert turn.cancelled and outcome.cancelled and outcome.interrupted
    assert term.stdout == "a [interrupted]\n"
    assert "saving what was written first" in term.stderr
    assert signal.getsignal(signal.SIGINT) is before  # the turn's own handler is gone


def test_persona_switch_follows_its_own_model_unless_the_user_chose_one(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    personas = tmp_path / "personas"
    personas.mkdir(exist_ok=True)
    (personas / "mo.toml").write_text(f'name = "Model Mo"\nmodel = "{missing}"\n')
    agent = make_agent(tmp_path, ["Evening."])
    term = chat(agent, ["/persona mo", "/persona", "/persona nora", "/model"])
    errors = [line for line in term.stderr.splitlines() if line.startswith("agentmm: error:")]
    assert len(errors) == 1 and str(missing) in errors[0]
    assert "playing: none" in term.stdout  # the persona whose model cannot load is not played
    assert "playing Nora Quill" in term.stderr and "model smollm2 ·" in term.stdout  # no model of its own

    chosen = _closed_after_the_test(
        Agent(load_settings(data_dir=tmp_path / "data", model="smollm2"), model=FakeListChatModel(responses=["x"]))
    )
    term = chat(chosen, ["/persona mo", "/persona"])
    assert "agentmm: error" not in term.stderr and "playing: Model Mo" in term.stdout


def test_a_switch_to_a_gguf_without_its_chat_template_is_said_as_at_the_start(tmp_path: Path) -> None:
    """chat -m and -p warned; /model and /persona switched to such a model without a word."""
    from tests.tiny_gguf import write_header_only_gguf

    gguf = write_header_only_gguf(tmp_path / "bare.gguf", chat_template=None)
    term = chat(make_agent(tmp_path, ["Evening."]), [f"/model {gguf}"])
    assert f"{gguf}: the GGUF has no chat template (tokenizer.chat_template)" in term.stderr, term.stderr


def test_greeting_on_a_persona_without_greetings_says_it_has_none(tmp_path: Path) -> None:
    """``/greeting 0`` on such a persona said 'has 0 greetings (0 to 0)', as if 0 were one."""
    from agentmm.personas import Persona

    agent = make_agent(tmp_path, ["Hm."])
    agent.personas.add(Persona(name="Wren", description="A wren."))
    term = chat(agent, ["/persona Wren", "/greeting 0", "/greeting 9"])
    errors = [line for line in term.stderr.splitlines() if line.startswith("agentmm: error:")]
    assert errors == ["agentmm: error: Wren has no greetings: a new thread starts with your message"] * 2


def test_an_attachment_note_names_the_file_once_and_prints_no_escape(capsys: pytest.CaptureFixture[str]) -> None:
    """Chat said ``missing.jpg: no such file: missing.jpg``, and a file name or transcript holding
    escape sequences reached the terminal raw in ``[you said (...)]`` (``chat -m`` prints these
    lines itself)."""
    from agentmm.cli import _show_observations
    from agentmm.repl.terminal import user_note

    missing = {"kind": "unsupported", "file": "media/missing.jpg", "error": "no such file: media/missing.jpg"}
    assert user_note(missing) == (True, "no such file: media/missing.jpg")
    unnamed = {"kind": "image", "file": "/x/a.png", "error": "no image captioner is available", "unavailable": True}
    assert user_note(unnamed) == (False, "a.png: no image captioner is available")
    evil = {"kind": "audio", "file": "/x/evil\x1b]0;PWNED\x07\x1b[2Jx.wav", "text": "hi\x1b[31m there", "model": "m"}
    assert user_note(evil) == (False, "[you said ('evil\\x1b]0;PWNED\\x07\\x1b[2Jx.wav'): hi there]")
    _show_observations([evil, {**missing, "file": "evil\x1b[2J.jpg", "error": "no such file: evil\x1b[2J.jpg"}])
    shown = capsys.readouterr().err
    assert "\x1b" not in shown and "\x07" not in shown and "[you said ('evil\\x1b]0;PWNED" in shown


def test_a_file_name_is_shown_quoted_in_the_chat_as_the_cli_shows_it(tmp_path: Path) -> None:
    """The chat took control characters out of a file name (``attached evil.png`` for a file
    named ``evil<ESC>[2J.png``, a name of another file; a newline was kept and broke the line)
    while the CLI quoted it: both now show it with ``console_text.shown_path``."""
    from agentmm.cli import _about_file
    from agentmm.repl.terminal import user_note
    from tests.tools.media_files import make_image, write_wav

    agent = make_agent(tmp_path, [])
    picture, voice = make_image(tmp_path / "evil\x1b[2J.png"), write_wav(tmp_path / "v\x1b[2J.png")
    session = ChatSession(agent, ScriptedTerminal([f"/image {picture}", f"/image {voice}"]),
                          persona_model=persona_model)  # fmt: skip
    session.run()
    stderr = session.terminal.stderr  # type: ignore[attr-defined]
    assert "attached 'evil\\x1b[2J.png': it goes with" in stderr
    assert "'v\\x1b[2J.png' is audio, not a picture" in stderr
    failed = {"kind": "image", "file": "/x/two\nlines.png", "error": "no image captioner is available"}
    assert user_note(failed)[1] == _about_file(Path("two\nlines.png"), failed["error"])
    assert user_note(failed)[1] == "'two\\nlines.png': no image captioner is available"


class SpinningTerminal(ScriptedTerminal):
    """A scripted terminal that records what its spinner said (a plain one shows none)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines)
        self.spun: list[str] = []

    def start_spinner(self, text: str) -> None:
        self.spun.append(text)


def test_ctrl_c_while_a_voice_note_is_transcribed_stops_the_turn_and_keeps_nothing(
    tmp_path: Path, memory_store: ChromaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing was shown while a voice note was transcribed (a minute and more for a long one),
    and Ctrl-C did not stop it: the transcript was shown, then '[interrupted]', and the turn
    was saved and remembered. Now a spinner says what is transcribed, and Ctrl-C ends the turn
    there: one line, the thread and memory as they were, the note no longer attached."""
    import agentmm.tools.perception as perception
    from agentmm.errors import TurnStoppedError
    from agentmm.memory.manage import list_memories
    from agentmm.threads import thread_exists
    from tests.tools.media_files import write_wav

    def transcriber(settings: Any = None, runtime: Any = None) -> Any:
        def run(path: Path, stop: Any = None) -> tuple[str, str, str]:
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C a moment into it
            if stop is not None and stop.wait(5):  # as Whisper does between two segments
                raise TurnStoppedError(f"stopped while transcribing {path.name}")
            time.sleep(0.3)
            return "meet me at the lighthouse", "en", "fake-asr"

        return run

    monkeypatch.setattr(perception, "default_transcriber", transcriber)
    agent = make_agent(tmp_path, ["The lighthouse it is."], store=memory_store)
    voice = write_wav(tmp_path / "note.wav")
    term = SpinningTerminal([f"/audio {voice}", "listen to this"])
    session = ChatSession(agent, term, persona_model=persona_model)
    session.run()
    assert term.spun[0] == "transcribing note.wav…"
    assert term.stdout == ""  # no reply, no '[interrupted]'
    shown = term.stderr.splitlines()
    assert shown[1:] == ["[stopped while transcribing note.wav: nothing was sent or remembered]",
                         "[nothing was said in this thread, so it was not saved]"]  # fmt: skip
    assert not thread_exists(agent.checkpointer, session.thread_id)
    assert list_memories(memory_store, agent.settings.user_id, None) == []
    assert session.attachments == []


def test_enter_on_an_empty_line_sends_what_is_attached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A voice note could not be sent alone: Enter on an empty line did nothing, whatever was
    attached. It sends the attachments as the message; with none, an empty line is still nothing."""
    import agentmm.tools.perception as perception
    from tests.tools.media_files import write_wav

    def transcriber(settings: Any = None, runtime: Any = None) -> Any:
        return lambda path, stop=None: ("meet me at noon", "en", "fake-asr")

    monkeypatch.setattr(perception, "default_transcriber", transcriber)
    agent = make_agent(tmp_path, ["Noon it is."])
    voice = write_wav(tmp_path / "v.wav")
    term = chat(agent, ["", f"/audio {voice}", "  "])
    assert "Noon it is." in term.stdout
    assert "[you said (v.wav): meet me at noon]" in term.stderr
    assert messages(agent, thread_of(term))[-1] == ("ai", "Noon it is.")
    assert len(messages(agent, thread_of(term))) == 2


def test_a_wav_cut_short_is_said_in_the_chat_and_in_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A WAV cut short had its note in the trace and perceive --json only: the chat said nothing
    of it on stderr (REPL and chat -m alike), nor did /why."""
    import agentmm.tools.perception as perception
    from agentmm.cli import _show_observations
    from tests.tools.media_files import write_wav

    cut = "v.wav is cut short: its header says 4.29 s of audio, but only 2.10 s could be read"

    def transcriber(settings: Any = None, runtime: Any = None) -> Any:
        return lambda path, stop=None: ("meet me at noon", "en", "fake-asr", cut)

    monkeypatch.setattr(perception, "default_transcriber", transcriber)
    voice = write_wav(tmp_path / "v.wav")
    term = chat(make_agent(tmp_path, ["Noon it is."]), [f"/audio {voice}", "listen", "/why"])
    assert f"[you said (v.wav): meet me at noon]\nagentmm: note: {cut}\n" in term.stderr
    assert f"  note: {cut}" in term.stdout  # /why, under the observation
    _show_observations([{"kind": "audio", "file": str(voice), "text": "meet me at noon", "note": cut}])
    assert capsys.readouterr().err == f"[you said (v.wav): meet me at noon]\nagentmm: note: {cut}\n"


def test_a_tool_call_denied_is_said_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A call denied for want of anyone to ask (a piped chat) printed the note, then
    'agentmm: error: [tool roll_dice(...) denied: the user did not allow this call]': two lines,
    the second an error, for one call. chat -m printed the same second line."""
    from langchain_core.messages import AIMessage

    from agentmm.cli import _show_tool_calls
    from agentmm.tools.builtin import roll_dice
    from tests.graphs.scripted_model import ScriptedToolModel, call

    model = ScriptedToolModel(script=[call("roll_dice", notation="d6"), AIMessage("Rolled.")])
    agent = _closed_after_the_test(Agent(load_settings(data_dir=tmp_path / "data", n_ctx=2048, max_tokens=16),
                                         model=model, tools=[roll_dice], approve_tools=["roll_dice"]))  # fmt: skip
    term = ScriptedTerminal(["roll"])
    term.asks = False  # the chat reads a script
    ChatSession(agent, term, persona_model=persona_model).run()
    assert "Rolled." in term.stdout
    said = [line for line in term.stderr.splitlines() if "roll_dice" in line]
    assert said == ["agentmm: note: denied tool call roll_dice(notation='d6') (nobody to ask: the chat reads a "
                    "script; pass --yes to allow)"]  # fmt: skip
    denied = {"name": "roll_dice", "args": {"notation": "d6"}, "status": "denied",
              "output": "the user did not allow this call"}  # fmt: skip
    _show_tool_calls([denied, {**denied, "status": "ok", "output": "4"}])
    assert capsys.readouterr().err == "[tool roll_dice(notation='d6'): 4]\n"


class HangsUpThenAsks(FakeTurn):
    """The terminal closes (SIGHUP) before the turn asks whether a tool may run."""

    def __iter__(self) -> Iterator[str]:
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.3)  # the turn's handler runs on the main thread meanwhile
        self.asked.append(self.on_approval({"tool": "roll_dice", "args": {"expr": "2d6"}, "id": "c1"}))
        yield from self.chunks
        self.result = type("Result", (), {"interrupted": self.cancelled, "trace": {}})()


def test_after_the_terminal_closed_nothing_is_asked_or_shown_there() -> None:
    """After SIGHUP only the reply's text was kept off the closed terminal: the y/N question was
    still asked there (an EIO, a traceback and exit 1 instead of the turn's save and 129)."""
    term = ScriptedTerminal([], answers=[True])
    turn = HangsUpThenAsks(["a", "b"])
    before = signal.getsignal(signal.SIGHUP)
    outcome = run_turn(turn, term)
    assert signal.getsignal(signal.SIGHUP) is before
    assert outcome.hung_up and turn.cancelled
    assert turn.asked == [False] and term.questions == [] and "ab" not in term.stdout
