"""Perception in the turn: the perceive node in the real graph, and through the CLI."""

from __future__ import annotations

import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver

from agentmm.errors import InputTooLongError
from agentmm.graphs.chat import build_graph
from agentmm.settings import Settings
from agentmm.state import TurnContext
from agentmm.tokens import TokenCounter
from agentmm.tools.perception import Perception
from tests.test_cli import agentmm, assert_one_line_error, ok_json
from tests.tools.fake_captioner import FakeCaptioner
from tests.tools.media_files import make_image

WORDS = TokenCounter(lambda text: len(text.split()))


class Slow:
    """Fake captioner / transcriber that take a known time and record overlap."""

    def __init__(self) -> None:
        self.running = 0
        self.overlapped = False
        self.lock = threading.Lock()

    def _work(self) -> None:
        with self.lock:
            self.running += 1
            self.overlapped |= self.running > 1
        time.sleep(0.3)
        with self.lock:
            self.running -= 1

    def caption(self, image: object) -> str:
        self._work()
        return "a red square on a table"

    def transcribe(self, path: Path) -> tuple[str, str, str]:
        self._work()
        return "meet me at the lighthouse", "en", "fake-asr"


def run(graph: Any, text: str, attachments: list[str]) -> dict[str, Any]:
    return graph.invoke({"input": text}, {"configurable": {"thread_id": "t"}},
                        context=TurnContext(user_name="Ada", attachments=attachments))  # fmt: skip


def test_image_and_voice_note_run_concurrently_and_reach_the_prompt(tmp_path: Path, speech_wav: Path) -> None:
    fake = Slow()
    image = make_image(tmp_path / "photo.png")
    graph = build_graph(Settings(), model=FakeListChatModel(responses=["Lovely."]), checkpointer=InMemorySaver(),
                        counter=WORDS, perception=Perception(FakeCaptioner(fake.caption), fake.transcribe))  # fmt: skip
    started = time.perf_counter()
    state = run(graph, "", [str(image), str(speech_wav)])
    assert fake.overlapped and time.perf_counter() - started < 0.6 + 0.5
    assert state["trace"]["path"] == ["ingest", "perceive", "compose", "generate"]
    kinds = [o["kind"] for o in state["trace"]["observations"]]
    assert kinds == ["image", "audio"]
    human = state["messages"][-2]
    assert human.content == "meet me at the lighthouse"  # the voice note became the user's words
    assert "picture that contains: a red square" in human.additional_kwargs["agentmm_context"]
    # A turn without attachments does not run perceive, and nothing is re-perceived.
    state = run(graph, "thanks", [])
    assert "perceive" not in state["trace"]["path"]


def test_bad_attachment_is_an_observation_and_the_turn_goes_on(tmp_path: Path) -> None:
    fake = Slow()
    renamed = tmp_path / "photo.png"
    with zipfile.ZipFile(renamed, "w") as z:
        z.writestr("a.txt", "hello")
    graph = build_graph(Settings(), model=FakeListChatModel(responses=["Hm."]), checkpointer=InMemorySaver(),
                        counter=WORDS, perception=Perception(FakeCaptioner(fake.caption), fake.transcribe))  # fmt: skip
    state = run(graph, "look at this", [str(renamed), str(tmp_path / "missing.wav")])
    errors = [o.get("error") for o in state["trace"]["observations"]]
    assert all(errors) and len(errors) == 2
    assert state["messages"][-1].content == "Hm."


@pytest.mark.slow
@pytest.mark.e2e
def test_cli_perceive_and_a_voice_note_chat(tmp_path: Path, speech_wav: Path) -> None:
    results = ok_json("perceive", str(speech_wav), "--json")["results"]
    assert results[0]["kind"] == "audio" and results[0]["language"] == "en" and results[0]["text"].strip()
    bogus = tmp_path / "notes.wav"
    bogus.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    assert_one_line_error(agentmm("perceive", str(bogus)), "notes.wav")

    turn = ok_json("chat", "--audio", str(speech_wav), "--json", "--max-tokens", "20")
    assert "perceive" in turn["trace"]["path"]
    observation = turn["trace"]["observations"][0]
    assert observation["kind"] == "audio" and observation["model"] and observation["seconds"] > 0
    shown = ok_json("threads", "show", turn["thread_id"], "--json")
    assert shown["messages"][0]["content"] == observation["text"]

    image = make_image(tmp_path / "red.png")
    pictured = ok_json("chat", "-m", "What do you think?", "--image", str(image), "--json", "--max-tokens", "10")
    seen = pictured["trace"]["observations"][0]
    assert seen["kind"] == "image"
    if seen.get("error"):  # no captioner weights offline: the setup advice is in the trace
        assert seen["unavailable"] is True and "caption_model" in seen["error"]
    assert pictured["reply"] is not None  # no captioner weights offline: said in one line, the turn goes on


