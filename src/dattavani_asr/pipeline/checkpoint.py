"""Finished windows as JSON, so a long recording interrupted at any moment resumes after its last one.

A batch run or a job stores each window's result as it is finished; after a kill, the recording is
decoded again from the end of the last stored window only, and the stored results come first in its
transcript (`resume_point`). The audio is not stored: a result keeps its window's place and length.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..audio.windows import AudioStats
from ..core.transcript import Word
from ..core.types import SAMPLE_RATE, AudioWindow, Decoded, RawSegment, WindowResult


def dump_result(result: WindowResult) -> dict[str, Any]:
    """A finished window's result as JSON-ready data."""
    window, decoded = result.window, result.decoded
    return {
        "window": [window.offset, window.audio.shape[0], window.speech_start, window.speech_end],
        "decoded": [
            list(decoded.tokens),
            decoded.text,
            decoded.avg_logprob,
            decoded.no_speech_prob,
            decoded.compression_ratio,
            decoded.temperature,
        ],
        "segments": [_dump_segment(segment) for segment in result.segments],
        "language": result.language,
        "model": result.model,
        "confidence": result.confidence,
    }


def _dump_segment(segment: RawSegment) -> list[Any]:
    words = [[w.start, w.end, w.word, w.probability] for w in segment.words]
    return [segment.start, segment.end, list(segment.tokens), segment.text, words, segment.confidence]


def load_result(data: dict[str, Any]) -> WindowResult:
    """The result `dump_result` stored (its window without audio, of the same length)."""
    offset, samples, speech_start, speech_end = data["window"]
    silent = np.broadcast_to(np.zeros(1, dtype=np.float32), (int(samples),))
    window = AudioWindow(float(offset), silent, float(speech_start), speech_end)
    tokens, text, avg_logprob, no_speech_prob, ratio, temperature = data["decoded"]
    decoded = Decoded(tuple(tokens), text, avg_logprob, no_speech_prob, ratio, temperature)
    segments = tuple(_load_segment(item) for item in data["segments"])
    return WindowResult(window, decoded, segments, data["language"], data["model"], data["confidence"])


def _load_segment(item: list[Any]) -> RawSegment:
    start, end, tokens, text, words, confidence = item
    timed = tuple(Word(w[0], w[1], w[2], w[3]) for w in words)
    return RawSegment(start, end, tuple(tokens), text, timed, confidence)


def resume_point(results: Sequence[WindowResult]) -> float | None:
    """Where decoding goes on after stored results: the end of the last window (None: from the start)."""
    return max(result.window.end for result in results) if results else None


CHECKPOINT_AFTER_SECONDS = 60.0  # shorter recordings are simply decoded again
WINDOWS_SCHEMA = """
CREATE TABLE IF NOT EXISTS finished_windows (
    recording TEXT NOT NULL,
    seq INTEGER NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (recording, seq)
);
"""


@dataclass(frozen=True)
class Resumed:
    """What an interrupted recording had finished: its windows, in order, and the language they settled."""

    results: list[WindowResult]
    language: str | None
    language_probability: float

    @property
    def start(self) -> float | None:
        return resume_point(self.results)

    def stats(self, origin: float) -> AudioStats:
        """Running audio totals as they stood at the resume point (recordings read from `origin` seconds).

        Windows exist only where speech was heard, so audio before the point was not silent."""
        start = self.start
        if start is None:
            return AudioStats()
        return AudioStats(samples=round((start - origin) * SAMPLE_RATE), peak=1.0)


class WindowLog:
    """Finished windows of recordings, in a table of a run's own SQLite database (batch state, job store)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock | threading.RLock) -> None:
        self._db = db
        self._lock = lock
        with lock:
            db.executescript(WINDOWS_SCHEMA)

    def load(self, recording: str) -> Resumed:
        with self._lock:
            rows = self._db.execute(
                "SELECT result FROM finished_windows WHERE recording = ? ORDER BY seq", (recording,)
            ).fetchall()
        data = [json.loads(row[0]) for row in rows]
        if not data:
            return Resumed([], None, 1.0)
        return Resumed([load_result(item) for item in data], data[0]["language"], data[0].get("probability", 1.0))

    def save(self, recording: str, first_seq: int, results: Sequence[WindowResult], probability: float) -> None:
        rows = [
            (recording, first_seq + i, json.dumps(dump_result(r) | {"probability": probability}))
            for i, r in enumerate(results)
        ]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO finished_windows VALUES (?, ?, ?)", rows)

    def drop(self, recording: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM finished_windows WHERE recording = ?", (recording,))

    def drop_under(self, prefix: str) -> None:
        """Forget every recording whose name starts with `prefix`."""
        with self._lock:
            self._db.execute("DELETE FROM finished_windows WHERE substr(recording, 1, ?) = ?", (len(prefix), prefix))

    def recordings(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT recording FROM finished_windows").fetchall()
        return [row[0] for row in rows]


class Checkpointer:
    """One recording's finished windows: those stored by an interrupted run (`resumed`), and new ones
    stored as they come once the recording has run past CHECKPOINT_AFTER_SECONDS (short recordings cost
    nothing); the first ones wait in memory until then."""

    def __init__(self, log: WindowLog, recording: str) -> None:
        self.log = log
        self.recording = recording
        self.resumed = log.load(recording)
        self.stored = len(self.resumed.results)
        self.pending: list[WindowResult] = []

    def add(self, result: WindowResult, probability: float) -> None:
        self.pending.append(result)
        if result.window.end >= CHECKPOINT_AFTER_SECONDS:
            self.log.save(self.recording, self.stored, self.pending, probability)
            self.stored += len(self.pending)
            self.pending = []

    def finished(self) -> None:
        """The recording's outcome is written: its windows are no longer needed."""
        if self.stored:
            self.log.drop(self.recording)
        self.stored, self.pending = 0, []
