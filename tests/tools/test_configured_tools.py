"""The perception tools an Agent hands its model use that agent's settings, not the process's.

The model is scripted (``ScriptedToolModel``); the tools, the graph's tool loop, the image
index (open_clip ViT-B-32 with random weights) and Chroma are the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from agentmm.graphs.agent import Agent
from agentmm.settings import load_settings
from agentmm.tools import caption_image, search_images, transcribe_audio
from agentmm.tools.builtin import roll_dice
from agentmm.tools.clip_search import close_default_image_indexes, default_image_index
from agentmm.tools.configured import configured_tools
from tests.graphs.scripted_model import ScriptedToolModel, call
from tests.tools.media_files import make_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _close_indexes() -> Iterator[None]:
    yield
    close_default_image_indexes()


def run_calls(agent: Agent, message: str) -> list[dict[str, Any]]:
    """The tool calls of one turn, as the chat is told of them while the turn runs."""
    reported: list[dict[str, Any]] = []
    turn = agent.stream(message)
    turn.on_tool_calls = reported.extend
    "".join(turn)
    assert reported == turn.result.trace["tool_calls"]
    return reported


def test_the_model_searches_the_agents_own_image_index(tmp_path: Path, image_dir: Path) -> None:
    # The process's settings (AGENTMM_DATA_DIR) point at tmp_path/data; this agent keeps its
    # data elsewhere, and that is where its pictures were indexed.
    settings = load_settings(data_dir=tmp_path / "agent-data", clip_pretrained="random", tools=["search_images"])
    for name, color in {"beach": (240, 210, 120), "forest": (20, 120, 30)}.items():
        make_image(image_dir / f"{name}.png", color)
    assert default_image_index(settings).index_dir(image_dir).added == 2

    script = [call("search_images", "c1", query="the beach last summer", k=2), AIMessage("Here it is.")]
    with Agent(settings, model=ScriptedToolModel(script=script)) as agent:
        calls = run_calls(agent, "find the picture of the beach from last summer")
    assert [c["name"] for c in calls] == ["search_images"] and calls[0]["status"] == "ok"
    lines = calls[0]["output"].splitlines()
    assert len(lines) == 2 and {line.split()[1] for line in lines} == {
        str(image_dir / "beach.png"),
        str(image_dir / "forest.png"),
    }


def test_the_model_captions_with_the_agents_captioner(tmp_path: Path) -> None:
    picture = make_image(tmp_path / "p.png")
    settings = load_settings(
        caption_model=str(tmp_path / "vlm.gguf"), caption_mmproj=str(tmp_path / "mmproj.gguf"), tools=["caption_image"]
    )
    script = [call("caption_image", "c1", path=str(picture)), AIMessage("I could not look.")]
    with Agent(settings, model=ScriptedToolModel(script=script)) as agent:
        calls = run_calls(agent, "what is in p.png?")
    # The configured VLM was looked for (and is missing), not the process's default CoCa.
    assert calls[0]["status"] == "error"
    assert "vlm.gguf" in calls[0]["output"] and "CoCa" not in calls[0]["output"]


def test_other_tools_are_kept_and_what_their_author_set_carries_over() -> None:
    settings = load_settings(asr_model="base.en")
    given = [roll_dice, search_images, transcribe_audio, caption_image]
    bound = configured_tools(given, settings)
    assert bound[0] is roll_dice
    assert [t.name for t in bound] == [t.name for t in given]
    for original, mine in zip(given[1:], bound[1:], strict=True):
        assert mine is not original
        assert mine.handle_tool_error == original.handle_tool_error
        assert mine.args == original.args and mine.description == original.description