LONG_NOTE = " ".join(f"Sentence {i} of a long voice note." for i in range(150))  # 1,050 words


def long_note_graph() -> Any:
    """A turn graph at n_ctx 512 whose speech recognition hears ``LONG_NOTE``."""

    def long_note(path: Path) -> tuple[str, str, str]:
        return LONG_NOTE, "en", "fake-asr"

    return build_graph(Settings(n_ctx=512, max_tokens=40), model=FakeListChatModel(responses=["Long one."]),
                       checkpointer=InMemorySaver(), counter=WORDS,
                       perception=Perception(FakeCaptioner(lambda image: ""), long_note))  # fmt: skip


def test_a_voice_note_too_long_for_the_context_is_cut_short_not_the_turn(speech_wav: Path) -> None:
    """At n_ctx 512 a 1,000-token transcript failed the turn with 'the message is 12 tokens but
    only 0 fit', blaming the typed words."""
    graph = long_note_graph()
    state = run(graph, "summarise my voice note", [str(speech_wav)])
    cut = state["trace"]["truncated_parts"]
    assert [c["part"] for c in cut] == ["observations"] and cut[0]["tokens"] < 512 / 2
    context = state["messages"][-2].additional_kwargs["agentmm_context"]
    assert context.startswith("[Ada sends") and context.endswith("…") and "Sentence 0 of" in context
    assert state["messages"][-1].content == "Long one."


def test_a_voice_note_alone_is_in_the_prompt_once(speech_wav: Path) -> None:
    """A voice note sent alone became the message and was also told as an observation: the
    same transcript twice (observations 548 + message 878 tokens at n_ctx 1536)."""

    def note(path: Path) -> tuple[str, str, str]:
        return "meet me at the lighthouse at noon", "en", "fake-asr"

    graph = build_graph(Settings(), model=FakeListChatModel(responses=["See you."]), checkpointer=InMemorySaver(),
                        counter=WORDS, perception=Perception(FakeCaptioner(lambda image: ""), note))  # fmt: skip
    state = run(graph, "", [str(speech_wav)])
    human = state["messages"][-2]
    assert human.content == "meet me at the lighthouse at noon"
    assert "lighthouse" not in human.additional_kwargs.get("agentmm_context", "")
    assert "observations" not in [p["part"] for p in state["trace"]["prompt_parts"]]
    observed = state["trace"]["observations"][0]  # the trace still says what was heard
    assert observed["text"] == "meet me at the lighthouse at noon" and observed["as_message"] is True


def test_a_long_voice_note_alone_is_cut_to_fit_not_refused(speech_wav: Path) -> None:
    """A voice note alone too long for the context failed the turn ('the message is 878 tokens
    but only 715 fit'); with typed text beside it, its observation was cut to fit."""
    graph = long_note_graph()
    state = run(graph, "", [str(speech_wav)])
    cut = state["trace"]["truncated_parts"]
    assert [c["part"] for c in cut] == ["message"] and cut[0]["full_tokens"] > 1000
    assert 32 <= cut[0]["tokens"] <= (512 - 40) / 2
    message = next(p for p in state["trace"]["prompt_parts"] if p["part"] == "message")
    assert message["tokens"] == cut[0]["tokens"]
    human = state["messages"][-2]  # the thread keeps the transcript as the prompt had it
    assert human.content.startswith("Sentence 0 of") and human.content.endswith("…")
    assert state["messages"][-1].content == "Long one."
    # A typed message that long is still refused: its length is the user's to choose.
    with pytest.raises(InputTooLongError, match="the message is"):
        run(graph, LONG_NOTE, [])


