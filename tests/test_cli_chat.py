"""``agentmm chat``'s own steps, fast: the CLI's functions in-process over a real Agent with a
fake chat model (the end-to-end runs on the shipped model are in test_cli.py)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage
from pydantic import Field

from agentmm import cli
from agentmm.graphs.agent import Agent
from agentmm.personas import PersonaNotFoundError
from agentmm.settings import load_settings


def make_agent(replies: list[str], **settings: Any) -> Agent:
    return Agent(load_settings(n_ctx=2048, max_tokens=16, **settings), model=FakeListChatModel(responses=replies))


def one_turn_json(agent: Agent, capsys: pytest.CaptureFixture[str], persona: str | None = None) -> dict[str, Any]:
    cli._chat_with(agent, "hi", None, True, persona, 0, [], False)
    return json.loads(capsys.readouterr().out)


def test_dash_p_reads_a_first_name_as_slash_persona_does(capsys: pytest.CaptureFixture[str]) -> None:
    with make_agent(["Evening."]) as agent:
        assert one_turn_json(agent, capsys, persona="Nora")["trace"]["persona"] == "Nora Quill"


def test_dash_p_refuses_a_first_name_two_personas_share(isolated_env: Path) -> None:
    folder = isolated_env / "personas"
    folder.mkdir()
    (folder / "nora-bell.toml").write_text('name = "Nora Bell"\ndescription = "A bell-ringer."\n')
    with make_agent([]) as agent, pytest.raises(PersonaNotFoundError, match="could be Nora Bell or Nora Quill"):
        cli._chat_with(agent, "hi", None, True, "nora", 0, [], False)


def test_one_turn_labels_a_note_as_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    cli._show_observations([
        {"file": "/x/p.png", "kind": "image", "error": "no image captioner is available offline", "unavailable": True},
        {"file": "/x/b.png", "kind": "image", "error": "truncated"},
        {"file": "/x/c.png", "kind": "image", "text": "a cat"},
    ])  # fmt: skip
    assert capsys.readouterr().err.splitlines() == [
        "agentmm: note: p.png: no image captioner is available offline",
        "agentmm: b.png: truncated",
        "[c.png: a cat]",
    ]


@pytest.mark.parametrize("template", [None, "{{ messages }}"], ids=["without", "with"])
def test_a_gguf_without_its_chat_template_is_said_at_the_start(
    template: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """doctor called it a problem while chat said nothing and replied in the fallback format."""
    from agentmm.errors import AgentmmError
    from agentmm.llm import ChatLlamaCpp
    from tests.tiny_gguf import write_header_only_gguf

    gguf = write_header_only_gguf(tmp_path / "bare.gguf", chat_template=template)
    agent = Agent(load_settings(model=str(gguf)), model=ChatLlamaCpp(model_path=str(gguf)))
    with agent, pytest.raises(AgentmmError):  # a header-only GGUF does not load: the warning came first
        cli._chat_with(agent, "hi", None, True, None, 0, [], False)
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if "chat template" in line]
    if template is None:
        assert warnings == [f"agentmm: warning: {gguf}: the GGUF has no chat template (tokenizer.chat_template): "
                            "prompts use llama-cpp-python's fallback Llama 2 format, which this model may not know "
                            "(replies can repeat the prompt); use a GGUF that carries its template"]  # fmt: skip
    else:
        assert warnings == []
    assert out == ""  # --json's stdout holds the object alone


# `agentmm chat` through the real entry point (``main``), its model a script.
SCRIPTED_CHAT = """
import sys
from langchain_core.messages import AIMessage
import agentmm.model_server
from tests.graphs.scripted_model import ScriptedToolModel

agentmm.model_server.chat_model = lambda settings, runtime=None: ScriptedToolModel(script=[AIMessage("Evening.")])
from agentmm.cli import main

