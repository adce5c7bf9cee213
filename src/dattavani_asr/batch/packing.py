"""Pack speech windows from different short files into shared 30-s windows, and split results back.

Whisper's encoder always processes 30 s; a 6-s clip alone wastes 80 % of that pass. Windows are
joined with a second of silence between them and levelled to one loudness (otherwise Whisper
skips a quiet file next to a loud one); segments come back to the file whose part holds most of
their time, with timestamps mapped into that file's own timeline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..audio import SAMPLE_RATE
from ..engine.windows import AudioWindow, RawSegment, WindowResult
from ..loudness import equalize_speech
from ..transcript import Word
from ..vad import Span

PACK_SECONDS = 29.0
GAP_SECONDS = 1.0


@dataclass(frozen=True)
class Part:
    """One original window inside a packed window: where it starts there, in seconds."""

    index: int
    window: AudioWindow
    start: float

    @property
    def end(self) -> float:
        return self.start + self.window.duration


@dataclass(frozen=True)
class Pack:
    window: AudioWindow
    parts: tuple[Part, ...]


def plan_packs(windows: list[AudioWindow], limit: float = PACK_SECONDS, gap: float = GAP_SECONDS) -> list[list[int]]:
    """Group window indices, in order, so each group's audio plus gaps fits in `limit` seconds."""
    groups: list[list[int]] = []
    length = 0.0
    for index, window in enumerate(windows):
        needed = window.duration + (gap if groups and groups[-1] else 0.0)
        if groups and length + needed <= limit:
            groups[-1].append(index)
            length += needed
        else:
            groups.append([index])
            length = window.duration
    return groups


def build_pack(windows: list[AudioWindow], indices: list[int], gap: float = GAP_SECONDS) -> Pack:
    silence = np.zeros(int(gap * SAMPLE_RATE), dtype=np.float32)
    pieces: list[np.ndarray] = []
    parts: list[Part] = []
    position = 0
    for index in indices:
        if pieces:
            pieces.append(silence)
            position += silence.shape[0]
        audio = windows[index].audio
        parts.append(Part(index, windows[index], position / SAMPLE_RATE))
        pieces.append(audio)
        position += audio.shape[0]
    audio = np.concatenate(pieces)
    spans = [Span(round(p.start * SAMPLE_RATE), round(p.end * SAMPLE_RATE)) for p in parts]
    speech_start = parts[0].window.speech_start
    return Pack(AudioWindow(0.0, equalize_speech(audio, spans), speech_start=speech_start), tuple(parts))


def _owner(parts: tuple[Part, ...], start: float, end: float) -> Part:
    def overlap(part: Part) -> float:
        return min(end, part.end) - max(start, part.start)

    return max(parts, key=lambda part: (overlap(part), -abs(part.start - start)))


def _to_part(part: Part, seconds: float) -> float:
    local = min(max(seconds - part.start, 0.0), part.window.duration)
    return round(part.window.offset + local, 3)


def _move(segment: RawSegment, part: Part) -> RawSegment:
    words = tuple(Word(_to_part(part, w.start), _to_part(part, w.end), w.word, w.probability) for w in segment.words)
    return replace(segment, start=_to_part(part, segment.start), end=_to_part(part, segment.end), words=words)


def _split_by_words(segment: RawSegment, parts: tuple[Part, ...]) -> list[tuple[Part, RawSegment]]:
    """A segment that runs across parts becomes one segment per part, cut between words."""
    groups: dict[int, list[Word]] = {}
    owners: dict[int, Part] = {}
    for word in segment.words:
        part = _owner(parts, word.start, max(word.end, word.start + 1e-3))
        groups.setdefault(part.index, []).append(word)
        owners[part.index] = part
    pieces = []
    for index, words in groups.items():
        text = "".join(word.word for word in words)
        piece = RawSegment(words[0].start, words[-1].end, (), text, tuple(words))
        pieces.append((owners[index], piece))
    return pieces


def unpack(pack: Pack, result: WindowResult) -> list[WindowResult]:
    """One result per part, holding the segments that belong to it, in its own timeline."""
    owned: dict[int, list[RawSegment]] = {part.index: [] for part in pack.parts}
    for segment in result.segments:
        pieces = _split_by_words(segment, pack.parts) if segment.words else []
        if not pieces:
            pieces = [(_owner(pack.parts, segment.start, segment.end), segment)]
        for part, piece in pieces:
            owned[part.index].append(_move(piece, part))
    return [replace(result, window=part.window, segments=tuple(owned[part.index])) for part in pack.parts]
