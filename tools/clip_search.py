"""Find images by what they show: open_clip embeddings in a Chroma index.

``ImageIndex`` keeps one Chroma collection per (model, weights) in ``<data_dir>/images``, so
switching models never mixes vector spaces. Indexing a folder is incremental: a file whose
size, mtime, ctime and inode are unchanged is trusted unchanged (as git trusts its stat cache;
ctime because ``cp -p`` sets an old mtime back, never a ctime); a file whose stat changed is
hashed, and only new content is embedded; content already embedded under another path (a
copy, a rename) reuses that vector. Files that are gone leave the index. Bad
files are reported and skipped. Each record (vector + metadata) is written whole, one batch per
Chroma call, so an interrupted run leaves a smaller but consistent index that the next run
completes.

Vectors are always computed here and passed to Chroma: its default embedding function
downloads a model.

The models an index uses and the index ``default_image_index`` opens live in a ``Runtime``:
an ``Agent``'s (closed, lock released, by ``Agent.close()``), else the tools package's process
runtime (``shared_runtime``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from langchain_core.tools import BaseTool, tool
from pydantic import BaseModel, Field, WithJsonSchema

from agentmm.console_text import shown_path
from agentmm.errors import EmptyInputError, InvalidTextError
from agentmm.plugins import FACTORY_KEY
from agentmm.tools._dirlock import DirectoryLock
from agentmm.tools._openclip import load_openclip, weights_label
from agentmm.tools.clip_text import TextEncoder, cache_key, text_encoder
from agentmm.tools.errors import ImageIndexError, MediaError, UnsupportedMediaError
from agentmm.tools.media import check_file, content_hash, open_image, sniff

if TYPE_CHECKING:
    import torch
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from PIL import Image

    from agentmm.runtime import Runtime
    from agentmm.settings import Settings

DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "laion2b_s34b_b79k"
INDEX_DIRNAME = "images"
EXPORT_DIRNAME = "embedders"  # the text tower's onnxruntime export, beside the memory embedder's
SEARCH_EF = 400  # MODELS.md: HNSW recall 0.72 with Chroma's default, 0.97 with 400
EMBED_BATCH = 16
MAX_TOOL_RESULTS = 50
_PAGE = 5000
# Names that are meant to be images: such a file that cannot be indexed is reported; any other
# file that is not an image (notes, sidecars, archives) is passed over in silence.
# HEIC/HEIF is listed so that such a photo is reported (Pillow cannot decode it), not passed over.
# Names of files meant as pictures: one that cannot be indexed (HEIC, an SVG drawing) is reported
# as skipped, with why; any other file that is no picture is passed over without a word.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jfif", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".heif",
                  ".svg", ".svgz"}  # fmt: skip

Progress = Callable[[int, int], None]


class Hit(BaseModel):
    """A search result: an indexed file and its cosine similarity to the query."""

    path: str
    score: float


class IndexReport(BaseModel):
    """What ``index_dir`` did to the index, file by file counted once."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: list[tuple[str, str]] = Field(default_factory=list, description="(path, reason) of files skipped")
    embedded: int = Field(0, description="Images run through the model (new content only).")
    seconds: float = 0.0


