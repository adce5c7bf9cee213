"""Decode any audio or video input to 16 kHz mono float32 with PyAV, in bounded blocks.

Memory stays flat however long the input is: `iter_audio` yields fixed-size blocks and never
holds the whole file. Corrupt packets in the middle of a file are skipped (and, where timestamps
show the time they covered, replaced by silence so later audio keeps its place); a file where
nothing decodes raises `UndecodableAudioError`.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import av
import numpy as np

from ..core.errors import (
    EmptyAudioError,
    InvalidOptionError,
    NoAudioStreamError,
    UndecodableAudioError,
    UnreadablePathError,
)
from ..core.types import SAMPLE_RATE

__all__ = [
    "DEFAULT_BLOCK_SECONDS",
    "SAMPLE_RATE",
    "SILENCE_PEAK",
    "AudioInfo",
    "AudioSource",
    "decode_audio",
    "describe_source",
    "iter_audio",
    "open_container",
    "probe",
]

DEFAULT_BLOCK_SECONDS = 60.0
SEEK_PREROLL = 0.5  # seconds decoded and dropped before --start: decoder/resampler warm-up
MIN_GAP = 0.05  # seconds: a larger jump in frame timestamps is audio lost to corrupt packets, filled with silence
MAX_GAP = 60.0  # seconds: a larger jump is a timestamp discontinuity, not lost audio, and is not filled
# Sample rates outside these are damaged headers: a second of audio declared at 1 Hz would decode to 4 hours.
MIN_RATE, MAX_RATE = 2_000, 768_000
SILENCE_PEAK = 1e-4  # about -80 dBFS: digital silence, not a quiet room

AudioSource = str | os.PathLike[str] | bytes | bytearray | IO[bytes]


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about its first audio stream."""

    container: str
    codec: str
    sample_rate: int
    channels: int
    duration: float | None


def describe_source(source: AudioSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "name", None)
    if isinstance(name, str) and name:
        return name
    return f"<{type(source).__name__} input>"


def _check_path(path: Path) -> None:
    if not path.exists():
        raise UnreadablePathError(f"{path}: no such file")
    if path.is_dir():
        raise UnreadablePathError(f"{path}: is a directory, not an audio file")
    if not os.access(path, os.R_OK):
        raise UnreadablePathError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise EmptyAudioError(f"{path}: file is empty (0 bytes)")


