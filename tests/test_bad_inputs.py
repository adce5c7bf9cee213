"""Bad inputs: each fails with its own typed error and exit code, in the library and in the real CLI."""

from __future__ import annotations

import subprocess
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio, iter_audio, probe
from dattavani_asr.audio.formats import encode_audio, encode_video_only
from dattavani_asr.core.errors import (
    DattavaniError,
    EmptyAudioError,
    NoAudioStreamError,
    UndecodableAudioError,
    UnreadablePathError,
)
from dattavani_asr.io.writers import OUTPUT_SUBDIR
from helpers_audio import JFK as JFK_PATH
from helpers_audio import SPEECH_FORMATS, best_lag, envelope_correlation, jfk_reference, start_cli


def _random(path: Path) -> None:
    path.write_bytes(np.random.default_rng(len(path.name)).bytes(64_000))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _text(path: Path) -> None:
    path.write_text("These are meeting notes, not audio.\n" * 40, encoding="utf-8")


def _video_only(path: Path) -> None:
    path.write_bytes(encode_video_only(duration=1.0))


def _directory(path: Path) -> None:
    path.mkdir()


def _missing(path: Path) -> None:
    pass


def _header_only_wav(path: Path) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(b"")


@dataclass(frozen=True)
class BadInput:
    filename: str
    make: Callable[[Path], None]
    error: type[DattavaniError]
    opens: bool = False  # container opens with an audio stream: the CLI loads the model; no samples


BAD_INPUTS = {
    "random-wav": BadInput("corrupt.wav", _random, UndecodableAudioError),
    "random-mp3": BadInput("corrupt.mp3", _random, UndecodableAudioError),
    "empty": BadInput("empty.wav", _empty, EmptyAudioError),
    "text-as-mp3": BadInput("notes.mp3", _text, UndecodableAudioError),
    "video-only": BadInput("silent-film.mp4", _video_only, NoAudioStreamError),
    "directory": BadInput("folder.mp3", _directory, UnreadablePathError),
    "missing": BadInput("missing.flac", _missing, UnreadablePathError),
    "header-only-wav": BadInput("no-samples.wav", _header_only_wav, EmptyAudioError, opens=True),
}


def _make(tmp_path: Path, key: str) -> tuple[Path, BadInput]:
    bad = BAD_INPUTS[key]
    path = tmp_path / bad.filename
    bad.make(path)
    return path, bad


def _assert_one_line_naming(message: str, path: Path) -> None:
    assert "\n" not in message.strip()
    assert path.name in message


@pytest.mark.parametrize("key", list(BAD_INPUTS))
def test_decode_raises_typed_error(key: str, tmp_path: Path) -> None:
    path, bad = _make(tmp_path, key)
    with pytest.raises(bad.error) as caught:
        decode_audio(path)
    assert type(caught.value) is bad.error
    _assert_one_line_naming(str(caught.value), path)
    if bad.opens:  # a valid container with no samples: iter_audio just yields nothing
        assert list(iter_audio(path)) == []
    else:  # iter_audio fails just as early, before any block
        with pytest.raises(bad.error):
            next(iter_audio(path))


@pytest.mark.parametrize("key", [k for k, bad in BAD_INPUTS.items() if not bad.opens])
def test_probe_raises_the_same_error(key: str, tmp_path: Path) -> None:
    path, bad = _make(tmp_path, key)
    with pytest.raises(bad.error) as caught:
        probe(path)
    _assert_one_line_naming(str(caught.value), path)


def test_bad_bytes_inputs() -> None:
    with pytest.raises(EmptyAudioError, match="0 bytes"):
        decode_audio(b"")
    with pytest.raises(EmptyAudioError):
        decode_audio(bytearray())
    with pytest.raises(UndecodableAudioError, match="bytes input"):
        decode_audio(np.random.default_rng(1).bytes(20_000))
    with pytest.raises(NoAudioStreamError, match="no audio stream"):
        decode_audio(encode_video_only(duration=0.5))


def test_error_classes_have_distinct_exit_codes() -> None:
    errors = {bad.error for bad in BAD_INPUTS.values()}
    assert errors == {UndecodableAudioError, EmptyAudioError, NoAudioStreamError, UnreadablePathError}
    codes = [error.exit_code for error in errors]
    assert len(set(codes)) == len(codes)
    assert all(code not in (0, 1, 2) for code in codes)  # not success, generic failure or usage error


@pytest.fixture(scope="module")
def jfk_mp3() -> bytes:
    return encode_audio(jfk_reference(), SAMPLE_RATE, SPEECH_FORMATS["mp3"])