class ClipEmbedder:
    """open_clip image and text embeddings (unit length, so dot product = cosine).

    Text runs on the exported, int8 text tower (``clip_text``) where the model allows it,
    kept in ``export_dir``; images and other models run on torch. The models are opened in
    ``runtime`` (default: the process runtime).
    """

    def __init__(
        self,
        model_name: str = DEFAULT_CLIP_MODEL,
        pretrained: str | None = DEFAULT_CLIP_PRETRAINED,
        device: str = "cpu",
        cache_dir: Path | None = None,
        export_dir: Path | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self.model_name = model_name
        self.runtime = runtime
        self.pretrained = pretrained
        self.device = device
        self.cache_dir = cache_dir
        self.export_dir = export_dir
        self.name = f"{model_name}:{weights_label(pretrained)}"
        self._tokenizer: Any = None
        self._text_encoder: TextEncoder | bool | None = False  # False: not looked for yet

    def load(self) -> tuple[Any, Any]:
        return load_openclip(self.model_name, self.pretrained, self.device, self.cache_dir, self.runtime)

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """The model's input tensor for one image (resized, cropped, normalised)."""
        return self.load()[1](image)

    def embed_prepared(self, pixels: Sequence[torch.Tensor]) -> list[list[float]]:
        import torch

        model = self.load()[0]
        with torch.inference_mode():
            vectors = model.encode_image(torch.stack(list(pixels)).to(self.device), normalize=True)
        return vectors.float().cpu().tolist()

    def embed_images(self, images: Sequence[Image.Image]) -> list[list[float]]:
        return self.embed_prepared([self.prepare(image) for image in images])

    def embed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        encoder = self.text_encoder()
        if encoder is not None:  # onnxruntime: no torch imported for a text search
            return encoder.encode(self.token_ids(texts)).tolist()
        import torch

        with torch.inference_mode():
            vectors = self.load()[0].encode_text(self.torch_ids(texts).to(self.device), normalize=True)
        return vectors.float().cpu().tolist()

    def token_ids(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        """``texts`` as token ids ``[len(texts), context_length]`` (int64), as open_clip's
        tokenizer makes them; without importing torch where the model's tokenizer is CLIP's
        plain BPE (``clip_tokenizer``): open_clip's import alone took ~5 s of a text search."""
        if self._tokenizer is None:
            from agentmm.tools.clip_tokenizer import simple_tokenizer

            self._tokenizer = simple_tokenizer(self.model_name) or _open_clip_tokenizer(self.model_name)
        ids = self._tokenizer(list(texts))
        return ids if isinstance(ids, np.ndarray) else ids.numpy()

    def tokenizer(self) -> Callable[[Sequence[str]], torch.Tensor]:
        """A tokenizer as open_clip's are called: texts -> a torch tensor of ids."""
        return self.torch_ids

    def torch_ids(self, texts: Sequence[str]) -> torch.Tensor:
        """``token_ids`` as the torch tensor open_clip's ``encode_text`` takes."""
        import torch

        return torch.from_numpy(self.token_ids(texts))

    def text_encoder(self) -> TextEncoder | None:
        """The onnxruntime text tower (exported on first use), or None where torch runs text."""
        if self._text_encoder is False:
            encoder = None
            if self.device == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
                key = cache_key(self.model_name, self.pretrained)
                encoder = text_encoder(lambda: self.load()[0], self.torch_ids, key, self.export_dir, self.runtime)
            self._text_encoder = encoder
        return self._text_encoder  # type: ignore[return-value]


def _open_clip_tokenizer(model_name: str) -> Any:
    """open_clip's own tokenizer (a Hugging Face or SigLIP one, say): it imports torch."""
    import open_clip

    return open_clip.get_tokenizer(model_name)


@dataclass
class _Pending:
    path: Path
    key: str
    metadata: dict[str, Any]
    is_update: bool


class ImageIndex:
    """A persistent, incremental CLIP index of image files (one process per data dir)."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        model: str = DEFAULT_CLIP_MODEL,
        pretrained: str | None = DEFAULT_CLIP_PRETRAINED,
        device: str = "cpu",
        batch_size: int = EMBED_BATCH,
        models_dir: Path | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self.directory = Path(data_dir).expanduser() / INDEX_DIRNAME
        exports = Path(data_dir).expanduser() / EXPORT_DIRNAME
        self.embedder = ClipEmbedder(model, pretrained, device, cache_dir=models_dir, export_dir=exports,
                                     runtime=runtime)  # fmt: skip
        self.batch_size = max(1, batch_size)
        self._mutex = threading.RLock()
        self._lock = DirectoryLock(self.directory)
        self._lock.acquire()
        try:
            import chromadb
            from chromadb.config import Settings as ChromaSettings

            self._client: ClientAPI = chromadb.PersistentClient(
                path=str(self._lock.directory), settings=ChromaSettings(anonymized_telemetry=False)
            )
            self.collection: Collection = self._client.get_or_create_collection(
                collection_name(model, pretrained),
                embedding_function=None,
                configuration={"hnsw": {"space": "cosine", "ef_search": SEARCH_EF}},  # type: ignore[typeddict-item]
                metadata={"model": model, "pretrained": weights_label(pretrained)},
            )
        except BaseException as exc:
            self._lock.release()
            if isinstance(exc, ImportError) or not isinstance(exc, Exception):
                raise
            raise ImageIndexError(f"cannot open image index {self.directory}: {exc}") from exc
        self._closed = False
        self._holds_images = False  # known to hold at least one image (see _empty)

    # --- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Let go of Chroma and the directory lock."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(Exception):
                self._client.close()  # type: ignore[attr-defined]
            self._lock.release()

    def __enter__(self) -> ImageIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __len__(self) -> int:
        """Records in the index, a file deleted since the last ``index_dir`` included."""
        return self.collection.count()

    def count_on_disk(self) -> int:
        """Indexed images whose file is still there: what a search can return. A stat per
        record (ids are the paths): 0.28 s for 50,000 records, where ``len`` takes 5 ms."""
        with self._mutex:
            on_disk, offset = 0, 0
            while True:
                page = self.collection.get(include=[], limit=_PAGE, offset=offset)
                on_disk += sum(os.path.exists(key) for key in page["ids"])
                if len(page["ids"]) < _PAGE:
                    return on_disk
                offset += _PAGE

    # --- indexing -------------------------------------------------------------------------

    def index_dir(self, directory: str | Path, *, progress: Progress | None = None) -> IndexReport:
        """Bring the index up to date with the images under ``directory`` (recursively).

        ``progress(done, total)`` is called as files are settled. Hidden files and folders and
        the index's own folder are skipped.
        """
        started = time.perf_counter()
        root = _folder_to_index(directory)
        with self._mutex:
            report = IndexReport()
            known = self._entries_under(root)
            files = list(self._scan(root))
            total, done = len(files), 0
            seen: set[str] = set()
            pending: list[_Pending] = []
            refreshed: dict[str, dict[str, Any]] = {}
            for path in files:
                key = str(path)
                outcome = self._check(path, known.get(key), report)
                if isinstance(outcome, _Pending):
                    pending.append(outcome)
                    continue
                if outcome is not None:  # None: failed, or not an image at all
                    seen.add(key)
                    report.unchanged += 1
                    if outcome is not known[key]:
                        refreshed[key] = outcome
                done += 1
                if progress is not None:
                    progress(done, total)
            for batch in _chunks(pending, self.batch_size):
                written = self._embed_and_write(batch, report)
                seen.update(written)
                done += len(batch)
                if progress is not None:
                    progress(done, total)
            if refreshed:
                self.collection.update(ids=list(refreshed), metadatas=list(refreshed.values()))
            gone = [key for key in known if key not in seen]
            if gone:
                self.collection.delete(ids=gone)
            self._holds_images = False  # files may have left: look again on the next search
            failed_keys = {path for path, _ in report.failed}
            report.removed = sum(key not in failed_keys for key in gone)
            report.seconds = round(time.perf_counter() - started, 3)
            return report

    def _scan(self, root: Path) -> Iterator[Path]:
        own = self.directory.resolve()
        for folder, subdirs, names in os.walk(root):
            base = Path(folder)
            subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and (base / d).resolve() != own)
            for name in sorted(names):
                if not name.startswith("."):
                    yield base / name

    def _check(self, path: Path, known: dict[str, Any] | None, report: IndexReport) -> dict[str, Any] | _Pending | None:
        """Unchanged: its (possibly refreshed) metadata; new content: a ``_Pending``; else None.

        A file is reported as failed only if it was meant as an image (by its name, its bytes
        or an earlier run); any other file that is not an image is passed over.
        """
        meant_as_image = known is not None or path.suffix.lower() in IMAGE_SUFFIXES
        try:
            InvalidTextError.check(str(path), "its name")
        except InvalidTextError:  # b"caf\xe9.jpg" from an old disk: no database or JSON takes its name
            if meant_as_image:
                report.failed.append((shown_path(path), "its name is not UTF-8 text: rename the file to index it"))
            return None
        try:
            check_file(path)
            info = path.stat()
            stat = {"path": str(path), **_file_state(info)}
            if known and all(known.get(field) == value for field, value in stat.items()):
                return known
            media = sniff(path)
            if media.kind != "image":
                raise UnsupportedMediaError(path, f"{shown_path(path)} is {media.describe()}, not an image")
        except (MediaError, OSError) as exc:
            if meant_as_image:
                report.failed.append(_failure(path, exc))
            return None
        try:
            digest = content_hash(path)
        except MediaError as exc:
            report.failed.append(_failure(path, exc))
            return None
        metadata = {**stat, "sha256": digest}
        if known and known.get("sha256") == digest:
            return metadata  # touched, not changed: no new vector
        return _Pending(path, str(path), metadata, is_update=known is not None)

    def _embed_and_write(self, batch: list[_Pending], report: IndexReport) -> list[str]:
        """Embed a batch and write it in one call; content seen before (stored, or earlier in
        this batch) reuses its vector instead of running the model again."""
        stored = self._vectors_by_hash({item.metadata["sha256"] for item in batch})
        fresh: dict[str, int] = {}  # sha256 -> position in pixels
        sizes: dict[str, dict[str, Any]] = {}
        pixels: list[Any] = []
        ready: list[_Pending] = []
        for item in batch:
            digest = item.metadata["sha256"]
            if digest in stored:
                sizes[digest] = {k: v for k, v in stored[digest][1].items() if k in ("width", "height")}
            elif digest not in fresh:
                try:
                    image = open_image(item.path, min_side=256)
                except MediaError as exc:
                    report.failed.append(_failure(item.path, exc))
                    continue
                sizes[digest] = {"width": image.width, "height": image.height}
                fresh[digest] = len(pixels)
                pixels.append(self.embedder.prepare(image))
            item.metadata.update(sizes[digest])
            ready.append(item)
        computed = self.embedder.embed_prepared(pixels) if pixels else []
        report.embedded += len(pixels)
        vectors = []
        for item in ready:
            digest = item.metadata["sha256"]
            vectors.append(stored[digest][0] if digest in stored else computed[fresh[digest]])
        if ready:
            self.collection.upsert(
                ids=[item.key for item in ready],
                embeddings=vectors,  # type: ignore[arg-type]
                metadatas=[item.metadata for item in ready],
            )
        for item in ready:
            if item.is_update:
                report.updated += 1
            else:
                report.added += 1
        return [item.key for item in ready]

    def _vectors_by_hash(self, digests: set[str]) -> dict[str, tuple[list[float], dict[str, Any]]]:
        """Vectors (and metadata) already stored for these contents, under any path."""
        found = self.collection.get(
            where={"sha256": {"$in": sorted(digests)}},  # type: ignore[dict-item]
            include=["embeddings", "metadatas"],
        )
        embeddings = found.get("embeddings")
        if embeddings is None:
            return {}
        return {
            str(metadata["sha256"]): ([float(x) for x in vector], dict(metadata))
            for metadata, vector in zip(found.get("metadatas") or [], embeddings, strict=False)
        }

    def _entries_under(self, root: Path) -> dict[str, dict[str, Any]]:
        prefix = str(root).rstrip(os.sep) + os.sep
        entries: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            page = self.collection.get(include=["metadatas"], limit=_PAGE, offset=offset)
            for key, metadata in zip(page["ids"], page.get("metadatas") or [], strict=False):
                if key.startswith(prefix):
                    entries[key] = dict(metadata or {})
            if len(page["ids"]) < _PAGE:
                return entries
            offset += _PAGE

    # --- search ---------------------------------------------------------------------------

    def search_text(self, query: str, k: int = 5) -> list[Hit]:
        """The ``k`` indexed images closest to a text description, best first."""
        text = query.strip()
        if not text:
            raise EmptyInputError("nothing to search for: the query is empty")
        if self._empty():
            return []
        return self._nearest(self.embedder.embed_texts([text])[0], k)

    def search_image(self, path: str | Path, k: int = 5) -> list[Hit]:
        """The ``k`` indexed images most like the image at ``path`` (itself first, if indexed)."""
        image = open_image(path, min_side=256)
        if self._empty():
            return []
        return self._nearest(self.embedder.embed_images([image])[0], k)

    def _empty(self) -> bool:
        """Whether nothing is indexed: then a search loads no model. Once something is, only
        this process (it holds the lock) can empty it again, in ``index_dir``, which forgets
        what it knew; so a search costs no extra Chroma call (1.2 ms of a 13 ms search)."""
        if not self._holds_images:
            self._holds_images = self.collection.count() > 0
        return not self._holds_images

    def _nearest(self, vector: list[float], k: int) -> list[Hit]:
        """The ``k`` nearest records whose file is still there. Files deleted since the folder
        was indexed are passed over, and the query asked again for twice as many until ``k``
        are found or the index has no more (Chroma has no offset to page on)."""
        if k < 1:
            raise ValueError("k must be at least 1")
        wanted = k
        while True:
            found = self._query(vector, wanted)
            hits = [Hit(path=path, score=round(1.0 - distance, 4)) for path, distance in found if os.path.exists(path)]
            if len(hits) >= k or len(found) < wanted:
                return hits[:k]
            wanted *= 2

    def _query(self, vector: list[float], n: int) -> list[tuple[str, float]]:
        """(path, cosine distance) of the ``n`` nearest records, fewer when the index holds fewer."""
        with self._mutex:
            result = self.collection.query(
                query_embeddings=[vector],  # type: ignore[arg-type]
                n_results=n,  # Chroma returns fewer when it holds fewer
                include=["metadatas", "distances"],
            )
        metadatas, distances = (result["metadatas"] or [[]])[0], (result["distances"] or [[]])[0]
        return [(str(m["path"]), float(d)) for m, d in zip(metadatas, distances, strict=False)]


def _file_state(info: os.stat_result) -> dict[str, Any]:
    """What says a file is unchanged without reading it: size and mtime, as git's stat cache,
    and the inode change time and inode, which no copy can set back: ``cp -p`` (or a tool
    that restores times) puts a same-size picture back under its old mtime, and only ctime
    moves. A file indexed before these were kept is hashed once (not embedded again)."""
    return {
        "size": info.st_size,
        "mtime_ns": str(info.st_mtime_ns),
        "ctime_ns": str(info.st_ctime_ns),
        "inode": str(info.st_ino),
    }


def collection_name(model: str, pretrained: str | None) -> str:
    """A valid Chroma collection name for one (model, weights) pair, stable across runs."""
    label = f"{model}-{weights_label(pretrained)}"
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-_")[:40]
    return f"images-{slug}-{hashlib.sha1(label.encode()).hexdigest()[:8]}"


def _folder_to_index(directory: str | Path) -> Path:
    """The folder as an absolute path, or an ``ImageIndexError`` saying why it cannot be indexed."""
    root = Path(directory).expanduser()
    if not root.exists():
        gone = "is a broken symlink" if root.is_symlink() else "does not exist"
        raise ImageIndexError(f"cannot index {root}: it {gone}")
    if not root.is_dir():
        raise ImageIndexError(f"cannot index {root}: not a directory")
    return root.resolve()


def _failure(path: Path, exc: Exception) -> tuple[str, str]:
    """(path, reason): the reason without the path that media errors start with."""
    reason = str(exc).removeprefix(str(path)).strip(" :") or type(exc).__name__
    return str(path), reason


def _chunks(items: list[_Pending], size: int) -> Iterator[list[_Pending]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- the LangChain tool -------------------------------------------------------------------------


def format_hits(hits: Sequence[Hit], indexed: int) -> str:
    """Ranked paths with scores, one per line, for a model to read."""
    if indexed == 0:
        return "no images are indexed yet"
    if not hits:
        return "no matching images"
    return "\n".join(f"{rank}. {hit.path} (score {hit.score:.3f})" for rank, hit in enumerate(hits, 1))


# The pattern is in the schema only: a model whose arguments are constrained by it writes a
# query of words (the shipped 135M model wrote '', '][' and '{' when any string was allowed);
# the tool itself searches for any text.
QUERY_PATTERN = r"^[A-Za-z][A-Za-z0-9 ,.'-]{2,79}$"


_QUERY_SCHEMA = {"type": "string", "description": "What the images should show, in words.", "pattern": QUERY_PATTERN}


class SearchArgs(BaseModel):
    query: Annotated[str, WithJsonSchema(_QUERY_SCHEMA)]
    k: int = Field(5, description="How many images to return (1 to 50).")


def make_search_images_tool(
    settings: Settings | None = None, runtime: Runtime | None = None, *, index: ImageIndex | None = None
) -> BaseTool:
    """The ``search_images`` tool: over ``index`` if given, else over the index of
    ``settings`` (data dir, CLIP model and weights; default: the process's settings) that
    ``default_image_index`` opens in ``runtime`` on the tool's first call (so an agent that
    never searches never opens Chroma, and closing the runtime releases the index's lock)."""

    @tool("search_images", args_schema=SearchArgs)
    def search_with(query: str, k: int = 5) -> str:
        """Find indexed images on this machine that match a description, best first."""
        return _search(index if index is not None else default_image_index(settings, runtime), query, k)

    if index is None:
        search_with.metadata = {FACTORY_KEY: f"{__name__}:make_search_images_tool"}
    return search_with


def _search(index: ImageIndex, query: str, k: int) -> str:
    hits = index.search_text(query, max(1, min(k, MAX_TOOL_RESULTS)))
    return format_hits(hits, len(index))


# Values of the clip_pretrained setting that mean "random weights" (a config file has no null).
RANDOM_WEIGHTS = frozenset({"random", "none", ""})


def pretrained_from_setting(value: str | None) -> str | None:
    """The ``pretrained`` argument for a ``clip_pretrained`` setting: "random"/"none" -> None."""
    if value is None or value.strip().lower() in RANDOM_WEIGHTS:
        return None
    return value.strip()


def default_image_index(settings: Settings | None = None, runtime: Runtime | None = None) -> ImageIndex:
    """The index in the configured data dir with the configured CLIP model and weights, opened
    once per runtime (default: the tools package's process runtime) and kept open until it
    closes: the CLI and the chat's tool calls share it.

    The key holds the model and weights, not only the data dir: another model is another
    vector space and so another collection (``ImageIndex`` keeps one per pair).
    """
    from agentmm.settings import load_settings
    from agentmm.tools.shared_runtime import process_runtime

    settings = settings or load_settings()
    runtime = runtime or process_runtime()
    pretrained = pretrained_from_setting(settings.clip_pretrained)
    key = ("image index", settings.data_dir, settings.clip_model, pretrained, settings.models_dir)

    def open_index() -> ImageIndex:
        return ImageIndex(settings.data_dir, model=settings.clip_model, pretrained=pretrained,
                          models_dir=settings.models_dir, runtime=runtime)  # fmt: skip

    return runtime.get(key, open_index, close=ImageIndex.close)


def close_default_image_indexes() -> None:
    """Close what the tools package's process runtime holds (the indexes ``default_image_index``
    opened without an agent's runtime, and the models), so their directories can be reused by
    another process (tests, or an app that switches data dirs)."""
    from agentmm.tools.shared_runtime import close_process_runtime

    close_process_runtime()


# For other LangChain apps: the process's settings' index, in the process runtime, opened on the
# first search. An Agent builds its own with the factory above, over its settings and runtime.
search_images = make_search_images_tool()
