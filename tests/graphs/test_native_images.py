"""Pictures sent to a chat model that sees them itself (``accepts_images``): no captioner runs,
the image rides on the turn's user message for the model call only, the thread stores words."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph

from agentmm.graphs.chat import build_graph
from agentmm.repl.terminal import user_note
from agentmm.settings import Settings
from agentmm.state import TurnContext
from agentmm.tokens import TokenCounter
from agentmm.tools.perception import Perception
from tests.graphs.scripted_model import ScriptedToolModel, call
from tests.tools.fake_captioner import FakeCaptioner
from tests.tools.media_files import make_image, write_wav

WORDS = TokenCounter(lambda text: len(text.split()))
CONFIG = {"configurable": {"thread_id": "t"}}


class SeeingModel(ScriptedToolModel):
    """A scripted model that says it takes images (as ChatLlamaCpp with an mmproj does)."""

    model_name: str = "tiny-vlm"
    accepts_images: bool = True


class Perceivers:
    """A captioner that must never run, and a transcriber that records its calls."""

    def __init__(self) -> None:
        self.captioned: list[object] = []
        self.transcribed: list[Path] = []

    def caption(self, image: object) -> str:
        self.captioned.append(image)
        return "a caption nobody asked for"

    def transcribe(self, path: Path) -> tuple[str, str, str]:
        self.transcribed.append(path)
        return "meet me at the lighthouse", "en", "fake-asr"


def graph_for(model: ScriptedToolModel, perceivers: Perceivers, **kwargs: Any) -> CompiledStateGraph:
    perception = Perception(FakeCaptioner(perceivers.caption), perceivers.transcribe)
    return build_graph(
        Settings(), model=model, checkpointer=InMemorySaver(), counter=WORDS, perception=perception, **kwargs
    )


def run(graph: CompiledStateGraph, text: str, attachments: list[Path] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    context = TurnContext(user_name="Ada", attachments=[str(a) for a in attachments])
    return graph.invoke({"input": text}, CONFIG, context=context)


def image_blocks(message: BaseMessage) -> list[dict[str, Any]]:
    content = message.content if isinstance(message.content, list) else []
    return [b for b in content if isinstance(b, dict) and b.get("type") == "image"]


def last_user(prompt: list[BaseMessage]) -> BaseMessage:
    return next(m for m in reversed(prompt) if isinstance(m, HumanMessage))


def test_the_picture_goes_to_the_model_and_the_thread_keeps_words(tmp_path: Path) -> None:
    perceivers = Perceivers()
    model = SeeingModel(script=[AIMessage("What a red square!"), AIMessage("You're welcome.")])
    graph = graph_for(model, perceivers)
    photo = make_image(tmp_path / "photo.png")
    state = run(graph, "What do you think of this?", [photo])

    assert perceivers.captioned == []  # the model sees the picture itself
    assert state["trace"]["path"] == ["ingest", "perceive", "compose", "generate"]
    (seen,) = state["trace"]["observations"]
    assert seen["kind"] == "image" and seen["native"] is True and seen["text"] == ""
    assert seen["model"] == "tiny-vlm (native)" and seen["file"] == str(photo) and seen["seconds"] >= 0

    sent = last_user(model.prompts[-1])
    (block,) = image_blocks(sent)
    assert block["mime_type"] == "image/png" and len(block["base64"]) > 100
    assert sent.content[-1]["type"] == "text" and "What do you think of this?" in sent.content[-1]["text"]
    assert "[Ada sends you a picture]" in sent.content[-1]["text"]

    # The thread (what the checkpointer stores) holds words and the file's path, never the image.
    stored = graph.get_state(CONFIG).values
    dumped = json.dumps([m.model_dump() for m in stored["messages"]], default=str) + json.dumps(stored["trace"])
    assert block["base64"][:64] not in dumped and "base64" not in dumped
    human = stored["messages"][-2]
    assert human.content == "What do you think of this?"
    assert "[Ada sends you a picture]" in human.additional_kwargs["agentmm_context"]

    # The next turn does not send the picture again; its context stays in the history as words.
    run(graph, "Thanks!")
    prompt = model.prompts[-1]
    assert all(not image_blocks(m) for m in prompt)
    assert any("[Ada sends you a picture]" in m.text for m in prompt if isinstance(m, HumanMessage))


def test_a_picture_alone_is_a_turn_and_a_voice_note_still_goes_through_speech_recognition(tmp_path: Path) -> None:
    perceivers = Perceivers()
    model = SeeingModel(script=[AIMessage("On my way.")])
    graph = graph_for(model, perceivers)
    voice = write_wav(tmp_path / "note.wav")
    photo = make_image(tmp_path / "map.png")
    state = run(graph, "", [voice, photo])

    assert perceivers.captioned == [] and perceivers.transcribed == [voice]
    kinds = [(o["kind"], bool(o.get("native"))) for o in state["trace"]["observations"]]
    assert kinds == [("audio", False), ("image", True)]  # in the order sent
    assert state["messages"][-2].content == "meet me at the lighthouse"  # the voice note became the words
    sent = last_user(model.prompts[-1])
    assert len(image_blocks(sent)) == 1 and "meet me at the lighthouse" in sent.content[-1]["text"]


def test_bad_pictures_are_error_observations_and_the_turn_goes_on(tmp_path: Path) -> None:
    perceivers = Perceivers()
    model = SeeingModel(script=[AIMessage("Hm, I can't see that.")])
    graph = graph_for(model, perceivers)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(make_image(tmp_path / "whole.png", size=(200, 200)).read_bytes()[:80])
    renamed = tmp_path / "photo.png"
    with zipfile.ZipFile(renamed, "w") as z:
        z.writestr("a.txt", "hello")
    state = run(graph, "look", [truncated, renamed, tmp_path / "missing.jpg"])

    observations = state["trace"]["observations"]
    assert [o["file"] for o in observations] == [str(truncated), str(renamed), str(tmp_path / "missing.jpg")]
    for o in observations:
        assert o["kind"] == "unsupported" and o["error"] and "\n" not in o["error"] and not o.get("native")
    assert "cut.png" in observations[0]["error"]
    assert perceivers.captioned == []
    assert state["messages"][-1].content == "Hm, I can't see that."
    assert not image_blocks(last_user(model.prompts[-1]))
    assert "could not be read" in last_user(model.prompts[-1]).text


def test_tool_rounds_keep_the_picture_and_memory_takes_an_empty_observation(tmp_path: Path) -> None:
    from langgraph.store.memory import InMemoryStore

    @tool
    def look_closer(detail: str) -> str:
        """Zoom into a detail of the picture."""
        return f"the {detail} is red"

    perceivers = Perceivers()
    model = SeeingModel(script=[call("look_closer", detail="square"), AIMessage("It is red.")])
    store = InMemoryStore()
    graph = graph_for(model, perceivers, tools=[look_closer], store=store)
    state = run(graph, "What colour is it?", [make_image(tmp_path / "photo.png")])

    assert state["trace"]["path"] == ["ingest", "perceive", "recall", "compose", "generate", "tools", "generate",
                                      "remember"]  # fmt: skip
    assert len(model.prompts) == 2 and all(len(image_blocks(last_user(p))) == 1 for p in model.prompts)
    assert isinstance(state["messages"][-2], ToolMessage) and state["messages"][-1].content == "It is red."
    assert [w["id"] for w in state["trace"]["remembered"]] == ["t:1:user", "t:1:assistant"]
    assert "base64" not in json.dumps([i.value for i in store.search(("memories",), limit=10)])


def test_a_model_that_cannot_see_gets_captions(tmp_path: Path) -> None:
    perceivers = Perceivers()
    blind = SeeingModel(script=[AIMessage("Nice.")], accepts_images=False)
    state = run(graph_for(blind, perceivers), "look", [make_image(tmp_path / "photo.png")])
    assert len(perceivers.captioned) == 1 and not image_blocks(last_user(blind.prompts[-1]))
    assert state["trace"]["observations"][0]["text"] == "a caption nobody asked for"


def test_the_chat_shows_a_native_picture_without_an_empty_caption() -> None:
    error, line = user_note({"kind": "image", "file": "/x/photo.png", "model": "tiny-vlm (native)", "text": "",
                             "native": True})  # fmt: skip
    assert not error and line == "[photo.png: sent to tiny-vlm (native)]"
