"""The transcriber on real speech: text, WER, timestamps, languages, and no invented text."""

from __future__ import annotations

import shutil
import subprocess
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import DATA, JFK, JFK_PHRASE, fleurs, load_manifest
from dattavani_asr import EmptyAudioError, InvalidOptionError, Transcriber
from dattavani_asr.core.scripts import wrong_script
from dattavani_asr.engine.decoding import confidence
from dattavani_asr.evaluation import normalize, word_error_rate

# Measured on these clips (tiny.en en, base others): en 7.7, de 11.4, es 6.9, fr 29.2, pt 21.6 %.
# Thresholds leave room for int8 and thread-count jitter but catch any real regression.
WER_LIMITS = {"en": 0.12, "de": 0.18, "es": 0.12, "fr": 0.38, "pt": 0.30}


def test_jfk_text(jfk_transcript: Any) -> None:
    assert JFK_PHRASE in normalize(jfk_transcript.text)
    assert word_error_rate([load_manifest()[0]["reference"]], [jfk_transcript.text]) < 0.1
    assert jfk_transcript.language == "en"
    assert jfk_transcript.duration == pytest.approx(11.0, abs=0.05)
    assert jfk_transcript.model == "tiny.en"


def test_jfk_segments_and_confidence(jfk_transcript: Any) -> None:
    segments = jfk_transcript.segments
    assert [s.id for s in segments] == list(range(len(segments)))
    for segment in segments:
        assert 0.0 <= segment.start <= segment.end <= jfk_transcript.duration + 0.01
        assert 0.5 < segment.confidence <= 1.0
        assert -1.0 < segment.avg_logprob < 0.0
        assert segment.no_speech_prob < 0.2
    assert all(a.end <= b.start + 0.01 for a, b in pairwise(segments))


def test_word_timestamps_monotonic_inside_audio(jfk_transcript: Any) -> None:
    words = jfk_transcript.words
    assert len(words) >= 20
    assert "".join(w.word for w in words).strip() == jfk_transcript.text.replace("  ", " ").strip()
    for previous, word in pairwise(words):
        assert previous.end <= word.start + 1e-6
    assert all(0.0 <= w.start <= w.end <= jfk_transcript.duration for w in words)
    country = [w for w in words if "country" in w.word]
    assert len(country) == 2 and country[1].start > 9.0  # the second "country" ends the clip


@pytest.mark.parametrize("language", ["en"])
def test_fleurs_english_wer(tiny: Transcriber, language: str) -> None:
    items = fleurs(language)
    hypotheses = [tiny.transcribe(DATA / item["file"]).text for item in items]
    wer = word_error_rate([item["reference"] for item in items], hypotheses, language)
    assert wer <= WER_LIMITS[language], (wer, hypotheses)


@pytest.mark.base
@pytest.mark.parametrize("language", ["de", "es", "fr", "pt"])
def test_fleurs_multilingual_wer(base: Transcriber, language: str) -> None:
    items = fleurs(language)
    hypotheses = [base.transcribe(DATA / item["file"], language=language).text for item in items]
    wer = word_error_rate([item["reference"] for item in items], hypotheses, language)
    assert wer <= WER_LIMITS[language], (wer, hypotheses)


@pytest.mark.base
def test_language_detection(base: Transcriber) -> None:
    transcript = base.transcribe(DATA / "fleurs" / "fleurs-de-000.ogg")
    assert transcript.language == "de"
    assert transcript.language_probability > 0.5
    assert "hongkong" in normalize(transcript.text, "de")


@pytest.mark.base
def test_translate_to_english(base: Transcriber) -> None:
    transcript = base.transcribe(DATA / "fleurs" / "fleurs-de-000.ogg", task="translate", language="de")
    text = normalize(transcript.text)
    assert transcript.task == "translate"
    assert "hong kong" in text.replace("hongkong", "hong kong")
    assert "island" in text or "the" in text.split()


def test_stereo_channels(tiny: Transcriber) -> None:
    path = DATA / "misc" / "stereo_diarization.wav"
    references = {item["channel"]: item["reference"] for item in load_manifest() if item["channel"] is not None}
    for channel, reference in references.items():
        transcript = tiny.transcribe(path, channel=channel)
        assert word_error_rate([reference], [transcript.text]) < 0.25, (channel, transcript.text)


