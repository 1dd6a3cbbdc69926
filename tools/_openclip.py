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
import posixpath
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

    def create() -> tuple[Any, Callable[[Any], Any]]:
        check_weights_can_be_had(model_name, pretrained, cache_dir)
        return _create(model_name, pretrained, device, cache_dir)

    return (runtime or process_runtime()).get(key, create)


def check_weights_can_be_had(model_name: str, pretrained: str | None, cache_dir: Path | None = None) -> None:
    """Say ``VisionWeightsUnavailableError`` before open_clip is imported (with torch, 5-7 s
    here) when the weights would come from the hub, nothing of their repository is in the
    hub's cache, and the hub cannot be reached: offline and uncached, no captioner was known
    only after that import. Any other case (random weights, a local file, something cached,
    a hub that answers, a tag this cannot place) goes on to open_clip as before."""
    if cached_or_downloadable(model_name, pretrained, cache_dir) is not None:
        return
    repo, cache = hub_repo(model_name, pretrained), _hub_cache(cache_dir)
    raise VisionWeightsUnavailableError(
        f"no {model_name} weights {weights_label(pretrained)!r} here: not in the hub cache and cannot be downloaded "
        f"(no network?); run once with a network, or use a local checkpoint file (nothing of {repo} in {cache})"
    )


def cached_or_downloadable(model_name: str, pretrained: str | None, cache_dir: Path | None = None) -> str | None:
    """Whether the weights can be had here, in words (``cached``, ``downloaded on first use``,
    ``not from the hub``: random, local or a tag only open_clip can place), or None: they come
    from the hub, nothing of their repository is cached, and the hub cannot be reached."""
    repo = hub_repo(model_name, pretrained)
    if repo is None:
        return "not from the hub"
    if _cached(_hub_cache(cache_dir), repo):
        return "cached"
    from agentmm.hub import hub_reachable

    return "downloaded on first use" if hub_reachable() else None


def hub_repo(model_name: str, pretrained: str | None) -> str | None:
    """The hub repository open_clip would download these weights from; None when it would
    not (random weights, a local file or folder) or when that cannot be told without open_clip.

    A pretrained tag is looked up in open_clip's own table (``open_clip/pretrained.py``), read
    as text, as open_clip reads it: the tag lowercased, ``-`` as ``_``.
    """
    if model_name.startswith(HF_HUB_PREFIX):
        return model_name[len(HF_HUB_PREFIX) :].strip("/") or None
    if pretrained is None or model_name.startswith("local-dir:") or Path(pretrained).expanduser().exists():
        return None
    config = _pretrained_table().get(model_name, {}).get(pretrained.lower().replace("-", "_"))
    if not config or config.get("file") or not config.get("hf_hub"):
        return None  # not a tag open_clip knows (it says so itself), or a download by URL
    repo, _file = posixpath.split(str(config["hf_hub"]))  # "org/repo/" or "org/repo/file", as open_clip splits it
    return repo or None


HF_HUB_PREFIX = "hf-hub:"


def _pretrained_table() -> dict[str, dict[str, dict[str, Any]]]:
    """open_clip's ``_PRETRAINED`` (model -> tag -> config), from its source, without importing
    it (which imports torch); only the literal keywords of each config. Empty if it cannot be read."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec("open_clip")
        folders = spec.submodule_search_locations if spec is not None else None
        if not folders:
            return {}
        tree = ast.parse((Path(next(iter(folders))) / "pretrained.py").read_text(encoding="utf-8"))
    except (ImportError, OSError, SyntaxError, ValueError):
        return {}
    assigned = {
        node.targets[0].id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
    }

    def configs(node: ast.AST | None) -> dict[str, dict[str, Any]]:
        if isinstance(node, ast.Name):
            node = assigned.get(node.id)
        pairs: list[tuple[Any, ast.AST]] = []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            pairs = [(kw.arg, kw.value) for kw in node.keywords if kw.arg]
        elif isinstance(node, ast.Dict):
            pairs = [(k.value, v) for k, v in zip(node.keys, node.values, strict=True) if isinstance(k, ast.Constant)]
        table = {}
        for tag, call in pairs:
            if isinstance(tag, str) and isinstance(call, ast.Call):
                table[tag] = {kw.arg: kw.value.value for kw in call.keywords if isinstance(kw.value, ast.Constant)}
        return table

    top = assigned.get("_PRETRAINED")
    if not isinstance(top, ast.Dict):
        return {}
    return {
        key.value: configs(value)
        for key, value in zip(top.keys, top.values, strict=True)
        if isinstance(key, ast.Constant) and isinstance(key.value, str)
    }


def _hub_cache(cache_dir: Path | None) -> Path:
    """Where ``hf_hub_download`` keeps a repository's files: ``cache_dir``, else the hub's cache."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    import huggingface_hub.constants as hub_constants

    return Path(hub_constants.HF_HUB_CACHE)


def _cached(cache: Path, repo: str) -> bool:
    """Whether any file of ``repo`` is in the hub cache (then open_clip is asked: it knows
    which file it wants)."""
    snapshots = cache / f"models--{repo.replace('/', '--')}" / "snapshots"
    try:
        return any(path.is_file() for path in snapshots.rglob("*"))
    except OSError:
        return True  # cannot tell: let open_clip try


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
