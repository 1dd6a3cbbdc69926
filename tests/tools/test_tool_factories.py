"""The perception tools an Agent hands its model are built by their factories over that agent's
settings and runtime, not the process's: its data dir's image index, its captioner, its speech
model; what they open is closed with the agent.

The model is scripted (``ScriptedToolModel``); the tools, the graph's tool loop, the image
index (open_clip ViT-B-32 with random weights) and Chroma are the real ones.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from agentmm.graphs.agent import Agent
from agentmm.plugins import build_tools, discover_tools
from agentmm.runtime import Runtime
from agentmm.settings import load_settings
from agentmm.tools import caption_image, search_images, transcribe_audio
from agentmm.tools._dirlock import LOCK_FILENAME
from agentmm.tools.builtin import roll_dice
from agentmm.tools.clip_search import INDEX_DIRNAME, ImageIndex, default_image_index
from agentmm.tools.shared_runtime import close_process_runtime
from tests.graphs.scripted_model import ScriptedToolModel, call
from tests.tools.media_files import make_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _close_process_runtime() -> Iterator[None]:
    yield
    close_process_runtime()


def run_calls(agent: Agent, message: str) -> list[dict[str, Any]]:
    """The tool calls of one turn, as the chat is told of them while the turn runs."""
    reported: list[dict[str, Any]] = []
    turn = agent.stream(message)
    turn.on_tool_calls = reported.extend
    "".join(turn)
    assert reported == turn.result.trace["tool_calls"]
    return reported


def locked_by_another_process(data_dir: Path) -> bool:
    """Whether a new process would be refused the image index of ``data_dir`` (its flock)."""
    probe = (
        "import fcntl, sys\n"
        "f = open(sys.argv[1], 'a')\n"
        "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n    print('locked')\n"
        "else:\n    print('free')\n"
    )
    lock = data_dir / INDEX_DIRNAME / LOCK_FILENAME
    out = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "locked"


def paint(folder: Path, names: dict[str, tuple[int, int, int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, color in names.items():
        make_image(folder / f"{name}.png", color)
    return folder


@pytest.mark.slow
def test_two_agents_search_their_own_image_indexes_and_close_them(tmp_path: Path) -> None:
    # The process's settings (AGENTMM_DATA_DIR) point at tmp_path/data; each agent keeps its data
    # elsewhere, and that is where its own pictures were indexed.
    beach = paint(tmp_path / "beach", {"beach": (240, 210, 120), "dunes": (230, 200, 110)})
    forest = paint(tmp_path / "forest", {"forest": (20, 120, 30)})
    agents = []
    for name, pictures in (("a", beach), ("b", forest)):
        settings = load_settings(data_dir=tmp_path / name, clip_pretrained="random", tools=["search_images"])
        script = [call("search_images", "c1", query="the beach last summer", k=5), AIMessage("Here.")]
        agent = Agent(settings, model=ScriptedToolModel(script=script))
        # The index the model's tool will search: opened in the agent's runtime.
        assert default_image_index(settings, agent.runtime).index_dir(pictures).added == len(list(pictures.iterdir()))
        agents.append(agent)
    first, second = agents
    indexes = [default_image_index(agent.settings, agent.runtime) for agent in agents]
    assert indexes[0] is not indexes[1] and indexes[0].directory != indexes[1].directory
    found = {}
    for agent in agents:
        (searched,) = run_calls(agent, "find the picture of the beach from last summer")
        assert searched["status"] == "ok"
        found[agent] = {Path(line.split()[1]).parent for line in searched["output"].splitlines()}
    assert found == {first: {beach}, second: {forest}}
    assert search_images.metadata and not any(tool is search_images for tool in first.tools)

    assert locked_by_another_process(tmp_path / "a") and locked_by_another_process(tmp_path / "b")
    first.close()
    assert not locked_by_another_process(tmp_path / "a")  # released by Agent.close
    assert locked_by_another_process(tmp_path / "b")  # the other agent's is its own
    second.close()
    assert not locked_by_another_process(tmp_path / "b")


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


def test_the_speech_model_loads_into_the_agents_runtime(tmp_path: Path, short_speech_wav: Path) -> None:
    script = [call("transcribe_audio", "c1", path=str(short_speech_wav)), AIMessage("Heard.")]
    with Agent(load_settings(tools=["transcribe_audio"]), model=ScriptedToolModel(script=script)) as agent:
        (heard,) = run_calls(agent, "what does the recording say?")
        assert heard["status"] == "ok" and "coffee" in heard["output"].lower()
        loaded = [key for key in agent.runtime._opened if key[0] == "speech model"]
        assert len(loaded) == 1
    assert agent.runtime.closed


def test_other_tools_are_kept_and_what_their_author_set_carries_over() -> None:
    settings = load_settings(asr_model="base.en")
    given = [roll_dice, search_images, transcribe_audio, caption_image]
    search_images.tags = ["mine"]
    try:
        bound = build_tools(given, settings, Runtime())
    finally:
        search_images.tags = None
    assert bound[0] is roll_dice
    assert [t.name for t in bound] == [t.name for t in given]
    for original, mine in zip(given[1:], bound[1:], strict=True):
        assert mine is not original
        assert mine.handle_tool_error == original.handle_tool_error
        assert mine.args == original.args and mine.description == original.description
        assert mine.metadata == original.metadata
    assert bound[1].tags == ["mine"]


def test_a_plugin_may_be_a_factory_of_the_agents_settings_and_runtime(tmp_path: Path) -> None:
    folder = tmp_path / "tools"
    folder.mkdir()
    (folder / "greeter.py").write_text(
        "from langchain_core.tools import tool\n"
        "from agentmm.plugins import tool_factory\n\n"
        "@tool_factory\n"
        "def greeters(settings, runtime):\n"
        "    opened = runtime.get('greeting', lambda: f'hello {settings.user_name}')\n\n"
        "    @tool\n"
        "    def greet(who: str) -> str:\n"
        '        """Greet someone."""\n'
        "        return f'{opened}, says {who}'\n\n"
        "    return [greet]\n"
    )
    settings = load_settings(tools_dir=folder, tools=["greet"], user_name="Ada")
    script = [call("greet", "g1", who="Bo"), AIMessage("Done.")]
    with Agent(settings, model=ScriptedToolModel(script=script)) as agent:
        (greeted,) = run_calls(agent, "greet Bo")
        assert greeted["output"] == "hello Ada, says Bo"
        assert agent.runtime.peek("greeting") == "hello Ada"
    catalog = discover_tools(folder, entry_points=False, settings=settings, runtime=Runtime())
    assert list(catalog.tools) == ["greet"] and catalog.problems == []


def test_the_module_level_tools_keep_working_in_the_process_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another LangChain app calls the exported tool: it searches the process's settings' index.
    from agentmm.tools.shared_runtime import process_runtime

    monkeypatch.setenv("AGENTMM_CLIP_PRETRAINED", "random")
    photos = paint(tmp_path / "photos", {"sea": (20, 60, 200)})
    index = default_image_index(load_settings())
    assert index is default_image_index(load_settings())
    index.index_dir(photos)
    assert str(photos / "sea.png") in search_images.invoke({"query": "the blue sea", "k": 1})
    assert any(key[0] == "image index" for key in process_runtime()._opened)
    close_process_runtime()
    with ImageIndex(load_settings().data_dir, pretrained=None) as again:  # its lock was let go
        assert len(again) == 1
