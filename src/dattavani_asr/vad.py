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


def _widest_pause(group: list[Span], min_len: int) -> int:
    """Index to split `group` at: the widest pause after at least `min_len` of window."""
    best, best_gap = len(group), -1
    for index in range(1, len(group)):
        gap = group[index].start - group[index - 1].end
        if group[index - 1].end - group[0].start >= min_len and gap > best_gap:
            best, best_gap = index, gap
    return best


def merge_spans(spans: list[Span], max_window_s: float, max_gap_s: float, min_fill: float = 0.5) -> list[Span]:
    """Merge neighbouring spans into windows of at most `max_window_s`.

    A pause longer than `max_gap_s` always ends a window. When a window would grow too long it
    is cut at its widest pause past `min_fill` of the limit, not simply before the span that
    did not fit: Whisper drops an utterance cut off at a window's end, and the widest pause is
    the likeliest end of a sentence.
    """
    max_len, max_gap = int(max_window_s * SAMPLE_RATE), int(max_gap_s * SAMPLE_RATE)
    windows: list[Span] = []
    group: list[Span] = []
    for span in spans:
        if group and span.start - group[-1].end > max_gap:
            windows.append(Span(group[0].start, group[-1].end))
            group = []
        group.append(span)
        while group[-1].end - group[0].start > max_len and len(group) > 1:
            cut = _widest_pause(group[:-1], int(min_fill * max_len))
            windows.append(Span(group[0].start, group[cut - 1].end))
            group = group[cut:]
    if group:
        windows.append(Span(group[0].start, group[-1].end))
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
