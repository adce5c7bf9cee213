"""Cut audio into speech windows Whisper can decode in one pass (at most 30 s each).

Silero VAD (the ONNX model bundled with faster-whisper, no download) finds speech; nearby
speech spans are merged into contiguous windows, keeping the short pauses between them so
timestamps inside a window stay true to the original audio.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.options import VadOptions
from .decode import SAMPLE_RATE


@dataclass(frozen=True)
class Span:
    """A half-open sample range [start, end)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def speech_spans(audio: np.ndarray, options: VadOptions) -> list[Span]:
    """Sample ranges that Silero VAD marks as speech (each at most `max_window_s` - 1 s long).

    Scored as a live stream is (`StreamingVad`): Silero's state is reset after 0.3 s of quiet, so a
    quiet speaker right after a loud one is heard (one pass with the state carried missed 10 % of
    such speech on the shared clips), and in chunks of `VAD_CHUNK_SECONDS`, so the scoring needs the
    same small memory whatever the length of `audio` (one pass over a 60-s block grew the process by
    ~150 MB of freed-but-kept heap).
    """
    if audio.size == 0:
        return []
    vad = StreamingVad(options, reset_after=OFFLINE_RESET_SECONDS)
    chunk = round(VAD_CHUNK_SECONDS * SAMPLE_RATE)
    for start in range(0, audio.shape[0], chunk):
        vad.feed(audio[start : start + chunk])
    return split_long(vad.spans(), vad.probabilities, round((options.max_window_s - 1.0) * SAMPLE_RATE))


