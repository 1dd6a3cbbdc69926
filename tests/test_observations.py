"""How observations read in a turn's context: SillyTavern's phrasing by default, each line a setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver

from agentmm.errors import SettingsError
from agentmm.graphs.chat import build_graph
from agentmm.observations import ObservationPhrasing, describe_observations
from agentmm.settings import Settings, load_settings
from agentmm.state import TurnContext
from agentmm.tokens import TokenCounter
from agentmm.tools.perception import Perception
from tests.tools.fake_captioner import FakeCaptioner
from tests.tools.media_files import make_image

SEEN: list[dict[str, Any]] = [
    {"kind": "image", "file": "/photos/beach.png", "text": "a dog on a beach"},
    {"kind": "audio", "file": "/notes/a.wav", "text": "see you at noon"},
    {"kind": "image", "file": "/photos/me.png", "text": "", "native": True},
    {"kind": "unsupported", "file": "/tmp/broken.png", "error": "truncated PNG"},
    {
        "kind": "image",
        "file": "/photos/cat.png",
        "error": "no image captioner is available offline",
        "unavailable": True,
    },
    {"kind": "audio", "file": "/notes/b.wav", "error": "cannot load speech model", "unavailable": True},
    {"kind": "audio", "file": "/notes/c.wav", "text": ""},
]


def test_the_default_is_sillytaverns_phrasing() -> None:
    assert describe_observations(SEEN, "Ada", "Nora").splitlines() == [
        "[Ada sends Nora a picture that contains: a dog on a beach]",
        '[Ada sends Nora a voice note that says: "see you at noon"]',
        "[Ada sends Nora a picture]",
        "[Ada tried to send broken.png, but it could not be read: truncated PNG]",
        "[Ada sends Nora a picture, but Nora cannot see it]",  # the setup advice is the user's, not Nora's
        "[Ada sends Nora a voice note, but Nora cannot hear it]",
        "[Ada sends Nora a voice note with no words in it]",  # never a quote of nothing
    ]


def test_each_line_is_a_setting(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (isolated_env / "config.toml").write_text(
        'image_note = "*{{user}} shows {{char}} a photo: {{text}}*"\nvoice_note = "*{{USER}} says: \'{{ text }}\'*"\n'
    )
    monkeypatch.setenv("AGENTMM_UNREADABLE_NOTE", "({{file}} did not arrive)")
    monkeypatch.setenv("AGENTMM_UNSEEN_IMAGE_NOTE", "({{char}} squints at {{file}})")
    monkeypatch.setenv("AGENTMM_UNHEARD_AUDIO_NOTE", "({{file}}: static)")
    monkeypatch.setenv("AGENTMM_SILENT_AUDIO_NOTE", "({{file}}: only breathing)")
    phrasing = ObservationPhrasing.from_settings(load_settings())
    assert describe_observations(SEEN, "Ada", "Nora", phrasing).splitlines() == [
        "*Ada shows Nora a photo: a dog on a beach*",
        "*Ada says: 'see you at noon'*",
        "[Ada sends Nora a picture]",
        "(broken.png did not arrive)",
        "(Nora squints at cat.png)",
        "(b.wav: static)",
        "(c.wav: only breathing)",
    ]


def test_an_unknown_macro_is_a_one_line_settings_error(isolated_env: Path) -> None:
    (isolated_env / "config.toml").write_text('image_note = "[{{user}} sends {{caption}}]"\n')
    with pytest.raises(SettingsError, match=r"bad setting image_note .*unknown macro \{\{caption\}\}") as caught:
        load_settings()
    assert "\n" not in str(caught.value)


def test_the_turn_uses_the_phrasing_it_was_built_with(tmp_path: Path) -> None:
    def transcribe(path: Path) -> tuple[str, str, str]:
        return "", "en", "fake-asr"

    graph = build_graph(
        Settings(image_note="<{{user}} attached {{file}}: {{text}}>"),
        model=FakeListChatModel(responses=["How lovely."]), checkpointer=InMemorySaver(),
        counter=TokenCounter(lambda text: len(text.split())),
        perception=Perception(FakeCaptioner("a lighthouse at dusk"), transcribe),
    )  # fmt: skip
    image = make_image(tmp_path / "dusk.png")
    state = graph.invoke({"input": "look!"}, {"configurable": {"thread_id": "t"}},
                         context=TurnContext(user_name="Ada", attachments=[str(image)]))  # fmt: skip
    assert state["messages"][-2].additional_kwargs["agentmm_context"] == "<Ada attached dusk.png: a lighthouse at dusk>"


def test_a_picture_no_model_can_see_reads_in_character(tmp_path: Path) -> None:
    from agentmm.tools.errors import CaptionerUnavailableError

    def unavailable(image: object) -> str:
        raise CaptionerUnavailableError("no image captioner is available offline: set caption_model to ...")

    def transcribe(path: Path) -> tuple[str, str, str]:
        return "", "en", "fake-asr"

    graph = build_graph(
        Settings(), model=FakeListChatModel(responses=["Describe it to me?"]), checkpointer=InMemorySaver(),
        counter=TokenCounter(lambda text: len(text.split())),
        perception=Perception(FakeCaptioner(unavailable), transcribe),
    )  # fmt: skip
    image = make_image(tmp_path / "dusk.png")
    state = graph.invoke({"input": "look!"}, {"configurable": {"thread_id": "t"}},
                         context=TurnContext(user_name="Ada", attachments=[str(image)]))  # fmt: skip
    context = state["messages"][-2].additional_kwargs["agentmm_context"]
    assert context == "[Ada sends you a picture, but you cannot see it]"  # no persona: {{char}} is "you"
    assert "caption_model" in state["observations"][0]["error"]
