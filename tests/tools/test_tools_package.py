"""``agentmm.tools`` is cheap to import and hands out real LangChain tools by name."""

from __future__ import annotations

import json
import subprocess
import sys

import agentmm.tools

HEAVY = ["torch", "open_clip", "faster_whisper", "ctranslate2", "chromadb", "PIL", "transformers"]


def test_import_and_tool_lookup_load_no_model_library() -> None:
    code = (
        "import json, sys\n"
        "import agentmm.tools\n"
        "from agentmm.tools import caption_image, search_images, transcribe_audio\n"
        "from langchain_core.tools import BaseTool\n"
        "tools = [caption_image, transcribe_audio, search_images]\n"
        f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules],"
        " 'tools': [t.name for t in tools if isinstance(t, BaseTool)]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert json.loads(out) == {"heavy": [], "tools": ["caption_image", "transcribe_audio", "search_images"]}


def test_every_export_resolves() -> None:
    for name in agentmm.tools.__all__:
        assert getattr(agentmm.tools, name) is not None
    assert set(agentmm.tools.__all__) <= set(dir(agentmm.tools))


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        agentmm.tools.no_such_tool  # noqa: B018
    except AttributeError as error:
        assert "no_such_tool" in str(error)
    else:
        raise AssertionError("expected AttributeError")
