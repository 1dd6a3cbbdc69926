"""Load open_clip models once per ``Runtime``, with typed errors for every way that can fail.

A model is opened in the runtime it is asked for (an ``Agent``'s, else the tools package's
process runtime, ``shared_runtime``), so two agents do not share one and closing an agent
lets its models go.

No CLIP or CoCa weights ship on PyPI: a pretrained tag downloads from the hub where a network
exists (or is found in its cache), a path loads a local checkpoint, and ``pretrained=None``
builds the architecture with random weights. Random weights are seeded, so every process
builds the same model: an index written by one run stays searchable by the next.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentmm.hub import offline_unless_reachable
from agentmm.tools.errors import VisionModelError, VisionWeightsUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable

    from agentmm.runtime import Runtime

RANDOM_INIT_SEED = 0


def load_openclip(
    model_name: str,
    pretrained: str | None,
    device: str = "cpu",
    cache_dir: Path | None = None,
    runtime: Runtime | None = None,
) -> tuple[Any, Callable[[Any], Any]]:
    """``(model, preprocess)`` in eval mode; loaded on first use into ``runtime`` (default: the
    process runtime) and then shared there (a second caller waits instead of loading a copy).

    ``cache_dir`` is where downloaded weights go (default: the Hugging Face cache).
    """
    from agentmm.tools.shared_runtime import process_runtime

    key = ("open_clip", model_name, pretrained, device, str(cache_dir) if cache_dir else None)
    return (runtime or process_runtime()).get(key, lambda: _create(model_name, pretrained, device, cache_dir))


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """open_clip logs through the root logger (a failed download with ``logging.error`` before
    it raises, random weights with ``logging.warning``); with no handler there, that call would
    install one for good (``basicConfig``) and print a long line on stderr. The typed error
    raised after a failure says it all."""
    import logging

    quiet = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(quiet)
    try:
        yield
    finally:
        root.removeHandler(quiet)


def weights_label(pretrained: str | None) -> str:
    return "random" if pretrained is None else pretrained


def _create(
    model_name: str, pretrained: str | None, device: str, cache_dir: Path | None
) -> tuple[Any, Callable[[Any], Any]]:
    import open_clip
    import torch

    hosted = model_name.startswith(("hf-hub:", "local-dir:"))
    if not hosted and model_name not in open_clip.list_models():
        raise VisionModelError(f"unknown open_clip model {model_name!r} (e.g. ViT-B-32, coca_ViT-B-32)")
    weights = pretrained
    if pretrained is not None and not hosted:
        local = Path(pretrained).expanduser()
        if local.is_file():
            weights = str(local)
        elif not open_clip.is_pretrained_cfg(model_name, pretrained):
            known = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
            raise VisionModelError(f"unknown pretrained weights {pretrained!r} for {model_name} (known: {known})")
    from_hub = model_name.startswith("hf-hub:") or (weights is not None and not Path(weights).is_file())
    fetch = offline_unless_reachable() if from_hub else contextlib.nullcontext(True)
    try:
        if weights is None:
            with torch.random.fork_rng(devices=[]), _quiet_root_logger(), fetch:
                torch.manual_seed(RANDOM_INIT_SEED)
                model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None, device=device)
        else:
            with _quiet_root_logger(), fetch:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=weights, device=device, cache_dir=str(cache_dir) if cache_dir else None
                )
    except (RuntimeError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if weights is None:
            raise VisionModelError(f"cannot build {model_name}: {reason}") from exc
        if Path(weights).is_file():  # a local checkpoint that does not load
            raise VisionWeightsUnavailableError(f"cannot load {model_name} weights {weights}: {reason[:200]}") from exc
        raise VisionWeightsUnavailableError(
            f"no {model_name} weights {pretrained!r} here: not in the hub cache and cannot be downloaded "
            f"(no network?); run once with a network, or use a local checkpoint file ({reason[:120]})"
        ) from exc
    model.eval()
    return model, preprocess
