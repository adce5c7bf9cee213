"""Damaged and hostile media files, made reproducibly from the real recordings in tests/data.

`make_inputs(folder, count, seed)` writes `count` files cycling through every kind in `KINDS` (truncated,
bit-flipped, wrong extension, random bytes, huge declared sizes, decompression bombs of compressed
silence, 0-byte, tiny fragments, NaN samples, odd rates and channel counts, no audio track, non-UTF-8
names) and returns what it wrote. Used by tests/test_fuzz.py (sized for CI) and tests/stress/fuzz_campaign.py.
"""

from __future__ import annotations

import io
import os
import struct
import wave
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import av
import numpy as np

from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.audio.formats import FormatCase, encode_audio, encode_video_only

DATA = Path(__file__).resolve().parents[1] / "data"
REAL = [DATA / "misc" / "jfk.flac", DATA / "misc" / "hotwords.mp3", DATA / "misc" / "stereo_diarization.wav"]
REAL += sorted((DATA / "fleurs").glob("fleurs-en-*.ogg"))[:3]
ENCODINGS = {
    "mp3": FormatCase("mp3", "mp3", "libmp3lame", 44100, "fltp"),
    "m4a": FormatCase("m4a", "ipod", "aac", 44100, "fltp"),
    "webm": FormatCase("webm", "webm", "libopus", 48000, "s16"),
    "wav": FormatCase("wav", "wav", "pcm_s16le", 16000),
}


@dataclass(frozen=True)
class Hostile:
    path: Path
    kind: str


@cache
def _real_bytes() -> list[tuple[str, bytes]]:
    """(extension, bytes) of the real recordings plus JFK's first 4 s in more containers."""
    found = [(path.suffix.lstrip("."), path.read_bytes()) for path in REAL]
    clip = decode_audio(REAL[0])[: 4 * SAMPLE_RATE]
    found += [(extension, encode_audio(clip, SAMPLE_RATE, case)) for extension, case in ENCODINGS.items()]
    return found


def _wav(samples: np.ndarray, rate: int = SAMPLE_RATE, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def _float_wav(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """WAVE_FORMAT_IEEE_FLOAT (3): the only PCM WAV that can carry NaN and infinity."""
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data))
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def _speech(rng: np.random.Generator, seconds: float = 4.0) -> np.ndarray:
    audio = decode_audio(REAL[0])
    start = int(rng.integers(0, max(1, audio.shape[0] - int(seconds * SAMPLE_RATE))))
    return np.asarray(audio[start : start + int(seconds * SAMPLE_RATE)])


def truncated(rng: np.random.Generator) -> tuple[str, bytes]:
    extension, data = _real_bytes()[int(rng.integers(len(_real_bytes())))]
    return extension, data[: max(1, int(len(data) * rng.uniform(0.005, 0.95)))]


def bit_flipped(rng: np.random.Generator) -> tuple[str, bytes]:
    extension, data = _real_bytes()[int(rng.integers(len(_real_bytes())))]
    damaged = bytearray(data)
    reach = 64 if rng.random() < 0.3 else len(damaged)  # a third hit the header
    for position in rng.integers(0, min(reach, len(damaged)), size=int(rng.integers(1, 200))):
        damaged[position] ^= 1 << int(rng.integers(8))
    return extension, bytes(damaged)


def wrong_extension(rng: np.random.Generator) -> tuple[str, bytes]:
    extension, data = _real_bytes()[int(rng.integers(len(_real_bytes())))]
    others = [name for name in ("wav", "mp3", "flac", "ogg", "m4a", "mp4", "webm", "opus") if name != extension]
    return others[int(rng.integers(len(others)))], data


def random_bytes(rng: np.random.Generator) -> tuple[str, bytes]:
    return ("wav", "mp3", "flac", "ogg", "m4a")[int(rng.integers(5))], rng.bytes(int(rng.integers(1, 200_000)))


def empty(rng: np.random.Generator) -> tuple[str, bytes]:
    return ("wav", "mp3", "flac")[int(rng.integers(3))], b""


def tiny_fragment(rng: np.random.Generator) -> tuple[str, bytes]:
    extension, data = _real_bytes()[int(rng.integers(len(_real_bytes())))]
    return extension, data[: int(rng.integers(1, 48))]


def huge_declared_size(rng: np.random.Generator) -> tuple[str, bytes]:
    """A WAV whose RIFF and data sizes claim 4 GB while the file holds a second of speech."""
    data = bytearray(_wav(_speech(rng, 1.0)))
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    data[40:44] = struct.pack("<I", 0xFFFFFFF0 if rng.random() < 0.5 else 0x7FFFFFFF)
    return "wav", bytes(data)