def test_a_voice_note_cut_to_fit_is_shown_as_the_model_got_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """'[you said (note.wav): ...]' printed the whole transcript (1,050 words) when the prompt got
    it cut at a sentence to fit the context: the line now shows what the model got, and says so."""
    import agentmm.tools.perception as perception
    from agentmm.cli import _show_observations
    from agentmm.graphs.agent import Agent
    from agentmm.settings import load_settings
    from agentmm.threads import thread_values
    from tests.tools.media_files import write_wav

    monkeypatch.setattr(perception, "default_transcriber", lambda settings=None, runtime=None: long_note_of)
    settings = load_settings(data_dir=tmp_path / "data", n_ctx=512, max_tokens=40, memory=False)
    with Agent(settings, model=FakeListChatModel(responses=["Long one."])) as agent:
        turn = agent.stream("", attachments=[write_wav(tmp_path / "note.wav")])
        turn.on_observations = _show_observations  # as chat -m shows them, and the REPL alike
        assert "".join(turn) == "Long one."
        sent = thread_values(agent.checkpointer, turn.result.thread_id)[0]["messages"][0].text
    assert sent.endswith("…") and len(sent.split()) < 300  # cut, as the thread keeps it
    kept = len(sent.removesuffix("…").split())
    shown = capsys.readouterr().err
    assert f"[you said (note.wav): {sent} (cut to fit: {kept} of 1,050 words)]\n" in shown
    assert "Sentence 149" not in shown


def long_note_of(path: Path, stop: Any = None) -> tuple[str, str, str]:
    return LONG_NOTE, "en", "fake-asr"


def notes_of(path: Path, stop: Any = None) -> tuple[str, str, str]:
    return (LONG_NOTE if path.stem == "long" else "Meet me at the lighthouse."), "en", "fake-asr"


def shown_turn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, notes: list[str]) -> dict[str, Any]:
    """The user message the thread keeps for a turn of ``text`` with voice notes ``notes``,
    shown as chat -m (and the REPL) show its observations."""
    import agentmm.tools.perception as perception
    from agentmm.cli import _show_observations
    from agentmm.graphs.agent import Agent
    from agentmm.settings import load_settings
    from agentmm.threads import thread_values
    from tests.tools.media_files import write_wav

    monkeypatch.setattr(perception, "default_transcriber", lambda settings=None, runtime=None: notes_of)
    settings = load_settings(data_dir=tmp_path / "data", n_ctx=512, max_tokens=40, memory=False)
    with Agent(settings, model=FakeListChatModel(responses=["Long one."])) as agent:
        # Each its own sound: perception caches transcripts by the file's content.
        wavs = [write_wav(tmp_path / f"{n}.wav", b"\x00\x00" * (16000 + i)) for i, n in enumerate(notes)]
        turn = agent.stream(text, attachments=wavs)
        turn.on_observations = _show_observations
        assert "".join(turn) == "Long one."
        return thread_values(agent.checkpointer, turn.result.thread_id)[0]["messages"][0]


def test_a_voice_note_sent_with_text_and_cut_to_fit_is_shown_as_the_model_got_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sent with typed text, a note is a line of context, which compose cut to fit; the line
    showed the whole transcript (1,050 words) all the same."""
    from agentmm.context import CONTEXT_KEY

    message = shown_turn(tmp_path, monkeypatch, "What do you make of this?", ["long"])
    context = message.additional_kwargs[CONTEXT_KEY]
    assert context.endswith("…") and "Sentence 149" not in context  # the model got the note cut
    shown = capsys.readouterr().err
    line = next(line for line in shown.splitlines() if line.startswith("[you said (long.wav): "))
    sent, _, cut = line.removeprefix("[you said (long.wav): ").rpartition(" (cut to fit: ")
    assert sent.endswith("…") and context.endswith(sent) and LONG_NOTE.startswith(sent.removesuffix("…"))
    assert cut == f"{len(sent.removesuffix('…').split())} of 1,050 words)]"
    assert "Sentence 149" not in shown


def test_voice_notes_joined_as_the_message_and_cut_are_each_shown_as_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several notes sent alone are joined into the message; cut to fit, each note's line showed
    its whole transcript (no ``sent_text``: it was only given for one note)."""
    message = shown_turn(tmp_path, monkeypatch, "", ["short", "long"])
    first = "Meet me at the lighthouse."
    assert message.text.startswith(first + " Sentence 0") and message.text.endswith("…")
    shown = capsys.readouterr().err
    assert f"[you said (short.wav): {first}]\n" in shown  # sent whole
    rest = message.text.removeprefix(first + " ")
    kept = len(rest.removesuffix("…").split())
    assert f"[you said (long.wav): {rest} (cut to fit: {kept} of 1,050 words)]\n" in shown
    assert "Sentence 149" not in shown
