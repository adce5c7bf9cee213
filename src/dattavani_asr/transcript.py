"""The result of a transcription: segments, words, language, timings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    confidence: float
    tokens: tuple[int, ...] = ()
    words: tuple[Word, ...] = ()
    model: str = ""


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds of one transcription: audio (decode + VAD), inference, and total."""

    audio: float = 0.0
    inference: float = 0.0
    total: float = 0.0


@dataclass(frozen=True)
class Transcript:
    segments: tuple[Segment, ...]
    language: str
    language_probability: float
    duration: float
    model: str
    task: str = "transcribe"
    source: str = ""
    timings: Timings = field(default_factory=Timings)

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

    @property
    def speech_duration(self) -> float:
        return sum(s.end - s.start for s in self.segments)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["text"] = self.text
        data["segments"] = list(data["segments"])
        for segment in data["segments"]:
            segment["tokens"] = list(segment["tokens"])
            segment["words"] = list(segment["words"])
        return data
