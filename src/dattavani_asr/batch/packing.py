"""Pack speech windows from different short files into shared 30-s windows, and split results back.

Whisper's encoder always processes 30 s; a 6-s clip alone wastes 80 % of that pass. Windows are
joined with a second of silence between them and levelled to one loudness (otherwise Whisper
skips a quiet file next to a loud one); segments come back to the file whose part holds most of
their time, with timestamps mapped into that file's own timeline. Packs stop 3 s short of 30 s:
Whisper tends to drop the last words of a window when they end close to its end.

Packing must not cost accuracy: a part whose share of the packed result looks wrong (no words,
seconds of its speech without a word, a loop) is decoded again on its own (`decode_packs`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..audio.decode import SAMPLE_RATE
from ..audio.loudness import equalize_speech
from ..audio.vad import Span
from ..core.options import DecodingOptions
from ..core.transcript import Word
from ..core.types import AudioWindow, RawSegment, WindowResult
from ..engine import compression_ratio, is_silence, needs_fallback

log = logging.getLogger(__name__)

PACK_SECONDS = 27.0  # leave Whisper room at the window's end: it drops words that end close to 30 s
# With a trimmed encoder the context is the audio plus a margin; the encoder's attention makes
# a 30-s context cost ~2x per second of audio what a 15–20-s one does, so packs stay short.
TRIMMED_PACK_SECONDS = 12.5
GAP_SECONDS = 1.0
TAIL_PAD = 0.5  # windows end this long after the speech VAD heard (VadOptions.tail_pad_s)
MAX_STRETCH = 2.5  # seconds of a part's speech without a word boundary before it is decoded again alone
# Seconds of a part's speech (as VAD heard it, padded by 0.3 s) after its last word before it is decoded
# again alone: on short real clips a part's last word ended at most 0.48 s before, except where the packed
# alignment had moved the part's last word into the next file's share (0.56-0.89 s).
MAX_UNCOVERED_TAIL = 0.55


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


def pack_limit(trim_encoder: bool | None) -> float:
    """Longest packed window: near 30 s for the full encoder, short for a trimmed one.

    With a trimmed encoder (the policy of English-only models, `pipeline.run.trims_encoder`) short
    packs are the fastest configuration, with the same or better WER on English.
    """
    return TRIMMED_PACK_SECONDS if trim_encoder else PACK_SECONDS


def fits(
    windows: Sequence[AudioWindow], window: AudioWindow, limit: float = PACK_SECONDS, gap: float = GAP_SECONDS
) -> bool:
    """Whether `window` can join a pack holding `windows` (an empty pack takes anything)."""
    length = sum(w.duration for w in windows) + gap * len(windows) + window.duration
    return not windows or length <= limit


def plan_packs(windows: list[AudioWindow], limit: float = PACK_SECONDS, gap: float = GAP_SECONDS) -> list[list[int]]:
    """Group window indices, in order, so each group's audio plus gaps fits in `limit` seconds.

    In order rather than best fit: packs filled closer to the limit (first fit decreasing) saved
    a tenth of the packs but cost accuracy on the FLEURS clips (tiny.en and base).
    """
    groups: list[list[int]] = []
    for index, window in enumerate(windows):
        if groups and fits([windows[i] for i in groups[-1]], window, limit, gap):
            groups[-1].append(index)
        else:
            groups.append([index])
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


def _repeats(words: Sequence[str], times: int = 3, longest: int = 6) -> bool:
    """Some run of 1..`longest` words said `times` times in a row (a decoding loop)."""
    for size in range(1, longest + 1):
        for start in range(len(words) - size * times + 1):
            run = words[start : start + size]
            if all(words[start + k * size : start + (k + 1) * size] == run for k in range(1, times)):
                return True
    return False


def _widest_stretch(result: WindowResult) -> float:
    """The longest stretch of the part's speech without a word boundary: a pause before the first
    word, between words or after the last, or one word (the alignment stretches the last word it
    has over speech the decoder skipped)."""
    window = result.window
    words = [word for segment in result.segments for word in segment.words]
    edges = [window.offset + window.speech_start, *(t for w in words for t in (w.start, w.end)), window.end - TAIL_PAD]
    return max(later - earlier for earlier, later in itertools.pairwise(edges))


def _uncovered_tail(result: WindowResult, words: Sequence[Word]) -> float:
    """Seconds of the part's speech after its last word (0 when VAD gave no end)."""
    window = result.window
    return 0.0 if window.speech_end is None else window.offset + window.speech_end - words[-1].end


