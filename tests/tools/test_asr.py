"""Speech recognition with the shipped Whisper tiny.en, on speech with known words."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path
from types import SimpleNamespace

import pytest

from agentmm.tools import asr, transcribe, transcribe_audio
from agentmm.tools.errors import CorruptMediaError, MediaNotFoundError, SpeechModelError, UnsupportedMediaError
from tests.tools.media_files import (
    MORE_SENTENCES,
    SENTENCES,
    encode_audio,
    make_image,
    sox_can_write,
    speak,
    write_wav,
)


def test_transcribes_known_sentences(speech_wav: Path) -> None:
    seen: list[float] = []
    result = transcribe(speech_wav, progress=seen.append)
    assert asr.word_error_rate(" ".join(SENTENCES), result.text) < 0.4, result.text
    # tiny.en is English-only: the language is assumed, not detected (it said "en" at 1.0).
    assert (result.language, result.language_probability, result.model) == ("en", None, "tiny.en")
    assert result.language_detected is False
    assert 6 < result.duration_s < 20
    # Whisper's last segment can end past the audio (20 ms steps): clamped to the duration.
    assert result.segments and all(0 <= s.start < s.end <= result.duration_s for s in result.segments)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == len(result.segments) + 1
    assert result.seconds > 0


def test_long_audio_reports_progress_window_by_window(speech_dir: Path) -> None:
    script = " ".join(SENTENCES + MORE_SENTENCES)  # distinct sentences: repeats set off Whisper's fallbacks
    long_clip = speak(script, speech_dir / "long.wav")  # about 37 s: two 30 s windows
    seen: list[float] = []
    result = transcribe(long_clip, progress=seen.append)
    assert result.duration_s > 30
    assert any(0.2 < p < 0.9 for p in seen) and seen[-1] == 1.0
    assert result.segments[-1].end > 30
    assert asr.word_error_rate(script, result.text) < 0.4


@pytest.mark.parametrize("fmt", ["ogg", "mp3"])
def test_compressed_audio_made_by_sox(short_speech_wav: Path, tmp_path: Path, fmt: str) -> None:
    if not sox_can_write(fmt):
        pytest.skip(f"this sox cannot write {fmt} (apt-get install sox libsox-fmt-all)")
    out = tmp_path / f"coffee.{fmt}"
    subprocess.run(["sox", str(short_speech_wav), str(out)], check=True, capture_output=True)
    result = transcribe(out)
    assert asr.word_error_rate(SENTENCES[1], result.text) < 0.4, result.text


@pytest.mark.parametrize(("container", "codec"), [("webm", "libopus"), ("mp4", "aac")])
def test_a_voice_note_from_a_browser_or_a_phone(
    short_speech_wav: Path, tmp_path: Path, container: str, codec: str
) -> None:
    """WebM/Opus (a browser's recorder) and MP4/AAC with the generic isom brand (a phone's)."""
    note = encode_audio(short_speech_wav, tmp_path / "note.bin", container, codec)
    result = transcribe(note)
    assert asr.word_error_rate(SENTENCES[1], result.text) < 0.4, result.text


def test_tool_returns_the_transcript(short_speech_wav: Path) -> None:
    text = transcribe_audio.invoke({"path": str(short_speech_wav)})
    assert "coffee" in text.lower()
    assert transcribe_audio.name == "transcribe_audio"
    assert "path" in transcribe_audio.args


def test_silence_is_no_speech(tmp_path: Path) -> None:
    silent = write_wav(tmp_path / "silence.wav", b"\x00\x00" * 32000)
    result = transcribe(silent)
    assert result.text == "" and result.segments == []
    assert abs(result.duration_s - 2.0) < 0.01
    assert transcribe_audio.invoke({"path": str(silent)}) == asr.NO_SPEECH


@pytest.mark.slow
def test_a_clip_too_short_for_a_word_is_no_speech(short_speech_wav: Path, tmp_path: Path) -> None:
    """Whisper writes "Thank you for watching." or " ." for a tenth of a second of speech."""
    with wave.open(str(short_speech_wav)) as clip:
        rate, frames = clip.getframerate(), clip.readframes(clip.getnframes())
    for start in (0.3, 0.6, 0.9, 1.2, 1.5):
        for length in (0.1, 0.2, 0.25):
            part = frames[int(start * rate) * 2 : int((start + length) * rate) * 2]
            result = transcribe(write_wav(tmp_path / f"{start}-{length}.wav", part, rate))
            assert (result.text, result.segments) == ("", []), (start, length)


def test_segments_whisper_made_up_are_left_out() -> None:
    def piece(text: str, start: float = 0.0, no_speech: float = 0.1, logprob: float = -0.3) -> SimpleNamespace:
        return SimpleNamespace(text=text, start=start, no_speech_prob=no_speech, avg_logprob=logprob)

    assert not asr.made_up(piece(" I'll have a coffee."), 2.0)
    assert asr.made_up(piece(" Thank you very much.", start=1.0), 0.9)  # after the audio's end
    assert asr.made_up(piece(" ."), 2.0) and asr.made_up(piece(" ..."), 2.0)  # no word at all
    assert asr.made_up(piece(" Thank you for watching.", no_speech=0.577, logprob=-1.046), 2.0)
    assert not asr.made_up(piece(" mumbled words", no_speech=0.3, logprob=-1.2), 2.0)  # doubted, but speech
    assert not asr.made_up(piece(" quiet words", no_speech=0.7, logprob=-0.5), 2.0)  # quiet, but sure
    # Whisper's stock phrases, whole, are left out however sure it is; said inside speech they stay.
    assert asr.made_up(piece(" Thanks for watching!"), 2.0) and asr.made_up(piece(" Please subscribe."), 2.0)
    assert not asr.made_up(piece(" Thanks for watching the kids last night."), 2.0)
    assert not asr.made_up(piece(" Thank you."), 2.0)  # too common in real speech to drop


def test_bad_media_fails_before_the_model_is_touched(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedMediaError, match="not audio"):
        transcribe(make_image(tmp_path / "photo.wav"), model="/no/such/model")
    with pytest.raises(MediaNotFoundError):
        transcribe_audio.invoke({"path": str(tmp_path / "missing.mp3")})


def test_undecodable_audio_is_corrupt(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"not really an mp3 stream " * 4)
    with pytest.raises(CorruptMediaError, match="damaged or truncated: its audio cannot be decoded"):
        transcribe(bad, model="/no/such/model")  # decoding comes before loading a model


def test_model_is_loaded_once_per_configuration() -> None:
    assert asr.load_speech_model() is asr.load_speech_model(None, device="cpu", compute_type="int8")


def test_model_specs(tmp_path: Path) -> None:
    assert Path(asr.resolve_speech_model()).joinpath("model.bin").is_file()
    assert asr.resolve_speech_model("Systran/faster-whisper-small") == "Systran/faster-whisper-small"
    with pytest.raises(SpeechModelError, match="not found"):
        asr.resolve_speech_model("./no-such-model")
    with pytest.raises(SpeechModelError, match=r"no model\.bin"):
        asr.resolve_speech_model(str(tmp_path))


def test_hub_model_offline_is_a_typed_error() -> None:
    # conftest sets HF_HUB_OFFLINE=1, so nothing is fetched
    with pytest.raises(SpeechModelError, match="cannot load speech model"):
        asr.load_speech_model("Systran/faster-whisper-base")


def test_word_error_rate() -> None:
    assert asr.word_error_rate("The cat sat.", "the cat sat") == 0.0
    assert asr.word_error_rate("a b c d", "a x c") == 0.5
    assert asr.word_error_rate("", "") == 0.0


def test_a_voice_memo_cut_short_is_said_to_be_damaged(tmp_path: Path) -> None:
    """An .m4a cut short said "cannot be decoded as audio ([Errno 1094995529] Invalid data found ...)"."""
    from tests.tools.media_files import tone

    whole = encode_audio(write_wav(tmp_path / "t.wav", tone()), tmp_path / "memo.m4a", "ipod", "aac")
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises(CorruptMediaError) as error:
        transcribe(cut, model="/no/such/model")
    assert str(error.value) == f"{cut} is damaged or truncated: its audio cannot be decoded"


def test_a_wav_cut_short_is_transcribed_in_part_with_a_note(tmp_path: Path, speech_wav: Path) -> None:
    """A WAV whose header says 4.29 s but holds half of it was transcribed in part with no word
    of warning (FFmpeg reports the length of what is there)."""
    whole = speech_wav.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: len(whole) // 2])  # the header still says the whole length
    declared = asr.declared_seconds(cut)
    assert declared is not None and abs(declared - asr.declared_seconds(speech_wav)) < 1e-6  # type: ignore[operator]
    result = transcribe(cut)
    assert result.note is not None and "cut short" in result.note and f"{declared:.2f} s" in result.note
    assert result.text and result.duration_s < declared * 0.6  # the part that is there is still heard
    assert transcribe(speech_wav).note is None
    assert asr.declared_seconds(tmp_path / "missing.wav") is None


def test_a_note_about_the_file_reaches_the_observation(tmp_path: Path) -> None:
    from agentmm.tools.perception import Perception
    from tests.tools.fake_captioner import FakeCaptioner

    def noted(path: Path) -> tuple[str, str, str, str]:
        return "hello there", "en", "fake-asr", "v.wav is cut short"

    observed = Perception(FakeCaptioner(lambda image: ""), noted).observe(write_wav(tmp_path / "v.wav"))
    assert observed.as_trace()["note"] == "v.wav is cut short"


def test_a_file_served_from_the_cache_says_so(tmp_path: Path) -> None:
    """A voice note perceived before reported seconds 0.0 with nothing saying why, and /why
    showed "(0.00 s)"."""
    from rich.console import Console

    from agentmm.repl.why import render_trace
    from agentmm.tools.perception import Perception
    from tests.tools.fake_captioner import FakeCaptioner

    def heard(path: Path) -> tuple[str, str, str]:
        return "hello there", "en", "fake-asr"

    perception = Perception(FakeCaptioner(lambda image: ""), heard)
    first = perception.observe(write_wav(tmp_path / "v.wav")).as_trace()
    again, copy = (o.as_trace() for o in perception.perceive([tmp_path / "v.wav", write_wav(tmp_path / "w.wav")]))
    assert "cached" not in first
    assert again["cached"] is True and again["seconds"] == 0.0 and copy["cached"] is True
    console = Console(width=120, record=True, force_terminal=False)
    console.print(render_trace({"path": ["ingest", "perceive"], "observations": [again]}))
    assert "observed audio " + str(tmp_path / "v.wav") + " (cached): hello there" in console.export_text()


def test_a_segment_ending_past_the_audio_is_clamped_to_its_duration(speech_wav: Path) -> None:
    """Whisper's segments step in 20 ms, and the last one can end past the audio: a segment's
    ``end`` was past ``duration_s``."""
    from agentmm.runtime import Runtime

    class Whisper:  # a loaded model, as faster-whisper's, whose only segment overshoots the end
        model = SimpleNamespace(is_multilingual=False)

        def transcribe(self, audio: object, **options: object) -> tuple[list[SimpleNamespace], SimpleNamespace]:
            end = len(audio) / asr.SAMPLE_RATE + 0.4  # type: ignore[arg-type]
            piece = SimpleNamespace(start=0.0, end=end, text=" Hello there.", no_speech_prob=0.1, avg_logprob=-0.2)
            return [piece], SimpleNamespace(language="en", language_probability=1.0, duration=end - 0.4)

    runtime = Runtime()
    runtime.get(("speech model", asr.resolve_speech_model(None), "cpu", "int8", 1), Whisper)
    result = transcribe(speech_wav, cpu_threads=1, runtime=runtime)
    assert result.text == "Hello there." and result.segments[-1].end == result.duration_s


def test_a_transcription_asked_to_stop_ends_at_its_next_segment(speech_wav: Path) -> None:
    """Ctrl-C in a chat did not stop a voice note's transcription (66-90 s for 10 minutes): it
    ran to its end. Asked to stop (here after its first segment), it ends at the next one."""
    import threading

    from agentmm.errors import TurnStoppedError

    stop = threading.Event()
    seen: list[float] = []

    def first_then_stop(done: float) -> None:
        seen.append(done)
        stop.set()

    with pytest.raises(TurnStoppedError, match=r"stopped while transcribing sentences\.wav"):
        transcribe(speech_wav, progress=first_then_stop, stop=stop)
    assert len(seen) == 1  # no segment decoded after it, and no 'done' (1.0)


def test_the_observation_says_whether_the_language_was_detected(tmp_path: Path, speech_wav: Path) -> None:
    """perceive --json said language_detected (false for the English-only tiny.en's assumed
    'en'), but a chat's trace.observations had only language: the same 'en' read as detected."""
    from agentmm.tools.perception import Perception
    from tests.tools.fake_captioner import FakeCaptioner

    heard = Perception(FakeCaptioner(lambda image: "")).observe(speech_wav).as_trace()
    assert heard["language"] == "en" and heard["language_detected"] is False
    picture = Perception(FakeCaptioner(lambda image: "a cat")).observe(make_image(tmp_path / "c.png"))
    assert "language_detected" not in picture.as_trace()  # a picture has no language