def split_long(spans: list[Span], probabilities: np.ndarray, longest: int) -> list[Span]:
    """Spans longer than `longest` samples cut where Silero was least sure of speech (in their
    second half, so no piece is needlessly short), until every piece fits."""
    out: list[Span] = []
    pending = list(spans)
    while pending:
        span = pending.pop(0)
        if span.length <= longest:
            out.append(span)
            continue
        first, last = (span.start + span.length // 2) // SILERO_FRAME, (span.start + longest) // SILERO_FRAME
        frames = probabilities[first:last]
        cut = (first + int(np.argmin(frames))) * SILERO_FRAME if frames.size else span.start + longest
        pending[:0] = [Span(span.start, cut), Span(cut, span.end)]
    return out


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


SILERO_FRAME = 512  # samples Silero scores at once (32 ms)
SILERO_CONTEXT = 64  # samples of the previous frame it sees with each frame
OFFLINE_RESET_SECONDS = 0.3
RESET_SCORE_FRAMES = 32  # about a second
VAD_CHUNK_SECONDS = 10.0
QUIET_WARMUP_FRAMES = 30  # silence that sets the state a live stream starts and resets to


def end_threshold(options: VadOptions) -> float:
    """Probability below which speech counts as ended (faster-whisper's default neg_threshold)."""
    return max(options.threshold - 0.15, 0.01)


def spans_from_probabilities(probabilities: np.ndarray, options: VadOptions) -> list[Span]:
    """Speech spans from Silero's frame probabilities, by the rules of faster-whisper's
    `get_speech_timestamps` (without its split of over-long speech): speech starts at a frame
    above `threshold`, ends where it fell below `threshold - 0.15` for `min_silence_ms`, is
    kept if longer than `min_speech_ms`, and is padded by `speech_pad_ms` each side."""
    negative = end_threshold(options)
    min_silence = SAMPLE_RATE * options.min_silence_ms / 1000
    min_speech = SAMPLE_RATE * options.min_speech_ms / 1000
    total = probabilities.shape[0] * SILERO_FRAME
    found: list[list[int]] = []
    start: int | None = None
    quiet_from = 0
    for index, probability in enumerate(probabilities):
        position = index * SILERO_FRAME
        if probability >= options.threshold:
            quiet_from = 0
            if start is None:
                start = position
                continue
        if start is None or probability >= negative:
            continue
        quiet_from = quiet_from or position
        if position - quiet_from >= min_silence:
            if quiet_from - start > min_speech:
                found.append([start, quiet_from])
            start, quiet_from = None, 0
    if start is not None and total - start > min_speech:
        found.append([start, total])
    return _padded(found, SAMPLE_RATE * options.speech_pad_ms // 1000, total)


def _padded(found: list[list[int]], pad: int, total: int) -> list[Span]:
    """Widen spans by `pad`, splitting a shorter pause between two spans in its middle."""
    for index, span in enumerate(found):
        if index == 0:
            span[0] = max(0, span[0] - pad)
        if index == len(found) - 1:
            span[1] = min(total, span[1] + pad)
            continue
        following = found[index + 1]
        silence = following[0] - span[1]
        widen = silence // 2 if silence < 2 * pad else pad
        span[1] = min(total, span[1] + widen)
        following[0] = max(0, following[0] - widen)
    return [Span(start, end) for start, end in found]


@functools.cache
def _silero_session() -> Any:
    from faster_whisper.vad import get_vad_model

    return get_vad_model().session


def _run_silero(inputs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of frames (each with its context) and the state after them."""
    probabilities, h, c = _silero_session().run(None, {"input": inputs, "h": state[0], "c": state[1]})
    return np.asarray(probabilities, np.float32).reshape(-1), np.stack([h, c])


@functools.cache
def _silence_state() -> np.ndarray:
    zeros = np.zeros((QUIET_WARMUP_FRAMES, SILERO_FRAME + SILERO_CONTEXT), np.float32)
    return _run_silero(zeros, np.zeros((2, 1, 1, 128), np.float32))[1]


def _quiet_state() -> np.ndarray:
    return _silence_state().copy()


class StreamingVad:
    """Silero VAD over a growing stream.

    Each 32-ms frame is scored once, with the model's recurrent state carried from frame to
    frame, so a live session pays for its new audio only (re-scoring a 10-s buffer every 0.1 s
    took ~20 ms here). After a loud sentence that carried state keeps Silero deaf to quieter
    speech for seconds (7 s for FLEURS en 002 after JFK), so after `reset_after` seconds of quiet
    (and at the start) the state is set to Silero's state after a second of silence. On the
    English clips of ../shared/audio joined by 0.4-s pauses that misses 0.5 % of the speech
    frames of each clip's own VAD, against 10 % with the state carried and 2.6 % with a zero
    state; onsets are heard at most 0.04 s late (2.6 s and 0.3 s). With `reset_after=None` the
    probabilities are those of one pass over the whole stream (faster-whisper's offline VAD).
    Positions are absolute samples since the start of the stream.
    """

    def __init__(self, options: VadOptions, reset_after: float | None = 0.3) -> None:
        self.options = options
        self.negative = end_threshold(options)
        self._reset_frames = None if reset_after is None else max(1, round(reset_after * SAMPLE_RATE / SILERO_FRAME))
        self._state = np.zeros((2, 1, 1, 128), np.float32) if reset_after is None else _quiet_state()
        self._previous = np.zeros(SILERO_CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)
        self._quiet_run = 0
        self.probabilities = np.zeros(0, np.float32)
        self.first_frame = 0

    @property
    def scored_until(self) -> int:
        return (self.first_frame + self.probabilities.shape[0]) * SILERO_FRAME

    def feed(self, audio: np.ndarray) -> None:
        data = np.concatenate([self._pending, audio.astype(np.float32, copy=False)])
        usable = data.shape[0] - data.shape[0] % SILERO_FRAME
        self._pending = data[usable:]
        frames = data[:usable].reshape(-1, SILERO_FRAME)
        while frames.shape[0]:
            # with resets, frames after a reset are scored again: score a second at a time to waste little
            scored = self._score(frames if self._reset_frames is None else frames[:RESET_SCORE_FRAMES])
            reset = self._reset_point(scored)
            if reset is not None:
                scored = scored[:reset]
                self._state = _quiet_state()
            self._previous = frames[scored.shape[0] - 1, -SILERO_CONTEXT:].copy()
            self.probabilities = np.concatenate([self.probabilities, scored])
            frames = frames[scored.shape[0] :]

    def _score(self, frames: np.ndarray) -> np.ndarray:
        contexts = np.concatenate([self._previous[None, :], frames[:-1, -SILERO_CONTEXT:]])
        probabilities, self._state = _run_silero(np.concatenate([contexts, frames], axis=1), self._state)
        return probabilities

    def _reset_point(self, scored: np.ndarray) -> int | None:
        """Frames to keep before the state is reset (a quiet run reached its length), if any."""
        for index, probability in enumerate(scored):
            self._quiet_run = self._quiet_run + 1 if probability < self.negative else 0
            if self._reset_frames is not None and self._quiet_run >= self._reset_frames:
                self._quiet_run = 0
                return index + 1
        return None

    def forget_before(self, sample: int) -> None:
        """Drop the scores of frames that end before `sample`."""
        drop = min(self.probabilities.shape[0], max(0, sample // SILERO_FRAME - self.first_frame))
        self.probabilities = self.probabilities[drop:]
        self.first_frame += drop

    def spans(self, since: int = 0) -> list[Span]:
        """Speech spans among the frames kept from the one holding `since` on."""
        skip = min(self.probabilities.shape[0], max(0, since // SILERO_FRAME - self.first_frame))
        offset = (self.first_frame + skip) * SILERO_FRAME
        found = spans_from_probabilities(self.probabilities[skip:], self.options)
        return [Span(span.start + offset, span.end + offset) for span in found]

    def fading(self) -> bool:
        """Whether the newest frame scored below the start-of-speech threshold (speech may be ending)."""
        return bool(self.probabilities.size) and float(self.probabilities[-1]) < self.options.threshold

    def quiet_seconds(self) -> float:
        """How long the newest frames have been below the end-of-speech threshold."""
        loud = np.flatnonzero(self.probabilities >= self.negative)
        quiet_frames = self.probabilities.shape[0] - (loud[-1] + 1 if loud.size else 0)
        return quiet_frames * SILERO_FRAME / SAMPLE_RATE
