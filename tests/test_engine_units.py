"""Pure pieces of the engine and chunking: no model needed."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import pytest

from conftest import DATA, JFK
from dattavani_asr.audio.vad import Span, fixed_windows, merge_spans, pad_windows
from dattavani_asr.audio.windows import AudioStats, speech_windows
from dattavani_asr.engine.segments import cut_repetition_loops


def test_repetition_loop_is_cut_to_one_copy() -> None:
    phrase = [11, 12, 13, 14]
    assert cut_repetition_loops([1, *phrase * 6, 2]) == [1, *phrase, 2]


def test_single_token_loop_is_cut() -> None:
    assert cut_repetition_loops([5] * 20) == [5]


def test_natural_repetition_is_kept() -> None:
    natural = [7, 8, 7, 8, 7, 8, 9]  # "no, no, no"
    assert cut_repetition_loops(natural) == natural


def test_merge_spans_respects_gap_and_window_length() -> None:
    sr = 16000
    spans = [Span(0, 5 * sr), Span(6 * sr, 10 * sr), Span(15 * sr, 20 * sr), Span(20 * sr + 1, 48 * sr)]
    merged = merge_spans(spans, max_window_s=30.0, max_gap_s=2.0)
    assert merged == [Span(0, 10 * sr), Span(15 * sr, 20 * sr), Span(20 * sr + 1, 48 * sr)]


def test_fixed_windows_cover_everything() -> None:
    windows = fixed_windows(65 * 16000, 30.0)
    assert windows[0].start == 0 and windows[-1].end == 65 * 16000
    assert all(a.end == b.start for a, b in pairwise(windows))


def test_windows_without_vad_are_seamless_across_blocks() -> None:
    audio = np.arange(100 * 16000, dtype=np.float32) / 1e7
    blocks = [audio[i : i + 7 * 16000] for i in range(0, audio.shape[0], 7 * 16000)]
    stats = AudioStats()
    windows = list(speech_windows(blocks, None, offset=5.0, stats=stats))
    assert stats.samples == audio.shape[0]
    joined = np.concatenate([w.audio for w in windows])
    np.testing.assert_array_equal(joined, audio)
    assert windows[0].offset == 5.0
    assert all(abs(a.end - b.offset) < 1e-6 for a, b in pairwise(windows))
    assert max(w.duration for w in windows) <= 30.0


def test_pad_windows_reaches_into_pauses_without_overlap_or_overflow() -> None:
    sr = 16000
    windows = [Span(2 * sr, 10 * sr), Span(10 * sr + sr // 2, 39 * sr + sr // 2)]
    padded = pad_windows(windows, 50 * sr, lead_s=1.0, tail_s=0.5, max_window_s=30.0)
    assert padded == [Span(1 * sr, 10 * sr + sr // 2), Span(10 * sr + sr // 2, 40 * sr)]
    assert all(w.length <= 30 * sr for w in padded)
    assert all(a.end <= b.start for a, b in pairwise(padded))


def test_equalize_speech_brings_spans_to_one_level_and_leaves_even_audio_alone() -> None:
    from dattavani_asr.audio.loudness import equalize_speech

    sr = 16000
    rng = np.random.default_rng(0)
    audio = np.concatenate([0.3 * rng.standard_normal(sr), np.zeros(sr), 0.001 * rng.standard_normal(sr)])
    spans = [Span(0, sr), Span(2 * sr, 3 * sr)]
    leveled = equalize_speech(audio.astype(np.float32), spans)
    loud, quiet = (float(np.sqrt(np.mean(leveled[s.start : s.end] ** 2))) for s in spans)
    assert abs(20 * np.log10(loud / quiet)) < 1.0
    even = (0.1 * rng.standard_normal(3 * sr)).astype(np.float32)
    assert equalize_speech(even, spans) is even


def test_merge_cuts_long_runs_at_the_widest_pause() -> None:
    sr = 16000
    spans = [
        Span(0, 10 * sr),
        Span(10 * sr + sr // 5, 18 * sr),
        Span(19 * sr + sr // 2, 26 * sr),
        Span(26 * sr + sr // 5, 33 * sr),
    ]
    windows = merge_spans(spans, max_window_s=30.0, max_gap_s=2.0)
    assert windows == [Span(0, 18 * sr), Span(19 * sr + sr // 2, 33 * sr)]


def test_echoed_segment_squeezed_into_no_time_is_dropped() -> None:
    from dattavani_asr.core.types import RawSegment
    from dattavani_asr.engine.segments import drop_echoes

    said = RawSegment(1.02, 3.08, (), " And so my fellow Americans.")
    echo = RawSegment(3.08, 3.12, (), " And so my fellow Americans.")
    spoken_again = RawSegment(3.2, 5.1, (), " and so, my fellow Americans!")
    assert drop_echoes([said, echo]) == [said]
    assert drop_echoes([said, spoken_again]) == [said, spoken_again]
    assert drop_echoes([echo]) == [echo]
    # At the end of a stream window (FLEURS en 002) the echo left out the first word:
    town = RawSegment(1.2, 7.12, (), " To the north and within easy reach is the romantic town of Sintra.")
    loose_echo = RawSegment(7.12, 7.5, (), " The north and within easy reach is the romantic town of Sintra")
    assert drop_echoes([town, loose_echo]) == [town]
    different = RawSegment(7.12, 7.5, (), " The south and beyond is the old town of Lisbon")
    assert drop_echoes([town, different]) == [town, different]
    # ... or echoed two segments, each in its own squeezed segment:
    made = RawSegment(7.2, 8.6, (), " Tret, which was made famous.")
    echoes = [RawSegment(8.6, 8.6, (), town.text), RawSegment(8.6, 8.7, (), " Tret which was made famous")]
    assert drop_echoes([town, made, *echoes]) == [town, made]


def test_trimmed_window_decodes_the_same_alone_or_batched(tiny: Any) -> None:
    from dattavani_asr.audio.decode import decode_audio
    from dattavani_asr.core.options import DecodingOptions
    from dattavani_asr.engine import AudioWindow

    engine = tiny.engine()
    clip = AudioWindow(0.0, decode_audio(DATA / "fleurs" / "fleurs-en-001.ogg"))
    long = AudioWindow(0.0, decode_audio(DATA / "fleurs" / "fleurs-en-002.ogg"))
    options = DecodingOptions(language="en", trim_encoder=True)
    [alone], _, _ = engine.transcribe_batch([clip], options, "en")
    together, _, _ = engine.transcribe_batch([long, clip], options, "en")
    assert together[1].decoded.text == alone.decoded.text
    assert "capital letter" in together[1].decoded.text and "Sintra" in together[0].decoded.text


def test_batched_encoder_output_equals_each_window_encoded_alone(tiny: Any) -> None:
    """On a CPU a batch is encoded window by window (faster there); the output must not change."""
    from dattavani_asr.audio.decode import decode_audio
    from dattavani_asr.engine import AudioWindow
    from dattavani_asr.engine.decoding import encode, window_features

    model = tiny.engine().model
    windows = [AudioWindow(0.0, decode_audio(DATA / "fleurs" / f"fleurs-en-00{i}.ogg")) for i in (1, 2)]
    features = window_features(model, windows)
    together = np.asarray(encode(model, features))
    alone = [np.asarray(encode(model, features[i : i + 1]))[0] for i in range(2)]
    assert together.shape[0] == 2 and np.array_equal(together[0], alone[0]) and np.array_equal(together[1], alone[1])


def test_token_limit_follows_the_longest_window_and_the_prompt() -> None:
    from dattavani_asr.core.options import DecodingOptions
    from dattavani_asr.engine import AudioWindow
    from dattavani_asr.engine.decoding import MAX_TEXT_TOKENS, MIN_TOKEN_LIMIT, token_limit

    windows = [AudioWindow(0.0, np.zeros(16000 * seconds, np.float32)) for seconds in (2, 5)]
    assert token_limit(windows, DecodingOptions(), 4) == MAX_TEXT_TOKENS
    assert token_limit(windows, DecodingOptions(max_tokens_per_second=12.0), 4) == 4 + MIN_TOKEN_LIMIT + 60
    assert token_limit(windows, DecodingOptions(max_tokens_per_second=500.0), 4) == MAX_TEXT_TOKENS


def test_token_limit_ends_a_decode_early(tiny: Any) -> None:
    """The limit cuts the text where it is reached (a repetition loop stops there)."""
    from dattavani_asr.audio.decode import decode_audio
    from dattavani_asr.core.options import DecodingOptions
    from dattavani_asr.engine import AudioWindow

    engine = tiny.engine()
    clip = AudioWindow(0.0, decode_audio(DATA / "fleurs" / "fleurs-en-002.ogg"))
    free = DecodingOptions(language="en", beam_size=1)
    [full], _, _ = engine.transcribe_batch([clip], free, "en")
    limited = DecodingOptions(language="en", beam_size=1, max_tokens_per_second=0.5, temperatures=(0.0, 0.4))
    [short], _, _ = engine.transcribe_batch([clip], limited, "en")
    assert "Lord Byron" in full.decoded.text
    assert len(short.decoded.tokens) <= 16 + clip.duration * 0.5 + 1 < len(full.decoded.tokens)
    assert short.decoded.text and full.decoded.text.startswith(short.decoded.text.split()[0])


def test_fallback_slices_the_encoder_output_instead_of_encoding_again(tiny: Any) -> None:
    from dattavani_asr.audio.decode import decode_audio
    from dattavani_asr.engine import AudioWindow
    from dattavani_asr.engine.decoding import _subset, encode, window_features

    model = tiny.engine().model
    windows = [AudioWindow(0.0, decode_audio(DATA / "fleurs" / f"fleurs-en-00{i}.ogg")) for i in (1, 2, 3)]
    features = window_features(model, windows)
    encoded = encode(model, features)
    assert np.array_equal(
        np.asarray(_subset(model, features, encoded, [0, 2])), np.asarray(encode(model, features[[0, 2]]))
    )


@pytest.mark.base
def test_language_detection_on_trimmed_contexts_finds_each_clips_language(base: Any) -> None:
    from dattavani_asr.audio.decode import decode_audio
    from dattavani_asr.engine import AudioWindow

    languages = ["de", "en", "es", "fr", "pt"]
    windows = [AudioWindow(0.0, decode_audio(DATA / "fleurs" / f"fleurs-{lang}-001.ogg")) for lang in languages]
    detected = base.engine().detect_languages(windows)
    assert [language for language, _ in detected] == languages
    assert all(probability > 0.8 for _, probability in detected)


def test_device_index_lists_gpus_and_refuses_anything_else() -> None:
    from dattavani_asr.core.errors import InvalidOptionError
    from dattavani_asr.engine.loader import device_indices

    assert device_indices("0") == (0,) and device_indices("0,1") == (0, 1) and device_indices(" 1, 0,1") == (1, 0)
    assert device_indices(2) == (2,) and device_indices([0, 3]) == (0, 3)
    for bad in ("", "gpu0", "0;1", "-1"):
        with pytest.raises(InvalidOptionError, match="GPU numbers"):
            device_indices(bad)


def test_device_index_is_ignored_on_the_cpu() -> None:
    from dattavani_asr import Transcriber

    transcript = Transcriber("tiny.en", device="cpu", device_index="0,1").transcribe(JFK)
    assert "ask not" in transcript.text.lower()
