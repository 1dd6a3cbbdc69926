"""Images for llama.cpp: LangChain image blocks as llama-cpp-python takes them, and the
multimodal chat handler that reads them.

With an image projector (``mmproj_path``) a model sees images: LangChain image blocks
(``{"type": "image", "base64": ...}`` or ``{"type": "image_url", ...}``) on user messages go to
llama-cpp-python's multimodal chat handler. Only calls that hold an image take that path (the
handler clears the KV cache on every call); text-only calls keep the prefix cache. Without a
projector an image is an ``UnsupportedContentError``: dropping it silently would let the model
answer about a picture it never saw. Nothing here imports llama_cpp until a handler is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage

from agentmm.errors import UnsupportedContentError


def llama_messages(
    messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]] = ()
) -> tuple[list[dict[str, Any]], int]:
    """Messages as llama-cpp-python takes them, and how many images they hold.

    LangChain's image blocks, both the v1 standard ones (``{"type": "image", "base64": ...,
    "mime_type": ...}`` or ``"url"``) and OpenAI-style ``{"type": "image_url", ...}``, become
    ``{"type": "image_url", "image_url": {"url": ...}}`` parts, the form llama-cpp-python's
    multimodal handlers read. A message whose parts are all text becomes one string (text
    chat templates expect a string). Anything else (audio, files, an image by file id, an
    image outside a user message) is an ``UnsupportedContentError``.
    """
    from agentmm.tool_calling import render_messages

    try:
        rendered = render_messages(messages, tools)
    except ValueError as exc:  # langchain-core's converter: e.g. an image given by file id
        raise UnsupportedContentError(f"the chat model cannot take this message content: {exc}") from exc
    return with_image_parts(rendered)


def with_image_parts(rendered: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """OpenAI-style messages with their images as llama-cpp-python's handlers read them, and
    how many images they hold (see ``llama_messages``)."""
    images = 0
    out: list[dict[str, Any]] = []
    for message in rendered:
        content = message.get("content")
        if not isinstance(content, list):
            out.append(message)
            continue
        parts: list[dict[str, Any]] = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind == "text":
                parts.append({"type": "text", "text": str(part.get("text", ""))})
            elif kind == "image_url":
                if message.get("role") != "user":
                    raise UnsupportedContentError("images can be sent only in user messages")
                image = part["image_url"]
                url = image.get("url") if isinstance(image, dict) else image
                parts.append({"type": "image_url", "image_url": {"url": str(url)}})
                images += 1
            else:
                raise UnsupportedContentError(f"the chat model takes text and images, not {kind} content")
        if all(p["type"] == "text" for p in parts):
            out.append({**message, "content": "".join(p["text"] for p in parts)})
        else:
            out.append({**message, "content": parts})
    return out, images


def without_images(rendered: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``llama_messages`` output with the images left out (each message's text kept)."""
    out = []
    for message in rendered:
        content = message.get("content")
        if isinstance(content, list):
            message = {**message, "content": "".join(p["text"] for p in content if p["type"] == "text")}
        out.append(message)
    return out


def vision_handler_class() -> type[Any]:
    """llama-cpp-python's generic multimodal handler (libmtmd: any projector, the model's own
    chat template), or the LLaVA 1.5 one on releases without it.

    The mtmd handler puts a media marker where each image was but leaves the message content a
    list of parts, which templates written for plain string content (SmolLM2's, most text
    models') print as a Python list. Like llama.cpp's server, the subclass joins a message's
    parts into one string when all of them are text by then.
    """
    from llama_cpp import llama_chat_format

    base = getattr(llama_chat_format, "MTMDChatHandler", None)
    if base is None:
        return llama_chat_format.Llava15ChatHandler

    class FlatContentHandler(base):  # type: ignore[misc,valid-type]
        @classmethod
        def _convert_message_for_template(cls, message: Any, media_marker: str) -> dict[str, Any]:
            converted = super()._convert_message_for_template(message, media_marker)
            content = converted.get("content")
            if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                converted["content"] = "\n".join(str(p.get("text", "")) for p in content)
            return converted

    return FlatContentHandler
