"""Image -> one-line caption, with the best captioner this machine has.

1. A vision-language model in GGUF with its image projector (mmproj), loaded like the chat
   model (``agentmm.llama_runtime.load_model``) and run by its multimodal chat handler, when one
   is configured (local paths or hub ids). It follows a prompt and knows far more than a
   captioning model, so it wins when it is there.
2. Otherwise open_clip's CoCa, a small captioning model; its weights download from the hub
   where a network exists. Nothing ships them on PyPI, so offline and uncached there is no
   captioner at all, and ``CaptionerUnavailableError`` says in one line how to get one.

What a captioner loads (the CoCa model, the VLM's ``Llama``) is opened in a ``Runtime``: an
``Agent``'s (closed by ``Agent.close()``), else the tools package's process runtime
(``shared_runtime``), where the module-level ``caption_image`` tool's captioner lives.

CoCa captions are decoded greedily (``coca_decoding``), not with ``model.generate``: open_clip's
``generate`` needs transformers' ``BeamSearchScorer``, which transformers 5 (required by
sentence-transformers, which the memory uses) no longer has. Greedy decoding needs nothing
beyond the model's own layers, and computes each token once.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from langchain_core.tools import BaseTool, tool
from pydantic import BaseModel

from agentmm.cpu_buffers import CpuExtraBuffers, choose_extra_buffers, cpu_flags
from agentmm.models import resolve_gguf
from agentmm.plugins import FACTORY_KEY
from agentmm.tools._openclip import load_openclip, weights_label
from agentmm.tools.coca_decoding import greedy_caption_tokens
from agentmm.tools.errors import CaptionerUnavailableError, ToolModelError, VisionWeightsUnavailableError
from agentmm.tools.media import open_image

if TYPE_CHECKING:
    from PIL import Image

    from agentmm.llama_runtime import LoadedModel
    from agentmm.runtime import Runtime
    from agentmm.settings import Settings

DEFAULT_COCA_MODEL = "coca_ViT-B-32"
DEFAULT_COCA_PRETRAINED = "mscoco_finetuned_laion2b_s13b_b90k"
DEFAULT_CAPTION_PROMPT = "Describe this image in one or two sentences."
VLM_BATCH = 512  # llama.cpp's default prompt batch
VLM_IMAGE_SIDE = 1024  # projectors resize to far less; a smaller data URI is cheaper to pass


class Caption(BaseModel):
    """A caption and where it came from."""

    text: str
    model: str
    seconds: float


class Captioner(Protocol):
    """Anything that turns a decoded RGB image into a caption."""

    name: str

    def describe(self, image: Image.Image) -> str: ...


# --- CoCa -------------------------------------------------------------------------------------


class CocaCaptioner:
    """open_clip CoCa; ``pretrained`` is a tag, a checkpoint path, or None for random weights."""

    def __init__(
        self,
        model_name: str = DEFAULT_COCA_MODEL,
        pretrained: str | None = DEFAULT_COCA_PRETRAINED,
        *,
        device: str = "cpu",
        max_tokens: int = 30,
        min_tokens: int = 5,
        cache_dir: Path | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        if not 0 <= min_tokens < max_tokens <= 75:
            raise ValueError("need 0 <= min_tokens < max_tokens <= 75 (CoCa's text context)")
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = device
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self.cache_dir = cache_dir
        self.runtime = runtime
        self.name = f"{model_name}:{weights_label(pretrained)}"

    def load(self) -> tuple[Any, Any]:
        """The model and its preprocessing; ``CaptionerUnavailableError`` when weights cannot be had."""
        try:
            return load_openclip(self.model_name, self.pretrained, self.device, self.cache_dir, self.runtime)
        except VisionWeightsUnavailableError as exc:
            raise CaptionerUnavailableError(
                "no image captioner is available offline: set caption_model to a local VLM GGUF + mmproj, "
                f"or run once with a network to fetch CoCa ({self.model_name} {self.pretrained})"
            ) from exc

    def describe(self, image: Image.Image) -> str:
        model, preprocess = self.load()  # before open_clip is imported: missing weights are said at once
        import open_clip

        pixels = preprocess(image).unsqueeze(0).to(self.device)
        tokens = greedy_caption_tokens(model, pixels, max_tokens=self.max_tokens, min_tokens=self.min_tokens)
        text = open_clip.decode(tokens[0])
        return text.split("<end_of_text>")[0].replace("<start_of_text>", "").strip()


# --- a VLM through llama-cpp-python -------------------------------------------------------------


class VLMCaptioner:
    """A GGUF vision-language model and its mmproj, loaded on the first caption.

    ``model`` and ``mmproj`` are local paths or hub ids ``owner/repo/file.gguf``; both are
    found (or downloaded) when the captioner is made, so a wrong path fails at once. The
    ``Llama`` is opened in ``runtime`` (default: the process runtime), which closes it.
    """

    def __init__(
        self,
        model: str,
        mmproj: str,
        *,
        prompt: str = DEFAULT_CAPTION_PROMPT,
        n_ctx: int = 4096,
        n_gpu_layers: int = 0,
        max_tokens: int = 96,
        models_dir: Path | None = None,
        cpu_extra_buffers: CpuExtraBuffers = "auto",
        runtime: Runtime | None = None,
    ) -> None:
        self.cpu_extra_buffers = cpu_extra_buffers
        self.runtime = runtime
        self.model_path = resolve_gguf(model, "caption_model", models_dir)
        self.mmproj_path = resolve_gguf(mmproj, "caption_mmproj", models_dir)
        self.prompt = prompt
        self.n_ctx = n_ctx
        self.n_gpu_layers = n_gpu_layers
        self.max_tokens = max_tokens
        self.name = self.model_path.stem

    def loaded(self) -> LoadedModel:
        """The VLM and its projector, loaded by ``agentmm.llama_runtime.load_model`` into the
        runtime (default: the process runtime) on the first caption, and closed with it."""
        from agentmm.errors import AgentmmError
        from agentmm.llama_runtime import load_model
        from agentmm.tools.shared_runtime import process_runtime

        if importlib.util.find_spec("llama_cpp") is None:
            raise CaptionerUnavailableError("a VLM captioner needs llama-cpp-python: pip install llama-cpp-python")
        try:
            return load_model(
                str(self.model_path), n_ctx=self.n_ctx, n_gpu_layers=self.n_gpu_layers, n_threads=None,
                n_batch=VLM_BATCH, chat_format=None, verbose=False, mmproj_path=str(self.mmproj_path),
                extra_buffers=choose_extra_buffers(self.cpu_extra_buffers, cpu_flags()).enabled,
                runtime=self.runtime or process_runtime(),
            )  # fmt: skip
        except (AgentmmError, ValueError, RuntimeError, OSError) as exc:
            raise ToolModelError(f"cannot load VLM {self.model_path.name} with {self.mmproj_path.name}: {exc}") from exc

    def describe(self, image: Image.Image) -> str:
        loaded = self.loaded()
        messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_data_uri(image)}},
                                                 {"type": "text", "text": self.prompt}]}]  # fmt: skip
        with loaded.lock:  # one generation at a time on one context
            # The model's multimodal chat handler, as Llama.create_chat_completion calls it.
            reply = loaded.vision(llama=loaded.llama, messages=messages, max_tokens=self.max_tokens,
                                  temperature=0.2, stream=False)  # fmt: skip
        return str(reply["choices"][0]["message"]["content"] or "").strip()


def image_data_uri(image: Image.Image, max_side: int = VLM_IMAGE_SIDE) -> str:
    """A PNG ``data:`` URI of the image, shrunk to ``max_side`` (the handlers take URIs)."""
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --- choosing one, and the tool ---------------------------------------------------------------


def make_captioner(
    caption_model: str | None = None,
    caption_mmproj: str | None = None,
    *,
    coca_model: str = DEFAULT_COCA_MODEL,
    coca_pretrained: str | None = DEFAULT_COCA_PRETRAINED,
    device: str = "cpu",
    models_dir: Path | None = None,
    cpu_extra_buffers: CpuExtraBuffers = "auto",
    runtime: Runtime | None = None,
) -> Captioner:
    """The VLM when one is configured (both files needed), CoCa otherwise.

    ``models_dir`` is where hub downloads go (the ``models_dir`` setting; default: the
    Hugging Face cache); the model loads into ``runtime`` (default: the process runtime).
    """
    if caption_model or caption_mmproj:
        if not (caption_model and caption_mmproj):
            missing = "caption_mmproj (its image projector)" if caption_model else "caption_model (the GGUF)"
            raise CaptionerUnavailableError(f"a VLM captioner needs both files: set {missing} too")
        return VLMCaptioner(caption_model, caption_mmproj, models_dir=models_dir, cpu_extra_buffers=cpu_extra_buffers,
                            runtime=runtime)  # fmt: skip
    return CocaCaptioner(coca_model, coca_pretrained, device=device, cache_dir=models_dir, runtime=runtime)


class LazyCaptioner:
    """A captioner made on its first caption, so a configured VLM's files are found (or
    downloaded) only when a picture needs them, once."""

    def __init__(self, make: Callable[[], Captioner]) -> None:
        self._make = make
        self._made: Captioner | None = None
        self._lock = threading.Lock()

    def _captioner(self) -> Captioner:
        with self._lock:
            if self._made is None:
                self._made = self._make()
            return self._made

    @property
    def name(self) -> str:
        return self._captioner().name

    def describe(self, image: Image.Image) -> str:
        return self._captioner().describe(image)


def captioner_for(settings: Settings, runtime: Runtime | None = None) -> LazyCaptioner:
    """The captioner ``settings`` configure (``caption_model`` + ``caption_mmproj``, else CoCa),
    made on its first caption, its model loaded into ``runtime`` (default: the process
    runtime); hub downloads go to ``models_dir``."""
    return LazyCaptioner(
        lambda: make_captioner(
            settings.caption_model,
            settings.caption_mmproj,
            models_dir=settings.models_dir,
            cpu_extra_buffers=settings.cpu_extra_buffers,
            runtime=runtime,
        )
    )


def default_captioner(runtime: Runtime | None = None) -> Captioner:
    """CoCa with its pretrained weights, made once per runtime (default: the process runtime;
    loading waits for the first caption)."""
    from agentmm.tools.shared_runtime import process_runtime

    runtime = runtime or process_runtime()
    return runtime.get(("default captioner",), lambda: make_captioner(runtime=runtime))


def caption_file(path: str | Path, captioner: Captioner | None = None, runtime: Runtime | None = None) -> Caption:
    """Caption an image file (its type checked by its bytes, decoded in full first); without a
    ``captioner``, with ``default_captioner(runtime)``."""
    started = time.perf_counter()
    image = open_image(path, min_side=VLM_IMAGE_SIDE)  # no captioner looks at more
    chosen = captioner or default_captioner(runtime)
    text = chosen.describe(image)
    return Caption(text=text, model=chosen.name, seconds=round(time.perf_counter() - started, 3))


def make_caption_image_tool(
    settings: Settings | None = None, runtime: Runtime | None = None, *, captioner: Captioner | None = None
) -> BaseTool:
    """The ``caption_image`` tool: with ``captioner`` if given, else with the one ``settings``
    configure (default: the process's settings, read on the first caption), its model loaded
    into ``runtime`` (default: the process runtime)."""
    chosen = captioner

    @tool("caption_image", parse_docstring=True)
    def caption_with(path: str) -> str:
        """Describe what an image file (PNG, JPEG, GIF, WebP, BMP, TIFF, AVIF) shows, in one line.

        Args:
            path: Path of the image file on this machine.
        """
        return caption_file(path, chosen or _configured(settings, runtime)).text

    if captioner is None:
        caption_with.metadata = {FACTORY_KEY: f"{__name__}:make_caption_image_tool"}
    return caption_with


def _configured(settings: Settings | None, runtime: Runtime | None) -> Captioner:
    """The captioner of ``settings`` (default: the process's), made once per runtime."""
    from agentmm.settings import load_settings
    from agentmm.tools.shared_runtime import process_runtime

    settings = settings or load_settings()
    runtime = runtime or process_runtime()
    key = ("captioner", settings.caption_model, settings.caption_mmproj, settings.models_dir,
           settings.cpu_extra_buffers)  # fmt: skip
    return runtime.get(key, lambda: captioner_for(settings, runtime))


# For other LangChain apps: the process's settings' captioner, in the process runtime, made on the
# first caption. An Agent builds its own with the factory above, over its settings and runtime.
caption_image = make_caption_image_tool()