def odd_format(rng: np.random.Generator) -> tuple[str, bytes]:
    """Valid headers with hostile numbers: 1 Hz, 4 GHz, 0 or 65535 channels, 8 channels, 192 kHz."""
    data = bytearray(_wav(_speech(rng, 1.0)))
    choice = int(rng.integers(5))
    if choice == 0:
        data[24:28] = struct.pack("<I", int(rng.choice([1, 0xFFFFFFFF])))  # sample rate
    elif choice == 1:
        data[22:24] = struct.pack("<H", int(rng.choice([0, 65535])))  # channels
    elif choice == 2:
        return "wav", _wav(np.tile(_speech(rng, 1.0), 8), channels=8)
    elif choice == 3:
        return "wav", _wav(np.repeat(_speech(rng, 1.0), 12), rate=192_000)
    else:
        data[34:36] = struct.pack("<H", int(rng.choice([0, 3, 64])))  # bits per sample
    return "wav", bytes(data)


def nan_samples(rng: np.random.Generator) -> tuple[str, bytes]:
    audio = _speech(rng, 2.0).copy()
    audio[rng.integers(0, audio.shape[0], size=int(rng.integers(1, 4000)))] = rng.choice([np.nan, np.inf, -np.inf])
    return "wav", _float_wav(audio)


def text_as_audio(rng: np.random.Generator) -> tuple[str, bytes]:
    return ("mp3", "wav", "flac")[int(rng.integers(3))], ("meeting notes, not audio ü 日本\n" * 50).encode()


def no_audio_track(rng: np.random.Generator) -> tuple[str, bytes]:
    return "mp4", encode_video_only(duration=float(rng.uniform(0.2, 1.0)))


def silence_bomb(rng: np.random.Generator, minutes: float = 20.0) -> tuple[str, bytes]:
    """A small FLAC that decodes to `minutes` of digital silence (or near-silent hiss)."""
    return "flac", encode_silence(minutes * 60, hiss=bool(rng.random() < 0.5))


def encode_silence(seconds: float, hiss: bool = False) -> bytes:
    """FLAC of `seconds` of silence, encoded a minute at a time (hours fit in a few MB)."""
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(-2, 3, size=60 * SAMPLE_RATE).astype(np.int16)
    block = noise if hiss else np.zeros(60 * SAMPLE_RATE, dtype=np.int16)
    with av.open(buffer, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        left = int(seconds * SAMPLE_RATE)
        while left > 0:
            frame = av.AudioFrame.from_ndarray(block[: min(left, block.shape[0])][None, :], format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for packet in stream.encode(frame):
                container.mux(packet)
            left -= frame.samples
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def very_short(rng: np.random.Generator) -> tuple[str, bytes]:
    return "wav", _wav(_speech(rng, float(rng.uniform(0.001, 0.2))))


KINDS: dict[str, Callable[[np.random.Generator], tuple[str, bytes]]] = {
    "truncated": truncated,
    "bit-flipped": bit_flipped,
    "wrong-extension": wrong_extension,
    "random-bytes": random_bytes,
    "empty": empty,
    "tiny-fragment": tiny_fragment,
    "huge-declared-size": huge_declared_size,
    "odd-format": odd_format,
    "nan-samples": nan_samples,
    "text-as-audio": text_as_audio,
    "no-audio-track": no_audio_track,
    "very-short": very_short,
    "silence-bomb": silence_bomb,
}


def _name(index: int, kind: str, extension: str, rng: np.random.Generator) -> str | bytes:
    """Every seventh name is not UTF-8 (Latin-1 bytes), as old archives have."""
    if index % 7 == 3:
        return b"caf\xe9-" + f"{index:04d}-{kind}.{extension}".encode()
    return f"{index:04d}-{kind}.{extension}"


def make_inputs(
    folder: Path, count: int, seed: int = 0, kinds: tuple[str, ...] = tuple(KINDS), bombs: int = 1
) -> list[Hostile]:
    """`count` hostile files in `folder` (at most `bombs` silence bombs), the same ones for the same seed."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    made: list[Hostile] = []
    cycle = [kind for kind in kinds if kind != "silence-bomb" or bombs > 0]
    for index in range(count):
        kind = cycle[index % len(cycle)]
        if kind == "silence-bomb" and sum(item.kind == kind for item in made) >= bombs:
            kind = "bit-flipped"
        extension, data = KINDS[kind](rng)
        name = _name(index, kind, extension, rng)
        path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(name))))
        path.write_bytes(data)
        made.append(Hostile(path, kind))
    return made
