"""A captioner for tests that enters through the real seam (``agentmm.tools.caption.Captioner``)."""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image


class FakeCaptioner:
    """Says what ``describe`` returns of each picture (a fixed text, or a function of the image)."""

    def __init__(self, describe: str | Callable[[Image.Image], str], name: str = "fake-captioner") -> None:
        self.name = name
        self._describe = describe

    def describe(self, image: Image.Image) -> str:
        return self._describe if isinstance(self._describe, str) else self._describe(image)
