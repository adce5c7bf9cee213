"""Silero VAD over a live stream (`StreamingVad`) against faster-whisper's one-pass VAD."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DATA, JFK, fleurs
from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.audio.vad import SILERO_FRAME, Span, StreamingVad, speech_spans
from dattavani_asr.core.options import VadOptions


def one_pass_spans(audio: np.ndarray, options: VadOptions) -> list[Span]:
    """faster-whisper's `get_speech_timestamps`: one pass with Silero's state carried throughout."""
    from faster_whisper.vad import VadOptions as SileroOptions
    from faster_whisper.vad import get_speech_timestamps

    silero = SileroOptions(
        threshold=options.threshold,
        min_speech_duration_ms=options.min_speech_ms,
        min_silence_duration_ms=options.min_silence_ms,
        speech_pad_ms=options.speech_pad_ms,
    )
    return [Span(int(item["start"]), int(item["end"])) for item in get_speech_timestamps(audio, silero)]


LIVE = VadOptions(min_silence_ms=100, speech_pad_ms=50, min_speech_ms=150)


def fed_in_pieces(vad: StreamingVad, audio: np.ndarray, seed: int) -> StreamingVad:
    sizes = np.random.default_rng(seed).integers(100, 5000, size=audio.shape[0] // 100)
    offset = 0
    for size in sizes:
        vad.feed(audio[offset : offset + size])
        offset += int(size)
        if offset >= audio.shape[0]:
            break
    return vad


@pytest.mark.parametrize("options", [LIVE, VadOptions()], ids=["live", "offline"])
def test_streaming_spans_equal_one_pass_spans(options: VadOptions) -> None:
    """Without resets the stream gives exactly faster-whisper's spans, whatever the frame sizes."""
    clips = [JFK] + [DATA / item["file"] for item in fleurs("en") + fleurs("de")]
    for index, path in enumerate(clips):
        audio = decode_audio(path)
        audio = audio[: audio.shape[0] // SILERO_FRAME * SILERO_FRAME]
        expected = one_pass_spans(audio, options)
        # faster-whisper pads a whole-frame input with one more frame of zeros; give the stream the same
        vad = fed_in_pieces(StreamingVad(options, reset_after=None), np.pad(audio, (0, SILERO_FRAME)), index)
        spans = [Span(span.start, min(span.end, audio.shape[0])) for span in vad.spans()]
        assert spans == expected, path.name
        assert expected, path.name


def jfk_then_quiet_clip() -> tuple[np.ndarray, float]:
    """JFK, 0.4 s of silence, then FLEURS en 002 (quieter): the second onset, in seconds."""
    first = decode_audio(JFK)
    [item] = [item for item in fleurs("en") if item["file"].endswith("002.ogg")]
    second = decode_audio(DATA / item["file"])
    spans = speech_spans(second, VadOptions(min_speech_ms=150, min_silence_ms=100, speech_pad_ms=0))
    second = second[spans[0].start :]
    pause = np.zeros(int(0.4 * SAMPLE_RATE), np.float32)
    onset = (first.shape[0] + pause.shape[0]) / SAMPLE_RATE
    return np.concatenate([first, pause, second]), onset


def test_state_reset_after_quiet_hears_the_next_quieter_sentence() -> None:
    """Carried over from JFK's loud sentence, Silero's state hears the next clip late; reset to
    its state after silence once the pause is 0.3 s long, it hears the onset at once."""
    audio, onset = jfk_then_quiet_clip()
    carried = StreamingVad(LIVE, reset_after=None)
    carried.feed(audio)
    reset = fed_in_pieces(StreamingVad(LIVE), audio, seed=1)

    def heard_after(vad: StreamingVad) -> float:
        return min(span.start / SAMPLE_RATE for span in vad.spans() if span.end / SAMPLE_RATE > onset + 0.05)

    assert heard_after(carried) - onset > 0.5
    assert abs(heard_after(reset) - onset) < 0.1


def test_reset_points_do_not_depend_on_frame_sizes() -> None:
    audio, _ = jfk_then_quiet_clip()
    whole = StreamingVad(LIVE)
    whole.feed(audio)
    pieces = fed_in_pieces(StreamingVad(LIVE), audio, seed=2)
    np.testing.assert_array_equal(whole.probabilities, pieces.probabilities)


def test_forget_and_quiet_seconds() -> None:
    audio, onset = jfk_then_quiet_clip()
    jfk_end = speech_spans(decode_audio(JFK), LIVE)[-1].end - SAMPLE_RATE * LIVE.speech_pad_ms // 1000
    cut = jfk_end + round(0.3 * SAMPLE_RATE)
    vad = StreamingVad(LIVE)
    vad.feed(audio[:cut])
    assert 0.15 < vad.quiet_seconds() < 0.45  # Silero's score falls a little after the speech
    vad.forget_before(cut - SAMPLE_RATE)
    assert vad.first_frame == (cut - SAMPLE_RATE) // SILERO_FRAME
    assert all(span.start >= vad.first_frame * SILERO_FRAME for span in vad.spans())
    assert vad.fading()
    vad.feed(audio[cut : round((onset + 0.5) * SAMPLE_RATE)])
    assert vad.quiet_seconds() < 0.1 and vad.spans()[-1].start / SAMPLE_RATE > onset - 0.2
    assert not vad.fading()  # half a second into the next sentence
    assert vad.scored_until == round((onset + 0.5) * SAMPLE_RATE) // SILERO_FRAME * SILERO_FRAME


def test_offline_spans_hear_a_quiet_speaker_after_a_loud_one_in_bounded_memory() -> None:
    """The offline VAD resets Silero's state after quiet as the live one does (one pass hears the
    quieter sentence after JFK over half a second late), scores in chunks, and splits long speech."""
    audio, onset = jfk_then_quiet_clip()
    options = VadOptions(speech_pad_ms=0)
    late = min(s.start for s in one_pass_spans(audio, options) if s.end / SAMPLE_RATE > onset + 0.05)
    heard = min(s.start for s in speech_spans(audio, options) if s.end / SAMPLE_RATE > onset + 0.05)
    assert late / SAMPLE_RATE - onset > 0.5 and abs(heard / SAMPLE_RATE - onset) < 0.1
    monologue = np.concatenate([decode_audio(DATA / item["file"]) for item in fleurs("en")] * 2)
    pieces = speech_spans(monologue, VadOptions(min_silence_ms=2000, max_window_s=10.0))
    assert max(span.length for span in pieces) <= 9.0 * SAMPLE_RATE
    assert sum(span.length for span in pieces) > 0.8 * monologue.shape[0]  # cut, not dropped