class _QuietSeeks:
    """A file object for PyAV whose failed seeks (a damaged header asking for a negative offset) come back
    as FFmpeg error codes instead of Python exceptions that PyAV prints to stderr with a traceback."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.name = describe_source(raw)

    def read(self, size: int = -1) -> bytes:
        return self.raw.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self.raw.seek(offset, whence)
        except (OSError, ValueError, OverflowError) as exc:
            return -(getattr(exc, "errno", None) or errno.EINVAL)

    def tell(self) -> int:
        return self.raw.tell()

    def seekable(self) -> bool:
        return bool(getattr(self.raw, "seekable", lambda: True)())


def _check_stream(stream: IO[bytes], name: str) -> None:
    """An empty seekable stream is an empty file, not an undecodable one."""
    seekable = getattr(stream, "seekable", lambda: False)
    if not seekable():
        return
    position = stream.tell()
    empty = not stream.read(1)
    stream.seek(position)
    if empty:
        raise EmptyAudioError(f"{name}: file is empty (0 bytes)")


def open_container(source: AudioSource) -> Any:
    """Open `source` with PyAV, mapping every failure to a typed error."""
    name = describe_source(source)
    target: Any = source
    if isinstance(source, (str, os.PathLike)):
        _check_path(Path(source))
        target = os.fspath(source)
    elif isinstance(source, (bytes, bytearray)):
        if not source:
            raise EmptyAudioError(f"{name}: no data (0 bytes)")
        target = io.BytesIO(bytes(source))
    else:
        _check_stream(source, name)
        target = _QuietSeeks(source)
    try:
        return av.open(target, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise UndecodableAudioError(f"{name}: not a readable audio/video file ({exc.strerror})") from exc
    except OSError as exc:
        raise UnreadablePathError(f"{name}: cannot read ({exc.strerror or exc})") from exc


def _audio_stream(container: Any, name: str) -> Any:
    if not container.streams.audio:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise NoAudioStreamError(f"{name}: no audio stream (streams found: {', '.join(kinds)})")
    stream = container.streams.audio[0]
    if stream.codec_context is None:  # e.g. a WAV header naming 64-bit integer samples
        raise UndecodableAudioError(f"{name}: no decoder for its audio stream (damaged header?)")
    rate = stream.codec_context.sample_rate or 0
    if rate and not MIN_RATE <= rate <= MAX_RATE:
        raise UndecodableAudioError(f"{name}: a sample rate of {rate} Hz is not audio (damaged header?)")
    return stream


def probe(source: AudioSource) -> AudioInfo:
    """Read stream metadata without decoding."""
    container = open_container(source)
    with container:
        stream = _audio_stream(container, describe_source(source))
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        return AudioInfo(
            container=container.format.name,
            codec=stream.codec_context.name,
            sample_rate=stream.codec_context.sample_rate or 0,
            channels=stream.codec_context.channels or 0,
            duration=duration,
        )


def _decoded_frames(container: Any, stream: Any, name: str) -> Iterator[Any]:
    """Yield decoded frames, skipping corrupt packets; fail if nothing decodes at all."""
    decoded = errors = 0
    last_error = ""
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            errors += 1
            last_error = exc.strerror or str(exc)
            if errors > 50 and decoded == 0:
                break
            continue
        for frame in frames:
            if not MIN_RATE <= frame.sample_rate <= MAX_RATE:  # a damaged frame header
                errors += 1
                last_error = f"a frame at {frame.sample_rate} Hz"
                continue
            decoded += 1
            yield frame
    if decoded == 0 and errors:
        raise UndecodableAudioError(f"{name}: audio stream does not decode ({last_error})")


def _resampled(frames: Iterator[Any], channel: int | None) -> Iterator[tuple[float | None, np.ndarray]]:
    """Resample frames to 16 kHz float32, mono or one chosen channel; yields (time, samples).

    Only the first piece carries a time: that of the first decoded frame, whose first sample it starts
    with. The resampler may hold back a whole short frame (e.g. the 47-sample first frame of an mp3),
    so the time of the frame that happens to release the first output would be late. Where timestamps
    show lost audio (corrupt packets skipped), silence of that length keeps later audio in place.
    """
    resampler = _Resampler(channel)
    time: float | None = None
    expected: float | None = None
    first = True
    for frame in frames:
        if first and time is None:
            time = frame.time
        gap = _gap(expected, frame.time)
        begin = frame.time if frame.time is not None else expected
        expected = None if begin is None else begin + frame.samples / frame.sample_rate
        pieces = [np.zeros(round(gap * SAMPLE_RATE), dtype=np.float32)] if gap else []
        pieces += [_pick_channel(out.to_ndarray(), channel) for out in resampler.resample(frame)]
        for samples in pieces:
            yield (time if first else None), samples
            first = False
    for out in resampler.resample(None):
        yield (time if first else None), _pick_channel(out.to_ndarray(), channel)
        first = False


class _Resampler:
    """PyAV's resampler, set up again (after flushing the old one) when the frames' format, layout or
    rate changes mid-stream, as in concatenated or damaged files."""

    def __init__(self, channel: int | None) -> None:
        self.channel = channel
        self.setup: tuple[str, str, int] | None = None
        self.current = self._new()

    def _new(self) -> Any:
        return av.AudioResampler(format="fltp", layout="mono" if self.channel is None else None, rate=SAMPLE_RATE)

    def resample(self, frame: Any) -> list[Any]:
        if frame is None:
            return list(self.current.resample(None))
        setup = (frame.format.name, frame.layout.name, frame.sample_rate)
        flushed: list[Any] = []
        if self.setup is not None and setup != self.setup:
            flushed = list(self.current.resample(None))
            self.current = self._new()
        self.setup = setup
        return flushed + list(self.current.resample(frame))


def _gap(expected: float | None, time: float | None) -> float:
    """Seconds of audio missing before a frame at `time`, when the previous frame ended at `expected`."""
    if expected is None or time is None:
        return 0.0
    gap = time - expected
    return gap if MIN_GAP <= gap <= MAX_GAP else 0.0


def _pick_channel(array: np.ndarray, channel: int | None) -> np.ndarray:
    if channel is None:
        return _finite(array.reshape(-1).astype(np.float32, copy=False))
    if channel >= array.shape[0]:
        raise InvalidOptionError(f"channel {channel} requested but the audio has {array.shape[0]} channel(s)")
    return _finite(np.ascontiguousarray(array[channel], dtype=np.float32))


def _finite(samples: np.ndarray) -> np.ndarray:
    """NaN and infinite samples (float WAVs from broken tools) as silence: they would poison the features."""
    if np.isfinite(samples).all():
        return samples
    return np.asarray(np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0), dtype=np.float32)


def _clip(
    pieces: Iterator[tuple[float | None, np.ndarray]], start: float, end: float | None, origin: float = 0.0
) -> Iterator[np.ndarray]:
    """Keep only samples inside [start, end), using the first frame time after a seek.

    Times count from `origin`, the stream's start time (e.g. 25 ms of encoder delay in an mp3), so that
    sample 0 of a full decode is time 0 and a range decode matches the same slice of the full decode.
    """
    position: float | None = None
    for time, samples in pieces:
        if position is None:
            position = time - origin if time is not None else 0.0
        first = position
        position += samples.shape[0] / SAMPLE_RATE
        lo = max(0, round((start - first) * SAMPLE_RATE))
        hi = samples.shape[0] if end is None else min(samples.shape[0], round((end - first) * SAMPLE_RATE))
        if hi > lo:
            yield samples[lo:hi]
        if end is not None and position >= end:
            return


def _stream_origin(stream: Any) -> float:
    """The stream's start time in seconds: the timestamp that sample 0 of a full decode carries."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _blocks(pieces: Iterator[np.ndarray], block_samples: int) -> Iterator[np.ndarray]:
    pending: list[np.ndarray] = []
    size = 0
    for samples in pieces:
        pending.append(samples)
        size += samples.shape[0]
        while size >= block_samples:
            joined = np.concatenate(pending)
            yield joined[:block_samples]
            rest = joined[block_samples:]
            pending, size = ([rest], rest.shape[0]) if rest.size else ([], 0)
    if size:
        yield np.concatenate(pending)