sys.argv = ["agentmm", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize(
    ("args", "wanted"),
    [
        (["chat", "-m", "hi", "--json"], True),
        (["--data-dir", "d", "threads", "show", "abc", "--json"], True),
        (["chat", "-m", "--json"], False),
        (["chat", "-m", "hi", "--system", "--json"], False),
        (["--data-dir", "--json", "threads", "list"], False),
        (["threads", "list"], False),
        # Lines click refuses: wanted where --json may be the flag, so stdout stays empty and
        # click's own error goes to stderr; not where it cannot be (no such command, after --).
        (["threads", "show", "--json"], True),  # no ID
        (["chat", "--gpu-layers", "x", "--json"], True),  # a value of the wrong type
        (["chat", "--json", "--bogus"], True),  # an unknown option
        (["threads", "--json", "list"], True),  # the flag on the group
        (["threads", "nosuch", "--json"], False),
        (["chat", "-m", "hi", "--", "--json"], False),
        # --help prints the help and runs nothing: on stdout, as without --json.
        (["chat", "--help", "--json"], False),
        (["chat", "-m", "hi", "--json", "--help"], False),
        (["--data-dir", "d", "threads", "list", "--help", "--json"], False),
        (["chat", "-m", "--help", "--json"], True),  # "--help" is -m's value: a turn, in JSON
    ],
)
def test_json_is_wanted_where_click_reads_it_as_the_flag(args: list[str], wanted: bool) -> None:
    """Read with typer's click as the run reads the line, and without the context's private
    _protected_args or click's deprecated protected_args (an earlier version read the private one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert cli._wants_json(args) is wanted


@pytest.mark.parametrize("args", [["threads", "show", "--json"], ["threads", "show", "nosuch", "--json"]])
def test_a_refused_json_command_leaves_stdout_empty(isolated_env: Path, args: list[str]) -> None:
    """An error, click's or agentmm's, goes to stderr, and stdout holds no JSON or anything else."""
    from tests.test_cli import agentmm

    done = agentmm(*args)
    assert done.returncode != 0 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.strip()


@pytest.mark.parametrize("args", [["chat", "--help", "--json"], ["threads", "show", "--json", "--help"]])
def test_help_with_json_prints_the_help_on_stdout(isolated_env: Path, args: list[str]) -> None:
    """stdout was held back for the JSON object, so ``chat --help --json`` printed its help on
    stderr and nothing on stdout."""
    from tests.test_cli import agentmm

    done = agentmm(*args)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.lstrip().startswith("Usage: ") and "--json" in done.stdout


def test_a_value_that_starts_with_dashes_is_the_options_value(isolated_env: Path) -> None:
    """`chat -m hi --system --json`: click gave --system the value "--json", as it takes the next
    token for an option's value, but main read --json as the flag and sent the reply to stderr,
    leaving stdout empty. The reply is on stdout now and the thread's system prompt is "--json"."""
    import re
    import subprocess
    import sys

    from tests.test_cli import ok_json

    done = subprocess.run([sys.executable, "-c", SCRIPTED_CHAT, "chat", "-m", "hi", "--system", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Evening.\n"
    thread = re.search(r"\[thread (\w+)\]", done.stderr)
    assert thread is not None, done.stderr
    assert ok_json("threads", "show", thread.group(1), "--json")["system_prompt"] == "--json"


def test_a_command_that_prints_fails_with_stdout_closed_as_ls_does_and_chat_goes_on(isolated_env: Path) -> None:
    """`agentmm personas list >&-` printed into /dev/null and exited 0; `ls >&-` says "write
    error: Bad file descriptor" and exits non-zero. A chat still runs and saves its turn."""
    import os
    import subprocess
    import sys

    def closed(*args: str, close: int = 1, script: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "agentmm.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1],
                              preexec_fn=lambda: os.close(close))  # fmt: skip

    for args in (["personas", "list"], ["personas", "list", "--json"], ["threads", "list"], ["--help"]):
        done = closed(*args)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.splitlines() == ["agentmm: error: cannot write the output: Bad file descriptor"], args
    stdin_closed = closed("personas", "list", close=0)  # as before
    assert stdin_closed.returncode == 0 and "Nora Quill" in stdin_closed.stdout
    for args in (["chat", "-m", "hi"], ["chat", "-m", "hi", "--json"]):
        done = closed(*args, script=SCRIPTED_CHAT)
        assert done.returncode == 0, (args, done.stderr)
    from tests.test_cli import ok_json

    assert len(ok_json("threads", "list", "--json")["threads"]) == 2


def test_a_server_started_with_stdout_closed_serves_without_logging_errors(isolated_env: Path) -> None:
    """uvicorn's access log is on stdout: each request then said '--- Logging error ---' and a
    traceback on stderr, once a command that prints failed on a closed stdout."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    log = isolated_env / "serve.err"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "agentmm.cli", "serve", "--port", str(port)], stderr=err,
                                preexec_fn=lambda: os.close(1), start_new_session=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/threads", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    said = log.read_text()
    assert "Logging error" not in said and "Traceback" not in said, said[-2000:]


@pytest.mark.parametrize("yes", [True, False], ids=["yes", "no"])
def test_a_piped_chat_allows_a_tool_call_with_yes_and_never_takes_the_next_line_for_an_answer(
    yes: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``printf 'roll\\nlead on\\n' | agentmm chat --yes``: --yes reached -m only, and the y/N
    question read the script's next line as its answer (a denial, and the line was lost)."""
    import io

    from agentmm.tools.builtin import roll_dice
    from tests.graphs.scripted_model import ScriptedToolModel, call

    model = ScriptedToolModel(script=[call("roll_dice", notation="d6"), AIMessage("Rolled."), AIMessage("On we go.")])
    monkeypatch.setattr("sys.stdin", io.StringIO("roll\nlead on\n"))
    with Agent(load_settings(n_ctx=2048, max_tokens=16), model=model, tools=[roll_dice],
               approve_tools=["roll_dice"]) as agent:  # fmt: skip
        cli._chat_with(agent, None, None, False, None, 0, [], yes)
    out, err = capsys.readouterr()
    assert "Rolled." in out and "On we go." in out
    assert model.prompts[-1][-1].text == "lead on"  # the second line is a message
    assert [m.type for m in model.prompts[1]][-1] == "tool"
    assert ("did not allow" in model.prompts[1][-1].text) is not yes  # the tool's result, as the model got it
    if yes:
        assert "denied" not in err
    else:
        assert "agentmm: note: denied tool call roll_dice(notation='d6')" in err and "--yes" in err


def test_attachments_are_checked_before_a_turn_as_the_repl_checks_them(tmp_path: Path) -> None:
    """``chat --audio missing.wav`` ran a whole turn on an empty message and exited 0, and
    ``chat --audio beach.png`` was sent while the REPL's ``/audio beach.png`` was refused: now
    each is one line, exit 2, no model loaded, in the REPL's words."""
    from tests.test_cli import agentmm, assert_one_line_error
    from tests.tools.media_files import make_image, write_wav

    picture, voice = make_image(tmp_path / "beach.png"), write_wav(tmp_path / "note.wav")
    assert_one_line_error(agentmm("chat", "--audio", str(tmp_path / "missing.wav")), "no such file:")
    assert_one_line_error(agentmm("chat", "--audio", str(picture)), "beach.png is a picture, not audio: attach it "
                                                                     "with --image")  # fmt: skip
    assert_one_line_error(agentmm("chat", "-m", "hi", "--image", str(voice)), "note.wav is audio, not a picture")


def test_a_bad_file_is_one_line_and_the_turn_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """README: a bad file (empty, truncated, a ZIP renamed .png, a decompression bomb) is one
    clear line and the turn goes on. ``chat -m --image`` refused an empty file, a ZIP or text
    named .png with exit 2 before the turn (a truncated JPEG went on): now perception says it."""
    import zipfile

    empty, text, archive = tmp_path / "empty.png", tmp_path / "text.png", tmp_path / "zip.png"
    empty.write_bytes(b"")
    text.write_text("not a picture\n")
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.txt", "hello")
    cli._check_attachments([empty, text, archive], [empty, text, archive])  # no refusal
    for bad, why in ((empty, "is empty (0 bytes)"), (text, "is not a supported image"),
                     (archive, "is not a supported image")):  # fmt: skip
        with make_agent(["Fine."], memory=False) as agent:
            cli._chat_with(agent, "look", None, False, None, 0, [bad], False)
        out, err = capsys.readouterr()
        assert out == "Fine.\n"
        (said,) = [line for line in err.splitlines() if bad.name in line]
        assert why in said


def test_an_image_projector_that_is_no_gguf_fails_before_the_picture_is_said_sent(tmp_path: Path) -> None:
    """``--mmproj text.png`` printed ``[beach.png: sent to smollm2 (native)]`` and only then failed
    on 'text.png is not a GGUF model file': the failure comes first, alone."""
    from tests.test_cli import agentmm, assert_one_line_error
    from tests.tools.media_files import make_image

    picture, projector = make_image(tmp_path / "beach.png"), make_image(tmp_path / "text.png")
    done = agentmm("chat", "-m", "look", "--image", str(picture), "--mmproj", str(projector), "--max-tokens", "4")
    assert_one_line_error(done, "text.png is not a GGUF model file")


def test_chat_dash_m_with_a_voice_note_shows_a_spinner_while_it_is_transcribed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``chat -m X --audio long.wav`` showed nothing while the note was transcribed (minutes for
    a long one); the chat's spinner says so on stderr where someone watches, and stops before
    the transcript line. Piped (stderr no terminal), nothing more is written."""
    import sys

    import agentmm.tools.perception as perception
    from tests.tools.media_files import write_wav

    def transcriber(settings: Any = None, runtime: Any = None) -> Any:
        return lambda path, stop=None: ("meet me at noon", "en", "fake-asr")

    monkeypatch.setattr(perception, "default_transcriber", transcriber)
    voice = write_wav(tmp_path / "v.wav")
    with make_agent(["Noon it is.", "Noon again."]) as agent:
        cli._chat_with(agent, "listen", None, False, None, 0, [voice], False)
        piped = capsys.readouterr()
        assert "transcribing" not in piped.err and "[you said (v.wav): meet me at noon]" in piped.err
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
        cli._chat_with(agent, "listen", None, False, None, 0, [voice], False)
    watched = capsys.readouterr()
    assert "transcribing v.wav…" in watched.err
    assert watched.err.index("transcribing v.wav…") < watched.err.index("[you said (v.wav)")
    assert watched.out.strip() == "Noon again."


@pytest.mark.parametrize(("signal_name", "code", "said"), [("SIGINT", 130, True), ("SIGTERM", 143, True),
                                                          ("SIGHUP", 129, False)])  # fmt: skip
def test_chat_dash_m_stopped_while_a_voice_note_is_transcribed_exits_as_stopped(
    signal_name: str, code: int, said: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Ctrl-C, SIGTERM or SIGHUP while ``chat -m --audio`` transcribed gave 'agentmm: error:
    stopped before the attachments were perceived' and exit 1: one line saying nothing was
    kept (none after SIGHUP: the terminal is gone) and the stop's exit code."""
    import os
    import signal
    import threading

    import agentmm.tools.perception as perception
    from tests.tools.media_files import write_wav

    def transcriber(settings: Any = None, runtime: Any = None) -> Any:
        def hear(path: Path, stop: threading.Event | None = None) -> tuple[str, str, str]:
            os.kill(os.getpid(), getattr(signal, signal_name))
            assert stop is not None and stop.wait(10)
            return ("meet me", "en", "fake-asr")

        return hear

    monkeypatch.setattr(perception, "default_transcriber", transcriber)
    voice = write_wav(tmp_path / "v.wav")
    with make_agent(["Never said."]) as agent, pytest.raises(SystemExit) as ended:
        cli._chat_with(agent, "listen", None, False, None, 0, [voice], False)
    assert ended.value.code == code
    err = capsys.readouterr().err
    assert "error" not in err and ("nothing was sent or remembered]" in err) is said, err


class LoadedApart(FakeListChatModel):
    """A fake chat model with a load step, as ChatLlamaCpp has: which threads load it."""

    loaded_on: list[str] = Field(default_factory=list)

    def load(self) -> None:
        import threading

        self.loaded_on.append(threading.current_thread().name)


def test_one_turn_loads_the_model_beside_the_turn(capsys: pytest.CaptureFixture[str]) -> None:
    """``-m`` opened the memory store and the embedder, then loaded the model, one after the
    other: the model now loads on a thread of its own from the start of the turn, joined by its end."""
    model = LoadedApart(responses=["Evening."], loaded_on=[])
    with Agent(load_settings(n_ctx=2048, max_tokens=16), model=model) as agent:
        cli._chat_with(agent, "hi", None, True, None, 0, [], False)
    assert json.loads(capsys.readouterr().out)["reply"] == "Evening."
    assert model.loaded_on == ["agentmm-model-load"]


def test_with_memory_on_the_store_s_embedder_loads_beside_the_turn_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the model, the thread loads the embedder the memory store embeds with (the turn's
    recall loaded it only once the store was open)."""
    from agentmm.memory.embeddings import SentenceTransformerEmbeddings

    loaded: list[tuple[object, str]] = []

    def load(self: SentenceTransformerEmbeddings) -> None:
        import threading

        loaded.append((self, threading.current_thread().name))

    monkeypatch.setattr(SentenceTransformerEmbeddings, "load", load)
    model = LoadedApart(responses=[], loaded_on=[])
    with Agent(load_settings(memory=True), model=model) as agent:
        with cli._models_loading_beside(agent):
            pass
        assert model.loaded_on == ["agentmm-model-load"]
        assert loaded == [(agent.store.embeddings, "agentmm-model-load")]  # type: ignore[union-attr]


def test_a_thread_whose_persona_went_names_it_as_written(
    isolated_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The message quoted the name's ``repr``: "this thread plays 'a/b\\\\c'"."""
    card = isolated_env / "personas" / "a-b-c.toml"
    card.parent.mkdir()
    card.write_text('name = "a/b\\\\c"\ndescription = "A wren."\n')
    with make_agent(["Hi.", "Hi."]) as agent:
        thread = one_turn_json(agent, capsys, persona="a/b\\c")["thread_id"]
        card.unlink()
        agent.personas.reload()
        with pytest.raises(PersonaNotFoundError, match=r"^this thread plays 'a/b\\c', which is no longer installed"):
            cli._chat_with(agent, "hi", thread, True, None, 0, [], False)
