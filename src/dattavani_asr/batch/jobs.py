"""One file's journey through a batch run: its windows, results and outcome."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..audio.windows import AudioStats
from ..io.sources.base import Sink, Source, SourceItem
from ..pipeline.checkpoint import Checkpointer


@dataclass
class FileJob:
    """Mutable state of one file while its windows are decoded and transcribed."""

    index: int
    item: SourceItem
    source: Source
    sink: Sink
    base: str  # output file name without the format (batch.outputs)
    language: str | None = None
    language_probability: float = 1.0
    stats: AudioStats = field(default_factory=AudioStats)
    results: list[Any] = field(default_factory=list)  # finished windows, in order, without their audio
    checkpoint: Checkpointer | None = None
    resume_from: float | None = None  # where an interrupted run's stored windows end
    preloaded: int = 0  # windows an interrupted run finished
    windows_total: int | None = None
    started: float | None = None
    error: BaseException | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    speakers: Any = None  # a pipeline.speakers.SpeakerTrack when the run labels speakers

    @property
    def complete(self) -> bool:
        return self.windows_total is not None and len(self.results) >= self.windows_total

    def resume(self, checkpoint: Checkpointer, origin: float) -> None:
        """Take up what an interrupted run of this file finished (if anything)."""
        self.checkpoint = checkpoint
        resumed = checkpoint.resumed
        if resumed.results:
            self.results = list(resumed.results)
            self.preloaded = len(resumed.results)
            self.resume_from = resumed.start
            self.language, self.language_probability = resumed.language, resumed.language_probability
            self.stats = resumed.stats(origin)

    def begin(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started


@dataclass(frozen=True)
class WindowMessage:
    job: FileJob
    window: Any


@dataclass(frozen=True)
class EndMessage:
    """All windows of `job` were queued (`count` of them), or decoding failed with `error`."""

    job: FileJob
    count: int
    error: BaseException | None = None
