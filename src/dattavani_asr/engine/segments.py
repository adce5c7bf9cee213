"""Turn a window's generated tokens into timed segments, and cut repetition loops."""

from __future__ import annotations

import difflib
from typing import Any

from ..core.types import AudioWindow, RawSegment
from .decoding import TIME_PRECISION

ONSET_TOLERANCE = 0.5  # Silero can hear an onset late, so only clearly-early starts are moved
MIN_LOOP_REPEATS = 4
MIN_LOOP_TOKENS = 12
ALWAYS_LOOP_REPEATS = 8


def cut_repetition_loops(tokens: list[int], max_ngram: int = 24) -> list[int]:
    """Collapse an n-gram repeated back to back into a single copy.

    A decoding loop ("thank you. thank you. thank you. ...") is cut when a phrase repeats at
    least 4 times and covers at least 12 tokens, or repeats 8 times whatever its length;
    shorter natural repetitions ("no, no, no") are left alone.
    """
    result = list(tokens)
    for size in range(1, max_ngram + 1):
        index = 0
        while index + size * 2 <= len(result):
            phrase = result[index : index + size]
            repeats = 1
            while result[index + repeats * size : index + (repeats + 1) * size] == phrase:
                repeats += 1
            is_loop = repeats >= ALWAYS_LOOP_REPEATS or (
                repeats >= MIN_LOOP_REPEATS and repeats * size >= MIN_LOOP_TOKENS
            )
            if is_loop:
                del result[index + size : index + repeats * size]
            index += 1
    return result


def _timed_runs(tokens: list[int], timestamp_begin: int) -> list[tuple[float | None, float | None, list[int]]]:
    """Split on timestamp tokens: each run of text tokens with its opening/closing time if any."""
    runs: list[tuple[float | None, float | None, list[int]]] = []
    start: float | None = None
    text: list[int] = []
    for token in tokens:
        if token < timestamp_begin:
            text.append(token)
            continue
        time = (token - timestamp_begin) * TIME_PRECISION
        if text:
            runs.append((start, time, text))
            text, start = [], None
        else:
            start = time
    if text:
        runs.append((start, None, text))
    return runs


SENTENCE_ENDS = (".", "?", "!", "\u0964", "\u0965")  # Latin, and the Devanagari danda / double danda
MIN_SENTENCE_TOKENS = 3


def sentences(tokens: list[int], tokenizer: Any) -> list[list[int]]:
    """Text tokens cut after each sentence end: the segments of a decode without timestamps (their
    times then come from the words' alignment)."""
    pieces: list[list[int]] = [[]]
    for token in tokens:
        pieces[-1].append(token)
        ended = tokenizer.decode(pieces[-1]).rstrip().endswith(SENTENCE_ENDS)
        if ended and len(pieces[-1]) >= MIN_SENTENCE_TOKENS:
            pieces.append([])
    return [piece for piece in pieces if piece]


def _runs(content: list[int], tokenizer: Any) -> list[tuple[float | None, float | None, list[int]]]:
    runs = _timed_runs(content, tokenizer.timestamp_begin)
    if len(runs) == 1 and runs[0][0] is None and runs[0][1] is None:  # decoded without timestamps
        return [(None, None, piece) for piece in sentences(runs[0][2], tokenizer)]
    return runs


def split_segments(tokens: tuple[int, ...], window: AudioWindow, tokenizer: Any) -> list[RawSegment]:
    """Timed segments in source time; text after the last timestamp runs to the window's end."""
    content = [t for t in tokens if t != tokenizer.eot]
    segments: list[RawSegment] = []
    previous_end = max(0.0, window.speech_start - ONSET_TOLERANCE)
    for start, end, run_tokens in _runs(content, tokenizer):
        text_tokens = cut_repetition_loops(run_tokens)
        text = tokenizer.decode(text_tokens)
        if not any(character.isalnum() for character in text):  # blank, or only punctuation ('. . .')
            continue
        begin = min(max(start if start is not None else previous_end, previous_end), window.duration)
        finish = min(end if end is not None else window.duration, window.duration)
        finish = max(finish, begin)
        segments.append(
            RawSegment(
                start=round(window.offset + begin, 3),
                end=round(window.offset + finish, 3),
                tokens=tuple(text_tokens),
                text=text,
            )
        )
        previous_end = finish
    return drop_echoes(segments)


SECONDS_PER_WORD_FLOOR = 0.1


def drop_echoes(segments: list[RawSegment]) -> list[RawSegment]:
    """Drop a segment that repeats earlier ones in far too little time to have been spoken.

    Near the end of a short (trimmed) encoder context Whisper may emit the previous sentence (or
    two) again, squeezed into a few hundredths of a second; a repetition really spoken keeps its length.
    """
    kept: list[RawSegment] = []
    heard: list[str] = []
    for segment in segments:
        words = normal_words(segment.text)
        too_fast = segment.end - segment.start < SECONDS_PER_WORD_FLOOR * len(words)
        if too_fast and echoes(heard, words):
            continue
        kept.append(segment)
        heard.extend(words)
    return kept


ECHO_SIMILARITY = 0.8


def normal_words(text: str) -> list[str]:
    return ["".join(c for c in word.lower() if c.isalnum()) for word in text.split()]


def echoes(heard: list[str], words: list[str]) -> bool:
    """Whether nearly all of `words` repeat `heard` in order (the echo of "To the north and within
    easy reach..." may start "The north and within easy reach...")."""
    if not heard or not words:
        return False
    blocks = difflib.SequenceMatcher(None, heard, words, autojunk=False).get_matching_blocks()
    return sum(block.size for block in blocks) >= ECHO_SIMILARITY * len(words)
