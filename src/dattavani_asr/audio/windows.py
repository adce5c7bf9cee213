"""Stream decoded audio blocks into speech windows, holding at most one block plus one window."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..core.options import VadOptions
from ..core.types import AudioWindow
from .decode import SAMPLE_RATE
from .loudness import equalize_speech
from .vad import Span, fixed_windows, merge_spans, pad_windows, speech_spans

TAIL_SECONDS = 1.0


@dataclass
class AudioStats:
    """Running totals over every decoded sample."""

    samples: int = 0
    peak: float = 0.0

    def add(self, block: np.ndarray) -> None:
        self.samples += block.shape[0]
        if block.size:
            self.peak = max(self.peak, float(np.max(np.abs(block))))

    @property
    def duration(self) -> float:
        return self.samples / SAMPLE_RATE


def _with_last(blocks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, bool]]:
    iterator = iter(blocks)
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None)
        yield current, following is None
        current = following


@dataclass(frozen=True)
class PlannedWindow:
    """A window of the buffer and the speech spans inside it (buffer sample positions)."""

    span: Span
    speech: tuple[Span, ...]

    @property
    def onset(self) -> int:
        return self.speech[0].start if self.speech else self.span.start

    @property
    def onset_seconds(self) -> float:
        return (self.onset - self.span.start) / SAMPLE_RATE

    @property
    def end_seconds(self) -> float | None:
        """Where the last speech inside the window ends, from the window start (None without VAD)."""
        return (self.speech[-1].end - self.span.start) / SAMPLE_RATE if self.speech else None

    def audio(self, buffer: np.ndarray, equalize: bool) -> np.ndarray:
        audio = np.array(buffer[self.span.start : self.span.end], dtype=np.float32)
        if not equalize:
            return audio
        shift = self.span.start
        return equalize_speech(audio, [Span(s.start - shift, s.end - shift) for s in self.speech])


def plan_windows(audio: np.ndarray, vad: VadOptions | None, max_window_s: float = 30.0) -> list[PlannedWindow]:
    """Padded merged VAD spans with the speech inside each, or fixed 30-s windows without VAD."""
    if vad is None:
        return [PlannedWindow(span, ()) for span in fixed_windows(audio.shape[0], max_window_s)]
    spans = speech_spans(audio, vad)
    merged = merge_spans(spans, vad.max_window_s, vad.max_gap_s)
    padded = pad_windows(merged, audio.shape[0], vad.lead_pad_s, vad.tail_pad_s, vad.max_window_s)
    return [
        PlannedWindow(window, tuple(s for s in spans if speech.start <= s.start < speech.end))
        for window, speech in zip(padded, merged)
    ]


def speech_windows(
    blocks: Iterable[np.ndarray],
    vad: VadOptions | None,
    *,
    offset: float = 0.0,
    stats: AudioStats | None = None,
) -> Iterator[AudioWindow]:
    """Windows in time order. The last window of a block may still grow, so it is carried over."""
    stats = stats if stats is not None else AudioStats()
    buffer = np.zeros(0, dtype=np.float32)
    buffer_start = 0
    for block, is_last in _with_last(blocks):
        stats.add(block)
        buffer = np.concatenate([buffer, block]) if buffer.size else block
        spans = plan_windows(buffer, vad)
        ready = spans if is_last else spans[:-1]
        for window in ready:
            start = offset + (buffer_start + window.span.start) / SAMPLE_RATE
            audio = window.audio(buffer, equalize=vad is not None and vad.equalize_speech)
            yield AudioWindow(start, audio, speech_start=window.onset_seconds, speech_end=window.end_seconds)
        if is_last:
            return
        cut = spans[-1].span.start if spans else max(0, buffer.shape[0] - int(TAIL_SECONDS * SAMPLE_RATE))
        buffer = buffer[cut:]
        buffer_start += cut
