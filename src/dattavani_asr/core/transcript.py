"""The result of a transcription: segments, words, language, timings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float
    speaker: str | None = None  # with diarization


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
    language: str = ""  # of the window it came from ("" when older results did not record it)
    wrong_script: bool = False  # written largely in a script that is neither its language's nor Latin
    speaker: str | None = None  # with diarization (or one channel per speaker)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        """The inverse of the segment entries of `Transcript.to_dict()`."""
        values = {name: data[name] for name in _field_names(cls) if name in data}
        values["tokens"] = tuple(int(token) for token in data.get("tokens", ()))
        values["words"] = tuple(
            Word(**{name: word[name] for name in _field_names(Word) if name in word}) for word in data.get("words", ())
        )
        return cls(**values)


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
    warnings: tuple[str, ...] = ()  # what the user must know about this text (wrong script, no text)

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

    @property
    def speakers(self) -> list[str]:
        """The speakers, in order of first appearance."""
        return list(dict.fromkeys(s.speaker for s in self.segments if s.speaker))

    def without_words(self, keep: bool = False) -> Transcript:
        """The transcript without word timings (unless `keep`): they were needed inside, not asked for."""
        if keep:
            return self
        return replace(self, segments=tuple(replace(segment, words=()) for segment in self.segments))

    @property
    def speech_duration(self) -> float:
        return sum(s.end - s.start for s in self.segments)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        """Rebuild a transcript from `to_dict()` output (its derived `text` is ignored)."""
        values = {name: data[name] for name in _field_names(cls) if name in data}
        values["segments"] = tuple(Segment.from_dict(segment) for segment in data.get("segments", ()))
        timings = data.get("timings") or {}
        values["timings"] = Timings(**{name: timings[name] for name in _field_names(Timings) if name in timings})
        values["warnings"] = tuple(str(warning) for warning in data.get("warnings", ()))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["text"] = self.text
        data["segments"] = list(data["segments"])
        data["warnings"] = list(data["warnings"])
        for segment in data["segments"]:
            segment["tokens"] = list(segment["tokens"])
            # a word's speaker only with diarization: plain transcripts keep their word shape
            segment["words"] = [{k: v for k, v in w.items() if k != "speaker" or v} for w in segment["words"]]
        return data


def _field_names(cls: type) -> list[str]:
    return [item.name for item in fields(cls)]
