"""Cross-request dynamic batching: windows from many callers share one engine, most urgent first.

Callers submit speech windows with their decoding options and a priority. On an engine with one
worker (a GPU) one thread waits at most `batch_wait_ms` for a batch to fill, then decodes up to
`batch_size` windows that share options (same model, task, language, beam...), most urgent priority
first, oldest first. An engine with several single-threaded workers (a CPU) decodes one window per
worker at a time and gains nothing from batches: there each worker has a thread of its own here that
takes the most urgent window as soon as the worker is free, and partials may hold all workers but
one, so a final or a request never waits for partials.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from ..core.options import BATCH_SIZE, BATCH_WAIT_MS, DecodingOptions
from ..engine import AudioWindow, WindowResult, encoder_seconds

log = logging.getLogger(__name__)
BatchObserver = Callable[[int, float], None]
# Partials are decoded one window at a time: a final that arrives meanwhile waits for the running
# batch, and on a CPU a batch of 4 windows costs ~3.3x one window (tiny.en, 2 cores), so batching
# partials saves little (with 2 per batch, 4 sessions: final p95 1.46-1.54 s; with 1: 1.28-1.31 s).
MAX_PARTIAL_BATCH = 1
# A job window that has waited this long ranks with interactive work (oldest first), so a steady stream
# of requests and live sessions cannot starve jobs (soak: a 10-s job waited 99 s before this).
JOB_AGING_SECONDS = 5.0


class Priority(IntEnum):
    """Lower runs first: interactive requests go ahead of background jobs."""

    INTERACTIVE = 0  # HTTP requests and live finals: someone is waiting for this answer
    PARTIAL = 1  # live partial hypotheses: useful, but a final or a request goes first
    JOB = 2


@dataclass(order=True)
class _Item:
    priority: int
    sequence: int
    window: AudioWindow = field(compare=False)
    options: DecodingOptions = field(compare=False)
    future: Future[WindowResult] = field(compare=False)
    queued: float = field(default_factory=time.monotonic, compare=False)

    def rank(self, now: float) -> tuple[int, int]:
        """(priority, sequence), a job window that waited JOB_AGING_SECONDS ranking as interactive."""
        aged = self.priority == Priority.JOB and now - self.queued >= JOB_AGING_SECONDS
        return (Priority.INTERACTIVE if aged else self.priority), self.sequence


def _batch_key(item: _Item) -> tuple[DecodingOptions, float]:
    """Windows share a batch only with the same options (and encoder context, when trimmed)."""
    options = item.options
    return options, encoder_seconds(item.window, options.min_encoder_seconds) if options.trim_encoder else 30.0


class BatcherStopped(RuntimeError):
    """The batcher was stopped (model unloaded or server shutting down) before the window ran."""


class DynamicBatcher:
    """Batches windows of concurrent callers onto one WhisperEngine."""

    def __init__(
        self,
        engine: Any,
        batch_size: int = BATCH_SIZE.default,
        batch_wait_ms: float = BATCH_WAIT_MS.default,
        observer: BatchObserver | None = None,
    ):
        self.engine = engine
        self.batch_size = batch_size
        self.partial_batch_size = min(batch_size, MAX_PARTIAL_BATCH)
        self.batch_wait = batch_wait_ms / 1000
        self.observer = observer
        self._pending: list[_Item] = []
        self._condition = threading.Condition()
        self._sequence = itertools.count()
        self._stopped = False
        self._window_seconds: float | None = None
        self._streams = 0
        self.slots = max(1, int(getattr(engine, "workers", 1)))
        self._running_partials = 0
        self._threads = [
            threading.Thread(target=self._run, name=f"batcher-{engine.name}-{index}", daemon=True)
            for index in range(self.slots)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        """Windows waiting to be decoded."""
        return len(self._pending)

    @property
    def window_seconds(self) -> float | None:
        """Smoothed engine time per decoded window (None before the first batch)."""
        return self._window_seconds

    @property
    def streams(self) -> int:
        """Live sessions using this engine (see `stream_opened`)."""
        return self._streams

    def stream_opened(self) -> None:
        with self._condition:
            self._streams += 1

    def stream_closed(self) -> None:
        with self._condition:
            self._streams = max(0, self._streams - 1)

    def submit(self, windows: list[AudioWindow], options: DecodingOptions, priority: int) -> list[Future[WindowResult]]:
        futures: list[Future[WindowResult]] = []
        with self._condition:
            if self._stopped:
                raise BatcherStopped(f"model {self.engine.name} is not serving")
            for window in windows:
                future: Future[WindowResult] = Future()
                self._pending.append(_Item(priority, next(self._sequence), window, options, future))
                futures.append(future)
            self._condition.notify_all()
        return futures

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            for item in self._pending:
                if not item.future.done():  # a caller that went away cancelled its futures
                    item.future.set_exception(BatcherStopped(f"model {self.engine.name} stopped"))
            self._pending.clear()
            self._condition.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._decode(batch)

    def _next_batch(self) -> list[_Item] | None:
        with self._condition:
            while not self._stopped and not self._takeable():
                self._condition.wait()
            deadline = time.monotonic() + self.batch_wait
            while self.slots == 1 and not self._stopped and len(self._pending) < self._batch_size():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            if self._stopped:
                return None
            return self._take()

    def _partials_allowed(self) -> bool:
        return self.slots == 1 or self._running_partials < self.slots - 1

    def _takeable(self) -> bool:
        if self._partials_allowed():
            return bool(self._pending)
        return any(item.priority != Priority.PARTIAL for item in self._pending)

    def _batch_size(self) -> int:
        """How many windows the next batch may hold: a batch of partials needs no wait to fill."""
        now = time.monotonic()
        urgent = min(item.rank(now) for item in self._pending)
        return self.partial_batch_size if urgent[0] == Priority.PARTIAL else self.batch_size

    def _take(self) -> list[_Item]:
        """The most urgent item and up to batch_size-1 others of its priority with the same options
        (one item where each worker decodes a window of its own)."""
        self._pending = [item for item in self._pending if not item.future.cancelled()]
        allowed = self._partials_allowed()
        candidates = [item for item in self._pending if allowed or item.priority != Priority.PARTIAL]
        if not candidates:
            return []
        now = time.monotonic()
        candidates.sort(key=lambda item: item.rank(now))
        head = candidates[0]
        key, urgency = _batch_key(head), head.rank(now)[0]
        size = 1 if self.slots > 1 else self.partial_batch_size if urgency == Priority.PARTIAL else self.batch_size
        # Less urgent windows never ride along: on a CPU each window adds ~80 % of its own cost.
        batch = [item for item in candidates if item.rank(now)[0] == urgency and _batch_key(item) == key][:size]
        chosen = {id(item) for item in batch}
        self._pending = [item for item in self._pending if id(item) not in chosen]
        batch = [item for item in batch if item.future.set_running_or_notify_cancel()]
        self._running_partials += sum(item.priority == Priority.PARTIAL for item in batch)
        return batch

    def _decode(self, batch: list[_Item]) -> None:
        if not batch:
            return
        options = batch[0].options
        started = time.perf_counter()
        try:
            results, _, _ = self.engine.transcribe_batch([item.window for item in batch], options, options.language)
        except Exception as exc:  # handed to every caller of this batch
            log.warning("batch of %d windows failed: %s", len(batch), exc)
            for item in batch:
                item.future.set_exception(exc)
            return
        finally:
            self._finished(batch)
        seconds = time.perf_counter() - started
        self._note_window_seconds(seconds / len(batch))
        for item, result in zip(batch, results):
            item.future.set_result(result)
        if self.observer is not None:
            self.observer(len(batch), seconds)

    def _finished(self, batch: list[_Item]) -> None:
        partials = sum(item.priority == Priority.PARTIAL for item in batch)
        if partials:
            with self._condition:
                self._running_partials -= partials
                self._condition.notify_all()

    def _note_window_seconds(self, seconds: float) -> None:
        previous = self._window_seconds
        self._window_seconds = seconds if previous is None else 0.7 * previous + 0.3 * seconds


class ScheduledDecoder:
    """A `pipeline.run.WindowDecoder` over a model's scheduler: windows share batches with other callers'."""

    def __init__(self, scheduler: DynamicBatcher, priority: int) -> None:
        self.scheduler = scheduler
        self.priority = priority

    @property
    def name(self) -> str:
        return str(self.scheduler.engine.name)

    @property
    def multilingual(self) -> bool:
        return bool(self.scheduler.engine.multilingual)

    def check(self, options: DecodingOptions) -> None:
        self.scheduler.engine.check_options(options)

    def detect(self, window: AudioWindow) -> tuple[str, float]:
        [(language, probability)] = self.scheduler.engine.detect_languages([window])
        return str(language), float(probability)

    def submit(self, windows: list[AudioWindow], options: DecodingOptions) -> list[Future[WindowResult]]:
        return self.scheduler.submit(windows, options, self.priority)
