"""Cut audio into speech windows Whisper can decode in one pass (at most 30 s each).

Silero VAD (the ONNX model bundled with faster-whisper, no download) finds speech; nearby
speech spans are merged into contiguous windows, keeping the short pauses between them so
timestamps inside a window stay true to the original audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE
from .options import VadOptions


@dataclass(frozen=True)
class Span:
    """A half-open sample range [start, end)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def speech_spans(audio: np.ndarray, options: VadOptions) -> list[Span]:
    """Sample ranges that Silero VAD marks as speech (each at most `max_window_s` long)."""
    from faster_whisper.vad import VadOptions as SileroOptions
    from faster_whisper.vad import get_speech_timestamps

    if audio.size == 0:
        return []
    silero = SileroOptions(
        threshold=options.threshold,
        min_speech_duration_ms=options.min_speech_ms,
        min_silence_duration_ms=options.min_silence_ms,
        speech_pad_ms=options.speech_pad_ms,
        max_speech_duration_s=options.max_window_s - 1.0,
    )
    found = get_speech_timestamps(audio, silero, sampling_rate=SAMPLE_RATE)
    return [Span(int(item["start"]), int(item["end"])) for item in found]


def merge_spans(spans: list[Span], max_window_s: float, max_gap_s: float) -> list[Span]:
    """Merge neighbouring spans while the window stays short enough and the gap small enough."""
    max_len = int(max_window_s * SAMPLE_RATE)
    max_gap = int(max_gap_s * SAMPLE_RATE)
    windows: list[Span] = []
    for span in spans:
        if windows:
            last = windows[-1]
            if span.start - last.end <= max_gap and span.end - last.start <= max_len:
                windows[-1] = Span(last.start, span.end)
                continue
        windows.append(span)
    return windows


def pad_windows(windows: list[Span], total: int, lead_s: float, tail_s: float, max_window_s: float) -> list[Span]:
    """Widen windows into the pauses around them without overlapping or exceeding the length cap."""
    lead, tail, cap = int(lead_s * SAMPLE_RATE), int(tail_s * SAMPLE_RATE), int(max_window_s * SAMPLE_RATE)
    padded: list[Span] = []
    for index, window in enumerate(windows):
        floor = padded[-1].end if padded else 0
        ceiling = windows[index + 1].start if index + 1 < len(windows) else total
        start = max(floor, window.start - lead, window.end - cap)
        end = min(ceiling, window.end + tail, start + cap)
        padded.append(Span(start, end))
    return padded


def fixed_windows(num_samples: int, max_window_s: float) -> list[Span]:
    """Consecutive windows covering everything, for when VAD is turned off."""
    step = int(max_window_s * SAMPLE_RATE)
    return [Span(start, min(start + step, num_samples)) for start in range(0, num_samples, step)]
