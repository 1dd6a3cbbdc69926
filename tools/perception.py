"""Turn attachments into observations: images captioned, audio transcribed, concurrently.

Each file's real type is read from its bytes; independent files run at the same time on a
small thread pool; results are cached by content hash, so the same photo sent twice is not
captioned twice. A bad file or a missing captioner becomes an observation that says so, never
a failed turn.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from agentmm.errors import AgentmmError, ModelError, TurnStoppedError
from agentmm.tools.cpu_share import Share, sharing, threads_per_job
from agentmm.tools.errors import ToolModelError
from agentmm.tools.media import content_hash, sniff

if TYPE_CHECKING:
    from agentmm.runtime import Runtime
    from agentmm.settings import Settings
    from agentmm.tools.asr import Transcript
    from agentmm.tools.caption import Caption, Captioner

ObservationKind = Literal["image", "audio", "unsupported"]
_CACHE_SIZE = 256


class Observation(BaseModel):
    """What perception made of one attachment (``agentmm.observations`` phrases it for the prompt)."""

    kind: ObservationKind
    file: str
    model: str = ""
    text: str = ""
    seconds: float = 0.0
    language: str | None = None
    # Whether ``language`` was detected (False: assumed, as an English-only Whisper's "en" is);
    # None where the transcriber does not say.
    language_detected: bool | None = None
    error: str | None = None
    # The file is good but no model here can perceive it (e.g. no captioner offline): ``kind``
    # stays the file's, ``error`` tells the user how to get one.
    unavailable: bool = False
    # What the user should know of a file perceived in part (a WAV cut short), for the trace.
    note: str | None = None
    # Served from the cache (the same content perceived before): ``seconds`` is 0, no work done.
    cached: bool = False

    def as_trace(self) -> dict[str, Any]:
        trace = self.model_dump(exclude_none=True, exclude={"unavailable", "cached"})
        trace |= {"unavailable": True} if self.unavailable else {}
        return {**trace, "cached": True} if self.cached else trace


# path -> (transcript, language, model name), or with a note about the file ("" for none) as a
# fourth item and whether the language was detected (a bool) as a fifth
Transcriber = Callable[[Path], tuple[Any, ...]]


def perceivable_kind(path: str | Path) -> Literal["image", "audio"]:
    """What perception makes of a file, by its bytes (not its name): ``"image"`` (captioned) or
    ``"audio"`` (transcribed). Any other file is an ``UnsupportedAttachmentError``, a missing or
    unreadable one a ``MediaError``. The one file-type dispatch: ``Perception`` and
    ``agentmm perceive`` both ask it."""
    media = sniff(path)
    if media.kind == "image" or media.kind == "audio":
        return media.kind
    raise UnsupportedAttachmentError(f"{path} is {media.describe()}: only pictures and audio can be perceived")


def perceive_file(
    path: str | Path, settings: Settings, *, captioner: Captioner | None = None,
    progress: Callable[[float], None] | None = None, runtime: Runtime | None = None,
) -> Caption | Transcript:  # fmt: skip
    """One file perceived in full with the models ``settings`` configure: a ``Caption`` of a
    picture, a ``Transcript`` (with its segments) of a recording, ``progress`` told how far it
    is. ``captioner`` reuses one already made (``captioner_for(settings)``) across files; the
    models load into ``runtime`` (default: the tools' process runtime)."""
    from agentmm.tools.asr import transcribe
    from agentmm.tools.caption import caption_file, captioner_for

    if perceivable_kind(path) == "image":
        return caption_file(path, captioner or captioner_for(settings, runtime))
    return transcribe(path, settings.asr_model, progress=progress, runtime=runtime)


def default_transcriber(settings: Any | None = None, runtime: Runtime | None = None) -> Transcriber:
    from agentmm.tools.asr import transcribe

    def run(path: Path, stop: threading.Event | None = None) -> tuple[Any, ...]:
        result = transcribe(path, getattr(settings, "asr_model", None), runtime=runtime, stop=stop)
        return result.text, result.language, result.model, result.note or "", result.language_detected

    return run


class Perception:
    """Caption and transcribe attachments, concurrently, with a content-hash cache.

    ``captioner`` is any ``agentmm.tools.caption.Captioner`` (default: the one ``settings``
    configure, made on its first picture; without settings, CoCa). The default captioner and
    transcriber load their models into ``runtime`` (an ``Agent``'s; default: the tools'
    process runtime)."""

    def __init__(
        self,
        captioner: Captioner | None = None,
        transcriber: Transcriber | None = None,
        settings: Any = None,
        runtime: Runtime | None = None,
    ) -> None:
        if captioner is None:
            from agentmm.tools.caption import LazyCaptioner, captioner_for, default_captioner

            captioner = (captioner_for(settings, runtime) if settings is not None
                         else LazyCaptioner(lambda: default_captioner(runtime)))  # fmt: skip
        self.captioner = captioner
        self.transcriber = transcriber or default_transcriber(settings, runtime)
        # The default transcriber stops between two segments when asked (``perceive``'s ``stop``);
        # one passed in is a ``Transcriber`` (a path only), stopped before it starts.
        self._stops_midway = transcriber is None
        self._cache: OrderedDict[str, Observation] = OrderedDict()
        self._lock = threading.Lock()

    def perceive(self, files: Sequence[str | Path], stop: threading.Event | None = None) -> list[Observation]:
        """One observation per file, in the order given; ``stop`` set (a chat's Ctrl-C) ends it
        with ``TurnStoppedError``: no file is started after it, and a transcription in progress
        ends at its next segment. What was stopped is not cached.

        Files are sniffed and hashed first; what the cache (or an earlier file of this call)
        already holds is not run again. The rest run at the same time, each on its share of
        the CPU (``cpu_share``), so two jobs do not fight over the same cores.
        """
        paths = [Path(f) for f in files]
        results: list[Observation | None] = [None] * len(paths)
        jobs: dict[str, list[int]] = {}  # content key -> positions of the files that have it
        kinds: dict[str, tuple[Path, ObservationKind]] = {}
        for position, path in enumerate(paths):
            started = time.perf_counter()
            try:
                key, kind = self._identify(path)
            except AgentmmError as exc:
                results[position] = failed_observation(path, exc, None, started)
                continue
            with self._lock:
                cached = self._cache.get(key)
            if cached is not None:
                results[position] = cached.model_copy(update={"file": str(path), "seconds": 0.0, "cached": True})
                continue
            jobs.setdefault(key, []).append(position)
            kinds.setdefault(key, (path, kind))
        share = Share(threads_per_job(len(jobs))) if len(jobs) > 1 else None

        def run(key: str) -> Observation:
            if stop is not None and stop.is_set():
                raise TurnStoppedError("stopped before the attachments were perceived")
            with sharing(share):
                return self._observe_new(key, *kinds[key], stop)

        observed: dict[str, Observation] = {}
        if share is not None:
            with ThreadPoolExecutor(min(len(jobs), 4), "perceive") as pool:
                running = {pool.submit(run, key): key for key in jobs}
                for done in as_completed(running):
                    observed[running[done]] = done.result()
                    share.threads = threads_per_job(len(jobs) - len(observed))  # the rest get the freed cores
        else:
            observed = {key: run(key) for key in jobs}
        for key, observation in observed.items():
            first, *copies = jobs[key]
            results[first] = observation
            for position in copies:  # the same content attached twice: perceived once
                results[position] = observation.model_copy(
                    update={"file": str(paths[position]), "seconds": 0.0, "cached": True}
                )
        return [r for r in results if r is not None]

    def observe(self, path: Path) -> Observation:
        """The observation of one file."""
        return self.perceive([path])[0]

    def _identify(self, path: Path) -> tuple[str, ObservationKind]:
        """The file's cache key (kind + content hash) and kind; a typed error if unusable."""
        kind = perceivable_kind(path)
        return f"{kind}:{content_hash(path)}", kind

    def _observe_new(self, key: str, path: Path, kind: ObservationKind,
                     stop: threading.Event | None = None) -> Observation:  # fmt: skip
        started = time.perf_counter()
        try:
            observation = self._run(path, kind, started, stop)
        except TurnStoppedError:
            raise  # the turn ends: this is no observation
        except AgentmmError as exc:  # not cached: the user may fix the file or the setup and resend
            return failed_observation(path, exc, kind, started)
        with self._lock:
            self._cache[key] = observation
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return observation

    def _run(self, path: Path, kind: str, started: float, stop: threading.Event | None = None) -> Observation:
        if kind == "image":
            from agentmm.tools.caption import caption_file

            caption = caption_file(path, self.captioner)
            return Observation(kind="image", file=str(path), model=caption.model, text=caption.text,
                               seconds=round(time.perf_counter() - started, 3))  # fmt: skip
        if kind == "audio":
            stoppable: Callable[..., tuple[Any, ...]] = self.transcriber
            heard = stoppable(path, stop) if self._stops_midway else stoppable(path)
            text, language, model, *more = heard
            note, detected = [*more, None, None][:2]
            return Observation(kind="audio", file=str(path), model=model, text=text, language=language,
                               language_detected=detected, note=note or None,
                               seconds=round(time.perf_counter() - started, 3))  # fmt: skip
        raise UnsupportedAttachmentError(f"{path}: {kind} files are not supported as attachments")


def failed_observation(
    path: str | Path, exc: Exception, kind: ObservationKind | None, started: float | None = None
) -> Observation:
    """What a file that could not be perceived becomes, in a chat's trace and in ``agentmm
    perceive --json`` alike. A good file (its ``kind`` known) with no model here to perceive it
    keeps its kind and is ``unavailable``: the user needs a model, not another file. That is a
    tool's model error, and a model file the settings name that cannot be found or loaded
    (``ModelError``: ``caption_model not found: /nope.gguf`` was "unsupported", and the
    character was told the user's picture could not be read). Any other failure is
    ``"unsupported"``."""
    seconds = 0.0 if started is None else round(time.perf_counter() - started, 3)
    observation = Observation(kind="unsupported", file=str(path), error=str(exc), seconds=seconds)
    if kind is not None and isinstance(exc, (ToolModelError, ModelError)):
        return observation.model_copy(update={"kind": kind, "unavailable": True})
    return observation


class UnsupportedAttachmentError(AgentmmError):
    """An attachment of a kind perception does not handle (e.g. video)."""
