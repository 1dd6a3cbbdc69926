"""The built-in perception tools bound to one ``Settings``.

Why: ``caption_image``, ``transcribe_audio`` and ``search_images`` as exported read the
process's settings (config file and environment) on first use, which suits another LangChain
app. An ``Agent`` made with settings of its own (its data dir, a VLM captioner, a bigger
Whisper model, a CLIP model) must hand its model tools that use those, or the model would
search another image index than the one ``agentmm images index`` filled for it. Nothing
loads until the model calls a tool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

    from agentmm.settings import Settings

PERCEPTION_TOOLS = frozenset({"caption_image", "transcribe_audio", "search_images"})


def configured_tools(tools: Sequence[BaseTool], settings: Settings) -> list[BaseTool]:
    """``tools`` with each built-in perception tool replaced by one bound to ``settings``;
    every other tool is kept as it is."""
    if not any(tool.name in PERCEPTION_TOOLS for tool in tools):
        return list(tools)  # the usual chat: the perception modules need not even be imported
    makers = _makers()
    return [_bound(tool, makers[id(tool)], settings) if id(tool) in makers else tool for tool in tools]


def _makers() -> dict[int, Callable[[Settings], BaseTool]]:
    from agentmm.tools import asr, caption, clip_search

    return {
        id(caption.caption_image): lambda s: caption.make_caption_image_tool(caption.captioner_for(s)),
        id(asr.transcribe_audio): lambda s: asr.make_transcribe_audio_tool(s.asr_model),
        id(clip_search.search_images): lambda s: clip_search.make_search_images_tool(
            lambda: clip_search.default_image_index(s)
        ),
    }


def _bound(original: BaseTool, make: Callable[[Settings], BaseTool], settings: Settings) -> BaseTool:
    """The tool ``make`` builds, carrying what the original's author set on it (errors handled,
    approval metadata, tags)."""
    bound = make(settings)
    bound.handle_tool_error = original.handle_tool_error
    bound.metadata = dict(original.metadata) if original.metadata else None
    bound.tags = list(original.tags) if original.tags else None
    return bound
