"""Typed errors of the perception tools.

Each is an ``AgentmmError``, so the CLI prints it as one line and exits non-zero, and a graph's
tools node can hand the line to the model. Media errors carry the path, because "which file?"
is the first thing a user asks.
"""

from __future__ import annotations

from pathlib import Path

from agentmm.errors import AgentmmError


class ToolError(AgentmmError):
    """A perception tool cannot do its work because of its input or its setup."""


# --- media files ----------------------------------------------------------------------------


class MediaError(ToolError):
    """A media file cannot be used; ``path`` names it."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        super().__init__(message)


class MediaNotFoundError(MediaError):
    """No file at the path (or a symlink to nothing)."""


class NotAFileError(MediaError):
    """The path is a directory or another non-regular file."""


class MediaUnreadableError(MediaError):
    """The file exists but this process may not read it."""


class EmptyMediaError(MediaError):
    """The file has no bytes."""


class UnsupportedMediaError(MediaError):
    """The bytes are no image or audio format the tools know, or the wrong kind for the tool."""


class CorruptMediaError(MediaError):
    """The file starts like a known format but is truncated or damaged."""


class ImageTooLargeError(MediaError):
    """The image declares more pixels than the decompression-bomb guard allows."""


# --- models -----------------------------------------------------------------------------------


class ToolModelError(ToolError):
    """A tool's model cannot be found or loaded."""


class SpeechModelError(ToolModelError):
    """The speech-recognition model cannot be found or loaded."""


class VisionModelError(ToolModelError):
    """An open_clip model or its weights cannot be found or loaded."""


class VisionWeightsUnavailableError(VisionModelError):
    """Pretrained open_clip weights are neither on disk nor downloadable (e.g. offline)."""


class CaptionerUnavailableError(ToolModelError):
    """No image captioner can run here: no VLM configured and no CoCa weights offline."""


# --- the image index ----------------------------------------------------------------------------


class ImageIndexError(ToolError):
    """The image index cannot be opened, read or written."""


class ImageIndexInUseError(ImageIndexError):
    """Another process holds the image index directory (two writers corrupt a Chroma directory)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"PID {pid}" if pid else "another process"
        super().__init__(f"image index {path} is in use by {holder}; close it and try again")
