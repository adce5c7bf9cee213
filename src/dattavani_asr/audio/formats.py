"""Encode audio into containers with PyAV, and check which formats really decode here.

`dattavani-asr formats` encodes a short tone in each common container/codec (optionally with a
video track), decodes it back through `audio.iter_audio`, and reports what worked: a list of
what really decodes, not what FFmpeg claims.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np

from ..core.errors import DattavaniError


@dataclass(frozen=True)
class FormatCase:
    name: str
    container: str
    codec: str
    sample_rate: int = 48000
    sample_format: str = "s16"
    video: str | None = None


COMMON_FORMATS = (
    FormatCase("wav (16-bit)", "wav", "pcm_s16le", 16000),
    FormatCase("wav (24-bit, 8 kHz)", "wav", "pcm_s24le", 8000, "s32"),
    FormatCase("flac", "flac", "flac", 44100),
    FormatCase("mp3", "mp3", "libmp3lame", 44100, "fltp"),
    FormatCase("m4a (aac)", "ipod", "aac", 44100, "fltp"),
    FormatCase("m4a (alac)", "ipod", "alac", 44100, "s16p"),
    FormatCase("ogg (opus)", "ogg", "libopus", 48000, "s16"),
    FormatCase("ogg (flac)", "ogg", "flac", 44100, "s16"),
    FormatCase("mp2", "mp2", "mp2", 44100, "s16"),
    FormatCase("webm (opus)", "webm", "libopus", 48000, "s16"),
    FormatCase("aiff", "aiff", "pcm_s16be", 22050),
    FormatCase("ac3", "ac3", "ac3", 48000, "fltp"),
    FormatCase("wma", "asf", "wmav2", 44100, "fltp"),
    FormatCase("mp4 (h264 video + aac)", "mp4", "aac", 44100, "fltp", "libx264"),
    FormatCase("mkv (mpeg4 video + opus)", "matroska", "libopus", 48000, "s16", "mpeg4"),
    FormatCase("webm (vp9 video + opus)", "webm", "libopus", 48000, "s16", "libvpx-vp9"),
    FormatCase("mov (mjpeg video + pcm)", "mov", "pcm_s16le", 48000, "s16", "mjpeg"),
)


def _resample_linear(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if source_rate == target_rate:
        return samples
    count = round(samples.shape[0] * target_rate / source_rate)
    positions = np.linspace(0, samples.shape[0] - 1, count)
    resampled: np.ndarray = np.interp(positions, np.arange(samples.shape[0]), samples).astype(np.float32)
    return resampled


def _add_video(container: Any, codec: str, duration: float) -> list[Any]:
    stream = container.add_stream(codec, rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, ("yuvj420p" if codec == "mjpeg" else "yuv420p")
    packets: list[Any] = []
    for index in range(max(1, int(duration * 10))):
        image = np.full((48, 64, 3), (index * 7) % 255, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=stream.pix_fmt)
        frame.pts = index
        packets.extend(stream.encode(frame))
    packets.extend(stream.encode(None))
    return packets


def _audio_packets(container: Any, case: FormatCase, samples: np.ndarray) -> list[Any]:
    stream = container.add_stream(case.codec, rate=case.sample_rate)
    stream.layout = "mono"
    stream.format = case.sample_format
    stream.codec_context.options = {"strict": "experimental"}
    if stream.codec_context.bit_rate in (0, None):
        stream.codec_context.bit_rate = 96_000
    resampler = av.AudioResampler(format=case.sample_format, layout="mono", rate=case.sample_rate)
    frame_size = stream.codec_context.frame_size or 1024
    packets: list[Any] = []
    pts = 0
    for begin in range(0, samples.shape[0], frame_size):
        chunk = samples[begin : begin + frame_size]
        source = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
        source.sample_rate = case.sample_rate
        for frame in resampler.resample(source):
            frame.pts, frame.time_base = pts, Fraction(1, case.sample_rate)
            pts += frame.samples
            packets.extend(stream.encode(frame))
    packets.extend(stream.encode(None))
    return packets


def encode_audio(samples: np.ndarray, sample_rate: int, case: FormatCase) -> bytes:
    """Encode mono float32 `samples` (at `sample_rate`) into the container/codec of `case`."""
    audio = _resample_linear(np.asarray(samples, dtype=np.float32), sample_rate, case.sample_rate)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=case.container) as container:
        video_packets = _add_video(container, case.video, audio.shape[0] / case.sample_rate) if case.video else []
        for packet in video_packets + _audio_packets(container, case, audio):
            container.mux(packet)
    return buffer.getvalue()


def encode_video_only(duration: float = 1.0, codec: str = "mpeg4", container_format: str = "mp4") -> bytes:
    """A video file with no audio track, for testing the no-audio error."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        for packet in _add_video(container, codec, duration):
            container.mux(packet)
    return buffer.getvalue()


@dataclass(frozen=True)
class FormatCheck:
    case: FormatCase
    ok: bool
    detail: str


def check_formats(cases: tuple[FormatCase, ...] = COMMON_FORMATS) -> list[FormatCheck]:
    """Encode a 1-s tone in each format and decode it back; report what really works."""
    from .decode import SAMPLE_RATE, decode_audio

    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)
    results = []
    for case in cases:
        started = time.perf_counter()
        try:
            decoded = decode_audio(encode_audio(tone, SAMPLE_RATE, case))
            seconds = decoded.shape[0] / SAMPLE_RATE
            ok = 0.8 < seconds < 1.3 and float(np.abs(decoded).max()) > 0.1
            detail = f"{seconds:.2f} s decoded in {1000 * (time.perf_counter() - started):.0f} ms"
        except (av.error.FFmpegError, DattavaniError, ValueError) as exc:
            ok, detail = False, str(exc)
        results.append(FormatCheck(case, ok, detail))
    return results
