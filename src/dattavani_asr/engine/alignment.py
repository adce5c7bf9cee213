"""Word timestamps from Whisper's cross-attention alignment (CTranslate2 `align`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..core.transcript import Word
from ..core.types import AudioWindow, RawSegment
from .loader import LoadedModel
from .segments import ONSET_TOLERANCE

FRAMES_PER_SECOND = 50  # encoder frames: 16 kHz / hop 160 / stride 2
MEL_FRAMES_PER_SECOND = 100
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


TimedWord = tuple[str, float, float, float, int]  # word, start, end, probability, token count


def _word_times(result: Any, tokens: list[int], tokenizer: Any) -> list[TimedWord]:
    """Each word with its times relative to the window, probability and token count."""
    words, word_tokens = tokenizer.split_to_word_tokens([*tokens, tokenizer.eot])
    if len(word_tokens) <= 1:
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    pairs = np.array(result.alignments)
    if pairs.size == 0:
        return []
    jumps = np.pad(np.diff(pairs[:, 0]), (1, 0), constant_values=1).astype(bool)
    jump_times = pairs[:, 1][jumps] / FRAMES_PER_SECOND
    probabilities = result.text_token_probs
    timed = []
    for index, word in enumerate(words[:-1]):
        lo, hi = int(boundaries[index]), int(boundaries[index + 1])
        start = float(jump_times[min(lo, len(jump_times) - 1)])
        end = float(jump_times[min(hi, len(jump_times) - 1)])
        probability = float(np.mean(probabilities[lo:hi])) if hi > lo else 0.0
        timed.append((word, start, end, probability, hi - lo))
    return _merge_punctuation(timed)


def _merge_punctuation(timed: list[TimedWord]) -> list[TimedWord]:
    """Attach leading quotes/brackets to the next word and trailing punctuation to the previous."""
    merged: list[TimedWord] = []
    carry, carry_tokens = "", 0
    for word, start, end, prob, count in timed:
        if word.startswith(" ") and word.strip() and word.strip() in PREPEND_PUNCTUATION:
            carry, carry_tokens = carry + word, carry_tokens + count
            continue
        if merged and not merged[-1][0].endswith(" ") and word and word in APPEND_PUNCTUATION:
            last = merged[-1]
            merged[-1] = (last[0] + word, last[1], last[2], last[3], last[4] + count)
            continue
        merged.append((carry + word, start, end, prob, count + carry_tokens))
        carry, carry_tokens = "", 0
    return merged


def _longest_plausible_word(timed: list[TimedWord]) -> float:
    """openai/whisper's rule: twice the median word duration, itself capped at 0.7 s."""
    durations = [end - start for _, start, end, _, _ in timed if end > start]
    return 2 * min(0.7, float(np.median(durations))) if durations else 2 * 0.7


def _assign(segments: list[RawSegment], timed: list[TimedWord], window: AudioWindow) -> list[RawSegment]:
    """Give each segment its words (by token count), monotonic and inside the window.

    A segment's first word that DTW stretched back into the preceding pause is cut to a
    plausible length, so subtitles do not appear before the speaker starts.
    """
    out: list[RawSegment] = []
    cursor = consumed = 0
    previous_end = window.offset + max(0.0, window.speech_start - ONSET_TOLERANCE)
    longest = _longest_plausible_word(timed)
    segment_end_token = 0
    for segment in segments:
        taken: list[Word] = []
        segment_end_token += len(segment.tokens)
        while cursor < len(timed) and consumed < segment_end_token:
            word, start, end, prob, count = timed[cursor]
            if not taken and end - start > longest:
                start = end - longest
            begin = min(max(window.offset + start, previous_end), window.end)
            finish = min(max(window.offset + end, begin), window.end)
            taken.append(Word(round(begin, 3), round(finish, 3), word, round(prob, 4)))
            previous_end = finish
            consumed += count
            cursor += 1
        if taken:
            out.append(replace(segment, words=tuple(taken), start=taken[0].start, end=taken[-1].end))
        else:
            out.append(segment)
    return out


def align_text(
    model: LoadedModel, encoded: Any, windows: list[AudioWindow], segments: list[list[RawSegment]], tokenizer: Any
) -> list[Any]:
    """CTranslate2's alignment of every window's text (one batched call): token times and probabilities."""
    text_tokens = [[t for s in window_segments for t in s.tokens] for window_segments in segments]
    frames = [max(1, int(w.duration * MEL_FRAMES_PER_SECOND)) for w in windows]
    return list(model.whisper.align(encoded, tokenizer.sot_sequence, text_tokens, frames))


def add_words(window: AudioWindow, segments: list[RawSegment], aligned: Any, tokenizer: Any) -> list[RawSegment]:
    """The window's segments with their words timed from the alignment."""
    tokens = [t for s in segments for t in s.tokens]
    return _assign(segments, _word_times(aligned, tokens, tokenizer), window) if tokens else segments


def with_confidences(segments: list[RawSegment], aligned: Any, no_speech_prob: float) -> list[RawSegment]:
    """Each segment's confidence from its own text tokens: their geometric mean probability, discounted
    by the window's chance of no speech (the window-wide score would give every segment the same)."""
    probabilities = np.asarray(aligned.text_token_probs, dtype=np.float64)
    scored, first = [], 0
    for segment in segments:
        last = first + len(segment.tokens)
        mine = np.clip(probabilities[first:last], 1e-9, 1.0)
        mean = float(np.exp(np.mean(np.log(mine)))) if mine.size else None
        score = None if mean is None else round(mean * (1.0 - no_speech_prob), 4)
        scored.append(replace(segment, confidence=score) if score is not None else segment)
        first = last
    return scored
