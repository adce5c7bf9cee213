"""Helpers shared by the audio, bad-input, formats and config tests: signal comparison and CLI runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import numpy as np

from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.audio.formats import FormatCase

DATA = Path(__file__).parent / "data"
JFK = DATA / "misc" / "jfk.flac"
STEREO = DATA / "misc" / "stereo_diarization.wav"
JFK_SECONDS = 11.0
HOP = SAMPLE_RATE // 10  # 100 ms

# The real-speech fixtures of test_audio: name -> how to encode JFK.
SPEECH_FORMATS: dict[str, FormatCase] = {
    "mp3": FormatCase("mp3", "mp3", "libmp3lame", 44100, "fltp"),
    "m4a": FormatCase("m4a (aac)", "ipod", "aac", 44100, "fltp"),
    "opus": FormatCase("ogg (opus)", "ogg", "libopus", 48000, "s16"),
    "flac": FormatCase("flac", "flac", "flac", 44100),
    "webm": FormatCase("webm (opus)", "webm", "libopus", 48000, "s16"),
    "mp4": FormatCase("mp4 (h264 video + aac)", "mp4", "aac", 44100, "fltp", "libx264"),
    "mkv": FormatCase("mkv (mpeg4 video + opus)", "matroska", "libopus", 48000, "s16", "mpeg4"),
    "wav8k": FormatCase("wav (16-bit, 8 kHz)", "wav", "pcm_s16le", 8000),
    "wav24": FormatCase("wav (24-bit)", "wav", "pcm_s24le", 16000, "s32"),
}
EXTENSIONS = {"wav8k": "wav", "wav24": "wav"}


@cache
def jfk_reference() -> np.ndarray:
    """JFK decoded once per process; callers must not modify it."""
    audio = decode_audio(JFK)
    audio.flags.writeable = False
    return audio


def rms_envelope(samples: np.ndarray, hop: int = HOP) -> np.ndarray:
    """RMS of each `hop`-sample block (100 ms by default)."""
    count = samples.shape[0] // hop
    blocks = samples[: count * hop].astype(np.float64).reshape(count, hop)
    return np.sqrt((blocks**2).mean(axis=1))


def envelope_correlation(a: np.ndarray, b: np.ndarray, hop: int = HOP) -> float:
    """Pearson correlation of the 100-ms RMS envelopes over the common length."""
    ea, eb = rms_envelope(a, hop), rms_envelope(b, hop)
    n = min(ea.shape[0], eb.shape[0])
    return float(np.corrcoef(ea[:n], eb[:n])[0, 1])


def best_lag(reference: np.ndarray, other: np.ndarray, max_lag: int = 400) -> int:
    """Lag (samples) maximising the cross-correlation; positive = `other` is late vs `reference`."""
    n = min(reference.shape[0], other.shape[0]) - 2 * max_lag
    a = reference[max_lag : max_lag + n].astype(np.float64)
    scores = [float(np.dot(a, other[max_lag + lag : max_lag + lag + n])) for lag in range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag


def cli_command() -> list[str]:
    """The installed console script, or the same entry point through this interpreter."""
    script = shutil.which("dattavani-asr")
    if script:
        return [script]
    return [sys.executable, "-c", "from dattavani_asr.cli import main; main()"]


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment minus every DATTAVANI_* setting (except the shared model cache), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATTAVANI_") or k == "DATTAVANI_CACHE_DIR"}
    env.pop("COLUMNS", None)
    env.update(extra or {})
    return env


def start_cli(args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `dattavani-asr ARGS` without waiting, so that several can run at once."""
    return subprocess.Popen(
        [*cli_command(), *args],
        cwd=cwd,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_cli(
    args: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli_command(), *args], cwd=cwd, env=cli_env(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def write_wav16(path: Path, samples: np.ndarray) -> Path:
    """16 kHz float samples as a 16-bit mono WAV."""
    import wave

    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return path