def test_truncated_mp3_decodes_what_it_can(jfk_mp3: bytes, tmp_path: Path) -> None:
    path = tmp_path / "half.mp3"
    path.write_bytes(jfk_mp3[: len(jfk_mp3) // 2])
    audio = decode_audio(path)
    seconds = audio.shape[0] / SAMPLE_RATE
    assert 4.5 < seconds < 6.5
    reference = jfk_reference()[: audio.shape[0]]
    assert envelope_correlation(reference, audio) > 0.98
    assert best_lag(reference, audio, max_lag=160) == 0


@pytest.mark.parametrize("name", ["flac", "opus", "m4a", "webm"])
def test_corrupt_middle_keeps_later_audio_in_place(name: str) -> None:
    """Garbage in the middle: the rest decodes, and the lost time becomes silence, not a shift."""
    data = encode_audio(jfk_reference(), SAMPLE_RATE, SPEECH_FORMATS[name])
    middle = len(data) // 2
    damaged = data[:middle] + np.random.default_rng(3).bytes(8000) + data[middle + 8000 :]
    audio = decode_audio(damaged)
    reference = jfk_reference()
    assert abs(audio.shape[0] - reference.shape[0]) < 0.1 * SAMPLE_RATE
    head = SAMPLE_RATE * 4  # before the damage
    assert envelope_correlation(reference[:head], audio[:head]) > 0.98
    tail = slice(reference.shape[0] - SAMPLE_RATE, reference.shape[0])  # the last second, after the damage
    assert envelope_correlation(reference[tail], audio[tail]) > 0.98
    assert abs(best_lag(reference[tail], audio[tail], max_lag=400)) <= 2


def test_corrupt_middle_of_mp3_still_decodes(jfk_mp3: bytes) -> None:
    middle = len(jfk_mp3) // 2
    damaged = jfk_mp3[:middle] + np.random.default_rng(3).bytes(8000) + jfk_mp3[middle + 8000 :]
    audio = decode_audio(damaged)
    assert 9.5 < audio.shape[0] / SAMPLE_RATE < 11.1
    head = SAMPLE_RATE * 4
    assert envelope_correlation(jfk_reference()[:head], audio[:head]) > 0.98


# --- the real CLI, one subprocess per bad input, all started at once ---------------------------------


@dataclass
class CliRun:
    path: Path
    bad: BadInput
    tmpdir: Path
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CliRun]:
    started = {}
    for key in BAD_INPUTS:
        folder = tmp_path_factory.mktemp(f"cli-{key}")
        tmpdir = tmp_path_factory.mktemp(f"tmpdir-{key}")
        path, bad = _make(folder, key)
        process = start_cli(["transcribe", path.name], cwd=folder, env={"TMPDIR": str(tmpdir)})
        started[key] = (path, bad, tmpdir, process)
    runs = {}
    for key, (path, bad, tmpdir, process) in started.items():
        stdout, stderr = process.communicate(timeout=180)
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        runs[key] = CliRun(path, bad, tmpdir, result)
    return runs


@pytest.mark.parametrize("key", list(BAD_INPUTS))
def test_cli_exit_code_is_the_errors(key: str, cli_runs: dict[str, CliRun]) -> None:
    run = cli_runs[key]
    assert run.result.returncode == run.bad.error.exit_code, run.result.stderr


@pytest.mark.parametrize("key", list(BAD_INPUTS))
def test_cli_prints_one_error_line(key: str, cli_runs: dict[str, CliRun]) -> None:
    run = cli_runs[key]
    stderr = run.result.stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:")
    assert run.path.name in lines[0]
    assert run.result.stdout.strip() == ""


@pytest.mark.parametrize("key", list(BAD_INPUTS))
def test_cli_leaves_nothing_behind(key: str, cli_runs: dict[str, CliRun]) -> None:
    run = cli_runs[key]
    folder = run.path.parent
    assert not (folder / OUTPUT_SUBDIR).exists()
    leftovers = [p for pattern in ("*.part", "*.tmp", ".*.part") for p in folder.rglob(pattern)]
    assert leftovers == []
    expected = {run.path.name} if run.path.exists() else set()
    assert {p.name for p in folder.iterdir()} == expected
    assert list(run.tmpdir.iterdir()) == []


def test_cli_continues_after_a_bad_file(tmp_path: Path) -> None:
    """Several bad files in one call: one error line each, exit code of the first failure."""
    paths = [_make(tmp_path, key)[0] for key in ("missing", "text-as-mp3", "video-only")]
    process = start_cli(["transcribe", *(p.name for p in paths)], cwd=tmp_path, env={"TMPDIR": str(tmp_path)})
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == UnreadablePathError.exit_code
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert [line.startswith("error:") for line in lines] == [True, True, True]
    for path, line in zip(paths, lines, strict=True):
        assert path.name in line
    assert "Traceback" not in stderr
    assert not (tmp_path / OUTPUT_SUBDIR).exists()


# ---- found by the fuzz campaign (tests/test_fuzz.py)


def _float_wav(samples: np.ndarray) -> bytes:
    import struct

    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, SAMPLE_RATE, SAMPLE_RATE * 4, 4, 32)
    header = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data))
    return b"RIFF" + struct.pack("<I", 4 + len(header) - 4 + len(data)) + header + data