def test_clip_range(tiny: Transcriber) -> None:
    transcript = tiny.transcribe(JFK, start=8.0)
    text = normalize(transcript.text)
    assert "ask what you can do for your country" in text
    assert "fellow americans" not in text
    assert all(segment.start >= 8.0 for segment in transcript.segments)
    assert transcript.duration == pytest.approx(3.0, abs=0.05)


def test_hotwords(tiny: Transcriber) -> None:
    plain = tiny.transcribe(DATA / "misc" / "hotwords.mp3")
    primed = tiny.transcribe(DATA / "misc" / "hotwords.mp3", hotwords="ComfyUI")
    assert "comfyui" not in plain.text.lower()
    assert "comfyui" in primed.text.lower()


def test_progress_reports_audio_position(tiny: Transcriber) -> None:
    positions: list[float] = []
    tiny.transcribe(JFK, progress=positions.append)
    assert positions and positions == sorted(positions)
    assert 9.0 < positions[-1] <= 11.0


def _noise(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * 16000))).astype(np.float32)


def test_digital_silence_is_a_clear_error(tiny: Transcriber) -> None:
    with pytest.raises(EmptyAudioError, match="silent"):
        tiny.transcribe(np.zeros(30 * 16000, dtype=np.float32))


@pytest.mark.parametrize("vad", [True, False])
@pytest.mark.parametrize("level", [0.0005, 0.1], ids=["room-tone", "white-noise"])
def test_no_words_on_noise(tiny: Transcriber, vad: bool, level: float) -> None:
    transcript = tiny.transcribe(_noise(30.0, level), vad=vad, word_timestamps=True)
    assert transcript.text == "" and transcript.words == []


def test_speech_after_long_silence_keeps_true_timestamps(tiny: Transcriber) -> None:
    from dattavani_asr.audio.decode import decode_audio

    speech = decode_audio(JFK)
    audio = np.concatenate([_noise(75.0, 0.0005), speech, _noise(20.0, 0.0005)])
    transcript = tiny.transcribe(audio, word_timestamps=True)
    assert JFK_PHRASE in normalize(transcript.text)
    assert 74.5 < transcript.segments[0].start < 77.0
    assert transcript.segments[-1].end < 87.0


def test_english_only_model_refuses_other_languages(tiny: Transcriber) -> None:
    with pytest.raises(InvalidOptionError, match="English-only"):
        tiny.transcribe(JFK, language="hi")
    with pytest.raises(InvalidOptionError, match="English-only"):
        tiny.transcribe(JFK, task="translate")
    with pytest.raises(InvalidOptionError, match="unknown language"):
        tiny.transcribe(JFK, language="xx")


@pytest.fixture(scope="module")
def espeak(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is required (installed by .ci/run): apt-get install espeak-ng")
    folder = tmp_path_factory.mktemp("espeak")

    def speak(voice: str, text: str) -> Path:
        path = folder / f"{voice}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True)
        return path

    return speak


@pytest.mark.base
@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("hi", "नमस्ते, आप कैसे हैं? मैं आज बाज़ार जा रहा हूँ।"),
        ("kn", "ನಮಸ್ಕಾರ, ನೀವು ಹೇಗಿದ್ದೀರಿ? ನಾನು ಇಂದು ಮಾರುಕಟ್ಟೆಗೆ ಹೋಗುತ್ತಿದ್ದೇನೆ."),
    ],
)
def test_indian_languages_through_base(base: Transcriber, espeak: Any, language: str, text: str) -> None:
    transcript = base.transcribe(espeak(language, text), language=language)
    assert transcript.language == language
    assert transcript.language_probability == 1.0
    # base's kn/hi quality is a model limit: the pipeline delivers text in the language's script, or says
    # what to install (base cannot write Kannada; suppressed from Tamil letters, it may write nothing)
    if language == "hi":
        assert transcript.text.strip() and not wrong_script(transcript.text, "hi")
    else:
        fix = any("models install kannada-small" in warning for warning in transcript.warnings)
        assert fix or (transcript.text.strip() and not transcript.warnings), (transcript.text, transcript.warnings)


