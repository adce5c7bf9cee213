"""Decoding real speech with PyAV: every common container/codec, ranges, blocks, channels, inputs.

Fixtures are encoded at test time from JFK (tests/data/misc/jfk.flac) with `formats.encode_audio`.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np
import psutil
import pytest

from dattavani_asr.audio.decode import SAMPLE_RATE, AudioInfo, decode_audio, iter_audio, probe
from dattavani_asr.audio.formats import encode_audio
from dattavani_asr.core.errors import EmptyAudioError, InvalidOptionError
from helpers_audio import (
    EXTENSIONS,
    JFK,
    JFK_SECONDS,
    SPEECH_FORMATS,
    STEREO,
    best_lag,
    envelope_correlation,
    jfk_reference,
    rms_envelope,
)

MATROSKA = {"webm", "mkv"}  # millisecond timestamps: a seek can land up to 1 ms off
PCM = {"wav8k", "wav24"}
EXPECTED_CODECS = {
    "mp3": ("mp3", "mp3float"),
    "m4a": ("aac",),
    "opus": ("opus", "libopus"),
    "flac": ("flac",),
    "webm": ("opus", "libopus"),
    "mp4": ("aac",),
    "mkv": ("opus", "libopus"),
    "wav8k": ("pcm_s16le",),
    "wav24": ("pcm_s24le",),
}


@pytest.fixture(scope="module")
def speech_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """JFK re-encoded into every format of SPEECH_FORMATS, as files."""
    folder = tmp_path_factory.mktemp("speech")
    files = {}
    for name, case in SPEECH_FORMATS.items():
        path = folder / f"jfk-{name}.{EXTENSIONS.get(name, name)}"
        path.write_bytes(encode_audio(jfk_reference(), SAMPLE_RATE, case))
        files[name] = path
    return files


@pytest.fixture(scope="module")
def full_decodes(speech_files: dict[str, Path]) -> dict[str, np.ndarray]:
    return {name: decode_audio(path) for name, path in speech_files.items()}


def test_reference_is_real_speech() -> None:
    audio = jfk_reference()
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.shape[0] == round(JFK_SECONDS * SAMPLE_RATE)
    envelope = rms_envelope(audio)
    # speech: loud words and near-silent pauses, not a constant tone
    assert envelope.max() > 0.05
    assert envelope.min() < 0.1 * envelope.max()


def test_envelope_metric_rejects_shifted_audio() -> None:
    """The envelope comparison used below must fail on audio that is not the same speech in time."""
    audio = jfk_reference()
    shifted = np.roll(audio, SAMPLE_RATE // 2)
    assert envelope_correlation(audio, audio) > 0.999
    assert envelope_correlation(audio, shifted) < 0.8


def test_fixtures_are_what_they_claim(speech_files: dict[str, Path]) -> None:
    for name, path in speech_files.items():
        case = SPEECH_FORMATS[name]
        info = probe(path)
        assert info.codec in EXPECTED_CODECS[name], name
        assert info.sample_rate == case.sample_rate, name
        assert info.channels == 1, name
        with av.open(str(path)) as container:
            assert len(container.streams.video) == (1 if case.video else 0), name
            if case.video:
                assert container.streams.video[0].codec_context.name == {"libx264": "h264"}.get(case.video, case.video)


@pytest.mark.parametrize("name", list(SPEECH_FORMATS))
def test_decodes_real_speech(name: str, full_decodes: dict[str, np.ndarray]) -> None:
    reference = jfk_reference()
    audio = full_decodes[name]
    assert audio.dtype == np.float32
    assert audio.ndim == 1
    assert audio.flags.c_contiguous
    assert abs(audio.shape[0] / SAMPLE_RATE - JFK_SECONDS) < 0.1
    assert np.isfinite(audio).all()
    assert float(np.abs(audio).max()) <= 1.5
    # same speech at the same times, at 16 kHz (a wrong rate would stretch the envelope)
    assert envelope_correlation(reference, audio) > 0.98
    assert best_lag(reference, audio, max_lag=160) == 0
    # level preserved: no doubled or halved gain
    level = float(np.sqrt(np.mean(audio[: reference.shape[0]] ** 2)) / np.sqrt(np.mean(reference**2)))
    assert 0.85 < level < 1.15


@pytest.mark.parametrize("name", list(SPEECH_FORMATS))
def test_range_matches_slice_of_full_decode(
    name: str, speech_files: dict[str, Path], full_decodes: dict[str, np.ndarray]
) -> None:
    part = decode_audio(speech_files[name], start=2, end=5.5)
    full = full_decodes[name]
    assert part.dtype == np.float32
    assert abs(part.shape[0] - 3.5 * SAMPLE_RATE) <= 1
    expected = full[2 * SAMPLE_RATE : 2 * SAMPLE_RATE + part.shape[0]]
    assert envelope_correlation(expected, part) > 0.99
    lag = best_lag(expected, part, max_lag=400)
    assert abs(lag) <= (SAMPLE_RATE // 1000 if name in MATROSKA else 0), f"range is {lag} samples off"
    if name in PCM:
        np.testing.assert_allclose(part, expected, atol=1e-6)
    else:  # lossy: after the lag, the waveforms (not just the envelopes) agree
        aligned = part[400 + lag : part.shape[0] - 400 + lag]
        assert np.corrcoef(aligned, expected[400:-400])[0, 1] > 0.95


@pytest.mark.parametrize("name", ["mp3", "flac", "opus", "mp4"])
def test_open_ended_ranges(name: str, speech_files: dict[str, Path], full_decodes: dict[str, np.ndarray]) -> None:
    full = full_decodes[name]
    head = decode_audio(speech_files[name], end=5.5)
    # without --start nothing is seeked: the head is exactly the start of the full decode
    assert head.shape[0] == round(5.5 * SAMPLE_RATE)
    np.testing.assert_array_equal(head, full[: head.shape[0]])
    tail = decode_audio(speech_files[name], start=7.25)
    assert abs(tail.shape[0] - (full.shape[0] - round(7.25 * SAMPLE_RATE))) <= 2
    assert envelope_correlation(full[round(7.25 * SAMPLE_RATE) :], tail) > 0.99


def test_range_on_source_flac_matches_reference() -> None:
    reference = jfk_reference()
    part = decode_audio(JFK, start=4.3, end=4.9)
    assert part.shape[0] == round(0.6 * SAMPLE_RATE)
    expected = reference[round(4.3 * SAMPLE_RATE) : round(4.9 * SAMPLE_RATE)]
    assert best_lag(expected, part, max_lag=100) == 0
    assert np.corrcoef(part, expected)[0, 1] > 0.95


def test_range_end_past_duration_is_clipped() -> None:
    part = decode_audio(JFK, start=9, end=60)
    assert abs(part.shape[0] / SAMPLE_RATE - 2.0) < 0.01


def test_range_past_end_of_file_is_empty() -> None:
    with pytest.raises(EmptyAudioError, match=r"jfk\.flac"):
        decode_audio(JFK, start=30, end=40)


@pytest.mark.parametrize(("start", "end"), [(5.0, 5.0), (5.0, 2.0)])
def test_end_before_start_is_rejected(start: float, end: float) -> None:
    with pytest.raises(InvalidOptionError, match="--end"):
        decode_audio(JFK, start=start, end=end)


def test_iter_audio_blocks_are_bounded_and_complete() -> None:
    reference = jfk_reference()
    blocks = list(iter_audio(JFK, block_seconds=2.0))
    sizes = [block.shape[0] for block in blocks]
    assert len(blocks) == 6
    assert all(size == 2 * SAMPLE_RATE for size in sizes[:-1])
    assert 0 < sizes[-1] <= 2 * SAMPLE_RATE
    assert all(block.dtype == np.float32 and block.ndim == 1 for block in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), reference)


def test_iter_audio_range_in_blocks_matches_decode() -> None:
    blocks = list(iter_audio(JFK, start=1.5, end=9.0, block_seconds=0.5))
    assert max(block.shape[0] for block in blocks) <= SAMPLE_RATE // 2
    np.testing.assert_array_equal(np.concatenate(blocks), decode_audio(JFK, start=1.5, end=9.0))


def _write_long_wav(path: Path, minutes: int) -> None:
    """A synthetic mono 16-bit wav, written a minute at a time so the test itself holds little memory."""
    rng = np.random.default_rng(7)
    times = np.arange(60 * SAMPLE_RATE) / SAMPLE_RATE
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        for minute in range(minutes):
            tone = 0.3 * np.sin(2 * np.pi * (200 + 20 * minute) * times) + 0.05 * rng.standard_normal(times.size)
            out.writeframes((tone * 32767).astype("<i2").tobytes())


def test_iter_audio_memory_is_bounded_on_ten_minutes(tmp_path: Path) -> None:
    path = tmp_path / "ten-minutes.wav"
    _write_long_wav(path, minutes=10)
    assert probe(path).duration == pytest.approx(600.0)
    process = psutil.Process()
    baseline = peak = process.memory_info().rss
    total = largest = 0
    for block in iter_audio(path, block_seconds=30.0):
        total += block.shape[0]
        largest = max(largest, block.shape[0])
        peak = max(peak, process.memory_info().rss)
    assert total == 600 * SAMPLE_RATE
    assert largest == 30 * SAMPLE_RATE
    # the whole decode would be 600 s * 16 kHz * 4 bytes = 38.4 MB; blocks of 30 s are 1.9 MB
    assert peak - baseline < 16 * 1024 * 1024, f"RSS grew by {(peak - baseline) / 1e6:.1f} MB"


def _stereo_channels() -> np.ndarray:
    with wave.open(str(STEREO), "rb") as handle:
        assert handle.getnchannels() == 2 and handle.getframerate() == SAMPLE_RATE
        raw = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    return raw.reshape(-1, 2).astype(np.float32) / 32768


def test_channel_selection_returns_each_channel() -> None:
    raw = _stereo_channels()
    left = decode_audio(STEREO, channel=0)
    right = decode_audio(STEREO, channel=1)
    assert left.dtype == right.dtype == np.float32
    np.testing.assert_allclose(left, raw[:, 0], atol=1e-6)
    np.testing.assert_allclose(right, raw[:, 1], atol=1e-6)
    # two different speakers: the channels really differ
    assert float(np.abs(left - right).mean()) > 0.01
    assert envelope_correlation(left, right) < 0.8


def test_mono_downmix_mixes_both_channels_equally() -> None:
    left = decode_audio(STEREO, channel=0)
    right = decode_audio(STEREO, channel=1)
    mono = decode_audio(STEREO)
    weights, *_ = np.linalg.lstsq(np.stack([left, right], axis=1), mono, rcond=None)
    assert weights[0] == pytest.approx(weights[1], abs=1e-3)
    assert 0.4 < weights[0] < 1.0
    np.testing.assert_allclose(mono, weights[0] * left + weights[1] * right, atol=1e-4)


def test_channel_out_of_range_raises() -> None:
    with pytest.raises(InvalidOptionError, match=r"channel 2 .*2 channel"):
        decode_audio(STEREO, channel=2)


def test_channel_on_mono_input(speech_files: dict[str, Path], full_decodes: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(decode_audio(speech_files["flac"], channel=0), full_decodes["flac"])
    with pytest.raises(InvalidOptionError, match="channel 1"):
        decode_audio(speech_files["flac"], channel=1)


@pytest.mark.parametrize("name", ["mp3", "mp4", "wav24"])
def test_bytes_and_file_like_inputs(
    name: str, speech_files: dict[str, Path], full_decodes: dict[str, np.ndarray]
) -> None:
    path = speech_files[name]
    data = path.read_bytes()
    expected = full_decodes[name]
    np.testing.assert_array_equal(decode_audio(data), expected)
    np.testing.assert_array_equal(decode_audio(bytearray(data)), expected)
    np.testing.assert_array_equal(decode_audio(io.BytesIO(data)), expected)
    np.testing.assert_array_equal(decode_audio(str(path)), expected)
    with path.open("rb") as handle:
        np.testing.assert_array_equal(decode_audio(handle), expected)
    np.testing.assert_array_equal(decode_audio(data, start=2, end=5.5), decode_audio(path, start=2, end=5.5))


def test_probe_source_flac() -> None:
    info = probe(JFK)
    assert info == AudioInfo(container="flac", codec="flac", sample_rate=44100, channels=2, duration=info.duration)
    assert info.duration == pytest.approx(JFK_SECONDS, abs=0.01)


@pytest.mark.parametrize("name", list(SPEECH_FORMATS))
def test_probe_encoded(name: str, speech_files: dict[str, Path]) -> None:
    from_path = probe(speech_files[name])
    from_bytes = probe(speech_files[name].read_bytes())
    assert from_path == from_bytes
    assert from_path.duration is not None
    assert abs(from_path.duration - JFK_SECONDS) < 0.1
    # the audio stream is described even when a video stream comes first
    assert from_path.codec in EXPECTED_CODECS[name]