def test_notes_of_a_file_named_with_control_characters_quote_its_name(tmp_path: Path, speech_wav: Path) -> None:
    """The cut-short note and the stopped transcription named the file as it was, so a name
    with an escape sequence drove the terminal the chat printed them to."""
    import threading

    from agentmm.errors import TurnStoppedError

    whole = speech_wav.read_bytes()
    odd = tmp_path / "cut\x1b[2J.wav"
    odd.write_bytes(whole[: len(whole) // 2])
    note = asr.cut_short_note(odd, 0.5)
    assert note is not None and note.startswith("'cut\\x1b[2J.wav' is cut short"), note
    stop = threading.Event()
    stop.set()
    with pytest.raises(TurnStoppedError) as stopped:
        transcribe(odd, stop=stop)
    assert "\x1b" not in str(stopped.value) and "'cut\\x1b[2J.wav'" in str(stopped.value)


def test_a_wav_that_is_only_its_header_has_no_audio_data(tmp_path: Path) -> None:
    """``head -c 44 some.wav`` was transcribed as "[no speech found]" with a note that it was cut
    short, 0.00 s of 2.96 s read: it is one error now, before a model is loaded for it."""
    from tests.tools.media_files import tone

    whole = write_wav(tmp_path / "whole.wav", tone(2.0)).read_bytes()
    header = tmp_path / "header.wav"
    header.write_bytes(whole[:44])
    with pytest.raises(CorruptMediaError) as error:
        transcribe(header, model="/no/such/model")
    assert str(error.value) == f"{header} has no audio data (its header says 2.00 s; the file ends after the header)"
    empty = write_wav(tmp_path / "none.wav", b"")  # a header that says so itself
    with pytest.raises(CorruptMediaError, match=r"none\.wav has no audio data$"):
        transcribe(empty, model="/no/such/model")