@pytest.mark.base
def test_fallback_model_keeps_the_more_confident_result(tiny: Transcriber, base: Transcriber) -> None:
    path = DATA / "fleurs" / "fleurs-en-002.ogg"
    primary = tiny.transcribe(path)
    alternative = base.transcribe(path, language="en")
    chained = tiny.transcribe(path, fallback_model="base", min_confidence=1.0)

    def window_confidence(transcript: Any) -> float:  # the clip is one window: its segments share these scores
        return confidence(transcript.segments[0].avg_logprob, transcript.segments[0].no_speech_prob)

    best = max(primary, alternative, key=window_confidence)
    assert chained.text == best.text
    assert {s.model for s in chained.segments} == {best.model}
    assert [s.confidence for s in chained.segments] == [s.confidence for s in best.segments]
    assert len({s.confidence for s in chained.segments}) == len(chained.segments)  # each segment its own
    untouched = tiny.transcribe(path, fallback_model="base", min_confidence=0.0)
    assert untouched.text == primary.text and {s.model for s in untouched.segments} == {"tiny.en"}


def _synthetic_music(seconds: float = 30.0, seed: int = 1) -> np.ndarray:
    """Plucked harmonic notes with chords and a drum hit every second: music, not speech."""
    rng = np.random.default_rng(seed)
    notes = [261.6, 293.7, 329.6, 349.2, 392.0, 440.0, 493.9, 523.3]
    t = np.arange(8000) / 16000
    envelope = np.exp(-3 * t)
    pieces = []
    for index in range(int(seconds * 2)):
        pitch = notes[rng.integers(len(notes))]
        tone = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 6))
        chord = 0.3 * sum(np.sin(2 * np.pi * pitch * ratio * t) for ratio in (1.25, 1.5))
        drum = 0.5 * rng.standard_normal(t.shape[0]) * np.exp(-30 * t) if index % 2 == 0 else 0.0
        pieces.append(0.2 * (tone + chord) * envelope + 0.1 * drum)
    return np.concatenate(pieces).astype(np.float32)


@pytest.mark.parametrize("vad", [True, False])
def test_no_words_on_music(tiny: Transcriber, vad: bool) -> None:
    transcript = tiny.transcribe(_synthetic_music(), vad=vad)
    assert transcript.text == ""


def test_quiet_speaker_next_to_a_loud_one_is_not_lost(tiny: Transcriber) -> None:
    """Three FLEURS sentences at about -65 dBFS, then JFK 50 dB louder, in one 30-s window.

    Without per-span loudness equalisation tiny.en hears only JFK here.
    """
    from dattavani_asr.audio.decode import decode_audio

    gap = np.zeros(16000, dtype=np.float32)
    quiet = [decode_audio(DATA / "fleurs" / f"fleurs-en-00{i}.ogg") for i in (2, 3, 4)]
    loud = decode_audio(JFK, end=5.0)
    transcript = tiny.transcribe(np.concatenate([quiet[0], gap, quiet[1], gap, quiet[2], gap, loud]))
    text = normalize(transcript.text)
    assert "lord byron" in text and "cabbage juice" in text and "dinosaurs" in text
    # JFK cut at 5 s ends the audio: in a trimmed encoder context (tiny.en's policy) the cut-off
    # "Americans" is heard as "America"; what matters here is that both speakers are heard.
    assert "fellow america" in text


def test_speech_left_after_the_decoder_stops_is_decoded_again(tiny: Transcriber) -> None:
    from dattavani_asr.core.types import AudioWindow, Decoded, RawSegment, WindowResult
    from dattavani_asr.engine.engine import untranscribed_tail

    window = AudioWindow(100.0, np.ones(20 * 16000, dtype=np.float32))
    decoded = Decoded((), "", -0.2, 0.01, 1.2, 0.0)

    def result(end: float) -> WindowResult:
        return WindowResult(window, decoded, (RawSegment(100.0, end, (1,), " hi"),), "en", "tiny.en", 0.8)

    tail = untranscribed_tail(result(112.0))
    assert tail is not None and tail.offset == pytest.approx(112.0) and tail.duration == pytest.approx(8.0)
    assert untranscribed_tail(result(118.6)) is None
