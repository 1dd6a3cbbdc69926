"""One process per embedded Chroma directory: the image index's directory lock.

Two writers leave broken items in a Chroma directory (MODELS.md), so an ``ImageIndex`` holds
:class:`agentmm.dirlock.DirectoryLock` on its directory; another process gets
``ImageIndexInUseError`` naming the holder's PID. A lock left by a killed process is taken
over, and inside one process the lock is counted, so several ``ImageIndex`` objects may share
a directory.
"""

from __future__ import annotations

from pathlib import Path

from agentmm import dirlock
from agentmm.tools.errors import ImageIndexError, ImageIndexInUseError

LOCK_FILENAME = "agentmm-images.lock"


def _unusable(directory: Path, exc: OSError) -> ImageIndexError:
    return ImageIndexError(f"cannot open image index {directory}: {exc.strerror or exc}")


class DirectoryLock(dirlock.DirectoryLock):
    """An exclusive, per-process claim on an image index directory."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, LOCK_FILENAME, in_use=ImageIndexInUseError, unusable=_unusable)