def test_nan_and_infinite_samples_read_as_silence(tmp_path: Path) -> None:
    speech = jfk_reference().copy()
    speech[::97] = np.nan
    speech[5::1009] = np.inf
    path = tmp_path / "nan.wav"
    path.write_bytes(_float_wav(speech))
    decoded = decode_audio(path)
    assert np.isfinite(decoded).all() and decoded.shape == speech.shape
    assert envelope_correlation(decoded, jfk_reference()) > 0.95


def test_a_sample_rate_change_mid_stream_keeps_decoding() -> None:
    """Two mp3 streams at different rates, back to back (as cat-joined or damaged files are)."""
    first = encode_audio(jfk_reference()[: 4 * SAMPLE_RATE], SAMPLE_RATE, SPEECH_FORMATS["mp3"])
    second_case = SPEECH_FORMATS["mp3"].__class__("mp3", "mp3", "libmp3lame", 22050, "fltp")
    second = encode_audio(jfk_reference()[4 * SAMPLE_RATE : 8 * SAMPLE_RATE], SAMPLE_RATE, second_case)
    decoded = decode_audio(first + second)
    assert abs(decoded.shape[0] / SAMPLE_RATE - 8.0) < 0.3


def test_a_nonsense_sample_rate_is_refused_not_decoded_for_hours(tmp_path: Path) -> None:
    path = tmp_path / "one-hertz.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(1)  # one second of speech declared at 1 Hz would decode to 4.4 hours
        out.writeframes((jfk_reference()[:SAMPLE_RATE] * 32767).astype("<i2").tobytes())
    with pytest.raises(UndecodableAudioError, match="sample rate of 1 Hz"):
        decode_audio(path)


def test_a_header_naming_no_decoder_is_undecodable(tmp_path: Path) -> None:
    import struct

    path = tmp_path / "zero-bits.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes((jfk_reference()[:SAMPLE_RATE] * 32767).astype("<i2").tobytes())
    data = bytearray(path.read_bytes())
    data[34:36] = struct.pack("<H", 0)  # PCM of 0 bits per sample: FFmpeg opens no decoder for it
    path.write_bytes(bytes(data))
    with pytest.raises(UndecodableAudioError, match="no decoder"):
        decode_audio(path)
    with path.open("rb") as handle, pytest.raises(UndecodableAudioError, match="no decoder"):
        decode_audio(handle)


def test_an_empty_stream_is_empty_not_undecodable(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp3"
    path.write_bytes(b"")
    with path.open("rb") as handle, pytest.raises(EmptyAudioError, match="empty"):
        decode_audio(handle)


def test_latin1_file_names_are_transcribed_and_reported(tmp_path: Path) -> None:
    """Old archives hold names that are not UTF-8: the file is read by its bytes, messages show `\\xe9`."""
    import os

    from dattavani_asr import Transcriber, make_options
    from dattavani_asr.batch import BatchConfig, BatchRun
    from dattavani_asr.evaluation import normalize

    folder = tmp_path / "archive"
    folder.mkdir()
    good = Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9-jfk.flac"))
    good.write_bytes(JFK_PATH.read_bytes())
    Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9-broken.mp3")).write_bytes(b"not audio" * 100)
    config = BatchConfig(specs=[str(folder)], formats=["txt"], output_dir=str(tmp_path / "out"))
    summary = BatchRun(config, Transcriber("tiny.en"), make_options()).run()
    assert (summary.done, summary.failed) == (1, 1)
    assert summary.failures[0]["file"].endswith("/caf\\xe9-broken.mp3")
    assert "caf\\xe9-broken.mp3" in summary.failures[0]["message"]
    transcript = Path(os.fsdecode(os.fsencode(tmp_path) + b"/out/caf\xe9-jfk.txt"))
    assert "ask not what your country" in normalize(transcript.read_text())
