"""The unit of work the engine decodes: one stretch of audio of at most 30 s."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .transcript import Word

SAMPLE_RATE = 16000  # Hz: what Whisper hears, and every window holds


@dataclass(frozen=True)
class AudioWindow:
    """Audio to decode in one pass, where it sits in the source, and where VAD heard speech begin.

    `speech_start` is seconds from the window start: windows reach back into the preceding pause,
    and Whisper tends to time the first words from the very start of such a window.
    """

    offset: float
    audio: np.ndarray
    speech_start: float = 0.0
    speech_end: float | None = None  # seconds from the window start where VAD heard speech end (None: unknown)

    @property
    def duration(self) -> float:
        return float(self.audio.shape[0] / SAMPLE_RATE)

    @property
    def end(self) -> float:
        return self.offset + self.duration

    def released(self) -> AudioWindow:
        """The same window without its samples (a zero-stride view keeps its length): a finished
        window's result is kept until the transcript is built, and its audio must not be, or memory
        grows with the recording (30 s of audio is ~2 MB)."""
        silent = np.broadcast_to(np.zeros(1, dtype=np.float32), self.audio.shape)
        return replace(self, audio=silent)


@dataclass(frozen=True)
class Decoded:
    """One decoding of one window: tokens and the scores used for fallback decisions."""

    tokens: tuple[int, ...]
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float


@dataclass(frozen=True)
class RawSegment:
    """A timed run of text tokens inside a window, before ids are assigned."""

    start: float
    end: float
    tokens: tuple[int, ...]
    text: str
    words: tuple[Word, ...] = ()
    confidence: float | None = None  # from its own tokens' probabilities (None: the window's)


@dataclass(frozen=True)
class WindowResult:
    """The engine's answer for one window."""

    window: AudioWindow
    decoded: Decoded
    segments: tuple[RawSegment, ...]
    language: str
    model: str
    confidence: float

    def released(self) -> WindowResult:
        """This result without its window's audio (see `AudioWindow.released`)."""
        return replace(self, window=self.window.released())