def seam_doubts(pack: Pack, result: WindowResult) -> set[int]:
    """Positions of the parts on either side of a seam where the packed alignment put a word in the silence.

    The gap between two parts is digital silence, so a word timed inside it (or starting in its first
    half), or stretched over all of it, may belong to either file: its timing carries no evidence. Such
    words moved from one file to its neighbour (a file's last word opening the next file's transcript,
    the next file's first word closing this one), so both parts are decoded again on their own. A word
    that starts in the second half of the gap and runs into the next part is that part's first word,
    timed early (common, and always right on real clips).
    """
    words = [word for segment in result.segments for word in segment.words]
    doubtful: set[int] = set()
    for position, (before, after) in enumerate(itertools.pairwise(pack.parts)):
        middle = (before.end + after.start) / 2
        in_gap = (before.end <= w.start and (w.start < middle or w.end <= after.start) for w in words)
        across = (w.start < before.end and w.end > after.start for w in words)
        if any(in_gap) or any(across):
            doubtful |= {position, position + 1}
    return doubtful


def part_doubt(result: WindowResult, options: DecodingOptions) -> str | None:
    """Why one part's share of a packed result is not to be trusted, or None.

    Windows hold speech from VAD onset to 0.5 s after its end, with pauses of at most 2 s inside,
    so a part with no words, or with a long stretch without a word boundary (a pause, or one word
    stretched by the alignment over skipped speech), or with speech after its last word, lost words
    at a pack boundary or where the packed decoding stopped early; a repetitive text is a decoding loop.
    """
    words = [word for segment in result.segments for word in segment.words]
    if not words:
        return "empty"
    if _widest_stretch(result) > MAX_STRETCH or _uncovered_tail(result, words) > MAX_UNCOVERED_TAIL:
        return "uncovered"
    text = "".join(word.word for word in words)
    if compression_ratio(text) > options.compression_ratio_threshold or _repeats(text.lower().split()):
        return "repetition"
    return None


def decode_packs(engine: Any, packs: list[Pack], options: DecodingOptions, language: str | None) -> list[list[Any]]:
    """Decode packs together and split them back: one result per part, in each part's own timeline.

    Every pack is decoded in one batch at the first temperature, with word timestamps (segments of a
    shared pack are split between its parts by word). A pack of one window is that window, decoded as
    it would be alone: the same first decode, and Whisper's temperature fallback when that decode
    needs it (decoded again alone with the full options). A part of a shared pack whose share looks
    wrong (`part_doubt`), the parts beside a seam where a word was timed in the silence
    (`seam_doubts`), and every part of a pack whose text is unlikely (Whisper's log-probability
    fallback rule) are decoded again on their own with the full options, as without packing.
    """
    once = replace(options, word_timestamps=True, temperatures=options.temperatures[:1])
    windows = [pack.window if len(pack.parts) > 1 else pack.parts[0].window for pack in packs]
    results: list[list[Any]] = []
    alone: list[tuple[int, int]] = []
    for row, (pack, result) in enumerate(zip(packs, engine.transcribe_batch(windows, once, language)[0])):
        if len(pack.parts) == 1:
            alone += [(row, 0)] if len(options.temperatures) > 1 and needs_fallback(result.decoded, options) else []
            results.append([result])
            continue
        parts = unpack(pack, result)
        alone += [(row, col) for col in _doubtful(pack, result, parts, options)]
        results.append(parts)
    if alone:
        log.debug("decoding %d of %d windows on their own", len(alone), sum(len(pack.parts) for pack in packs))
        again = engine.transcribe_batch([packs[row].parts[col].window for row, col in alone], options, language)[0]
        for (row, col), result in zip(alone, again):
            results[row][col] = result
    return results if options.word_timestamps else [[_without_words(r) for r in row] for row in results]


def _doubtful(pack: Pack, result: WindowResult, parts: list[WindowResult], options: DecodingOptions) -> list[int]:
    """Positions of the parts of a shared pack to decode again alone."""
    unlikely = result.decoded.avg_logprob < options.log_prob_threshold and not is_silence(result.decoded, options)
    seams = seam_doubts(pack, result)
    return [col for col, part in enumerate(parts) if unlikely or col in seams or part_doubt(part, options)]


def _without_words(result: WindowResult) -> WindowResult:
    return replace(result, segments=tuple(replace(segment, words=()) for segment in result.segments))
