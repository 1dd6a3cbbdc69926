"""Perception and utility tools (installed as ``agentmm.tools``), each a LangChain tool.

- ``caption_image``: image -> caption (a configured GGUF VLM, else open_clip CoCa);
- ``transcribe_audio``: speech -> text (faster-whisper, shipped Whisper tiny.en offline);
- ``search_images``: text -> ranked image paths (open_clip embeddings in a Chroma index);
- ``roll_dice``, ``current_datetime``, ``calculate``: small role-play helpers;
- ``search_memory``, ``save_memory``: the agent's own long-term memory of the user.

Each tool has a plain library function beside it (``caption_file``, ``transcribe``,
``ImageIndex``) and a factory for a configured copy. Names resolve lazily (module
``__getattr__``) and the models load on first use, so ``import agentmm.tools`` costs
nothing: no torch, open_clip, faster-whisper or chromadb until a tool runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentmm.tools.asr import (
        Segment,
        Transcript,
        load_speech_model,
        make_transcribe_audio_tool,
        transcribe,
        transcribe_audio,
    )
    from agentmm.tools.caption import (
        Caption,
        Captioner,
        CocaCaptioner,
        VLMCaptioner,
        caption_file,
        caption_image,
        make_caption_image_tool,
        make_captioner,
    )
    from agentmm.tools.clip_search import (
        ClipEmbedder,
        Hit,
        ImageIndex,
        IndexReport,
        default_image_index,
        make_search_images_tool,
        search_images,
    )
    from agentmm.tools.media import MediaType, check_audio, content_hash, open_image, sniff
    from agentmm.tools.memory_tools import save_memory, search_memory

__all__ = [
    "Caption",
    "Captioner",
    "ClipEmbedder",
    "CocaCaptioner",
    "Hit",
    "ImageIndex",
    "IndexReport",
    "MediaType",
    "Segment",
    "Transcript",
    "VLMCaptioner",
    "calculate",
    "caption_file",
    "caption_image",
    "check_audio",
    "content_hash",
    "current_datetime",
    "default_image_index",
    "load_speech_model",
    "make_caption_image_tool",
    "make_captioner",
    "make_search_images_tool",
    "make_transcribe_audio_tool",
    "open_image",
    "roll_dice",
    "save_memory",
    "search_images",
    "search_memory",
    "sniff",
    "transcribe",
    "transcribe_audio",
]

_MODULES = {
    "asr": {
        "Segment",
        "Transcript",
        "load_speech_model",
        "make_transcribe_audio_tool",
        "transcribe",
        "transcribe_audio",
    },
    "caption": {
        "Caption",
        "Captioner",
        "CocaCaptioner",
        "VLMCaptioner",
        "caption_file",
        "caption_image",
        "make_caption_image_tool",
        "make_captioner",
    },
    "clip_search": {
        "ClipEmbedder",
        "Hit",
        "ImageIndex",
        "IndexReport",
        "default_image_index",
        "make_search_images_tool",
        "search_images",
    },
    "media": {"MediaType", "check_audio", "content_hash", "open_image", "sniff"},
    "builtin": {"calculate", "current_datetime", "roll_dice"},
    "memory_tools": {"save_memory", "search_memory"},
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
