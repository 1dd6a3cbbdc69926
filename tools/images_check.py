"""``agentmm doctor``'s ``images`` check: can pictures be captioned and searched here, and how.

Offline and uncached there are no CoCa (captions) or CLIP (search) weights: nothing ships them
on PyPI. A picture then got a note in the chat and ``images index`` failed, while doctor said
nothing about pictures at all. Here the check says, without loading a model or importing
open_clip (torch), what each would use, whether its weights are here or can download, and which
setting gives one; as the hub check, it never fails for being offline (a normal state).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from agentmm.settings import Settings
from agentmm.tools._openclip import cached_or_downloadable, weights_label
from agentmm.tools.caption import DEFAULT_COCA_MODEL, DEFAULT_COCA_PRETRAINED
from agentmm.tools.clip_search import pretrained_from_setting

CAPTION_HINT = ("set caption_model and caption_mmproj to a vision-language GGUF and its image projector (mmproj), "
                "or mmproj to the chat model's own, or run once with a network to fetch CoCa")  # fmt: skip
SEARCH_HINT = "set clip_pretrained to a local open_clip checkpoint, or run once with a network to fetch it"


def images_check(settings: Settings) -> dict[str, Any]:
    """The check: ``ok`` (False only for a half-configured captioner), ``detail``, ``captions``
    and ``search`` (whether each works here) and ``captioner`` (``native``: the chat model sees
    pictures itself; ``vlm``; ``coca``; None)."""
    captioner, captions, said, ok = _captions(settings)
    search, searched = _search(settings)
    detail = f"{said}; {searched}"
    return {"name": "images", "ok": ok, "detail": detail, "captions": captions, "search": search,
            "captioner": captioner}  # fmt: skip


def _captions(settings: Settings) -> tuple[str | None, bool, str, bool]:
    if settings.mmproj:
        return "native", True, f"pictures go to the chat model itself (mmproj {settings.mmproj})", True
    if settings.caption_model or settings.caption_mmproj:
        if not (settings.caption_model and settings.caption_mmproj):
            missing = "caption_mmproj (its image projector)" if settings.caption_model else "caption_model (the GGUF)"
            return None, False, f"no image captioner: a VLM captioner needs both files: set {missing} too", False
        return "vlm", True, f"pictures are captioned by {settings.caption_model} (caption_model)", True
    if importlib.util.find_spec("open_clip") is None:
        return None, False, f"pictures cannot be captioned: open_clip is not installed; {CAPTION_HINT}", True
    state = cached_or_downloadable(DEFAULT_COCA_MODEL, DEFAULT_COCA_PRETRAINED, settings.models_dir)
    if state is None:
        return None, False, f"pictures cannot be captioned here: no CoCa weights offline; {CAPTION_HINT}", True
    return "coca", True, f"pictures are captioned by CoCa ({DEFAULT_COCA_MODEL}, weights {state})", True


def _search(settings: Settings) -> tuple[bool, str]:
    pretrained = pretrained_from_setting(settings.clip_pretrained)
    name = f"CLIP {settings.clip_model} {weights_label(pretrained)}"
    if importlib.util.find_spec("open_clip") is None:
        return False, "image search is off: open_clip is not installed (pip install open_clip_torch)"
    if pretrained is None:
        return True, f"image search by {name}: random weights, results are meaningless (clip_pretrained)"
    if Path(pretrained).expanduser().is_file():
        return True, f"image search by {name} (clip_pretrained, a local checkpoint)"
    state = cached_or_downloadable(settings.clip_model, pretrained, settings.models_dir)
    if state is None:
        return False, f"image search is off here: no {name} weights offline; {SEARCH_HINT}"
    return True, f"image search by {name} (weights {state})"