def iter_audio(
    source: AudioSource,
    *,
    start: float | None = None,
    end: float | None = None,
    channel: int | None = None,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
) -> Iterator[np.ndarray]:
    """Yield 16 kHz float32 blocks of at most `block_seconds` each, from `start` to `end`."""
    if start is not None and end is not None and end <= start:
        raise InvalidOptionError(f"--end ({end}) must be after --start ({start})")
    name = describe_source(source)
    container = open_container(source)
    with container:
        stream = _audio_stream(container, name)
        stream.thread_type = "AUTO"
        origin = _stream_origin(stream)
        if start:
            target = max(0.0, start - SEEK_PREROLL) + origin
            container.seek(int(target * av.time_base), any_frame=False, backward=True)
        frames = _decoded_frames(container, stream, name)
        pieces = _clip(_resampled(frames, channel), start or 0.0, end, origin)
        try:
            yield from _blocks(pieces, int(block_seconds * SAMPLE_RATE))
        except av.error.FFmpegError as exc:
            raise UndecodableAudioError(f"{name}: decoding failed ({exc.strerror or exc})") from exc


def decode_audio(
    source: AudioSource,
    *,
    start: float | None = None,
    end: float | None = None,
    channel: int | None = None,
) -> np.ndarray:
    """Decode the whole input (or the [start, end) range) into one array."""
    blocks = list(iter_audio(source, start=start, end=end, channel=channel))
    if not blocks:
        raise EmptyAudioError(f"{describe_source(source)}: no audio samples decoded")
    return np.concatenate(blocks)
