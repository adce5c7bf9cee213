"""The batch pipeline: decode + VAD in worker threads, one engine batching windows across files.

Decoder threads turn files into speech windows and hand them to a `WindowGate`, which holds a
bounded number of them (so memory is bounded however many files there are) and releases them to
the engine thread in a fixed order: job by job (in job order), window by window. So which windows
share a batch or a packed window depends only on the input files and the options, never on thread
timing or `--workers`, and a run gives the same transcripts every time. The engine takes up to
`batch_size` windows (or packs) at a time from any files, so short files share batches instead of
each paying for its own; a file is finished (written, then marked done) as soon as all its windows
are back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from ..audio.decode import iter_audio
from ..audio.windows import speech_windows
from ..core.errors import DattavaniError
from ..core.options import TranscribeOptions
from .jobs import EndMessage, FileJob, WindowMessage
from .packing import build_pack, decode_packs, fits, pack_limit

log = logging.getLogger(__name__)

BATCH_WAIT_SECONDS = 0.05
IDLE_WAIT_SECONDS = 0.5
STARVED_SECONDS = 1.0  # decode a partial batch once the decoders have released nothing for this long
SAMPLING_SEED = 0
HOLD_BATCHES = 3  # windows held for later files (and queued by the file being read): this many batches' worth
Message = WindowMessage | EndMessage
Unit = list[WindowMessage]  # what takes one slot of an engine batch: one window, or the windows of one pack


class FileTimeoutError(DattavaniError):
    """A file took longer than --file-timeout."""


class WindowGate:
    """Windows from the decoder threads to the engine thread, released in job order.

    Each job has its own queue. The engine reads the oldest job that has not ended (the cursor)
    until its end message, then the next job. Windows of later jobs wait here, at most `limit` of
    them (their decoders block beyond that), while the cursor job may always queue up to `limit`
    of its own: memory stays bounded and the cursor job can always make progress.
    """

    def __init__(self, jobs: list[FileJob], limit: int) -> None:
        self._jobs = sorted(jobs, key=lambda job: job.index)
        self._queues: dict[int, deque[Message]] = {job.index: deque() for job in self._jobs}
        self._reached: dict[int, float] = {}
        self._cursor = 0
        self._held = 0
        self._limit = limit
        self._changed = threading.Condition()
        self._advance(0)

    @property
    def exhausted(self) -> bool:
        """Every job's messages were released (or dropped, for jobs that ended early)."""
        return self._cursor >= len(self._jobs)

    def reading(self) -> tuple[FileJob, float] | None:
        """The job whose windows are being released (the cursor), and since when."""
        if self.exhausted:
            return None
        job = self._jobs[self._cursor]
        return job, self._reached[job.index]

    def put(self, message: Message) -> bool:
        """Block until the message may be held (bounded memory), unless its job is cancelled."""
        job = message.job
        with self._changed:
            while not job.cancelled.is_set():
                if self._admits(message):
                    self._queues[job.index].append(message)
                    self._held += isinstance(message, WindowMessage)
                    self._changed.notify_all()
                    return True
                self._changed.wait(0.2)
        return False

    def _admits(self, message: Message) -> bool:
        if isinstance(message, EndMessage):
            return True
        if not self.exhausted and message.job is self._jobs[self._cursor]:
            return len(self._queues[message.job.index]) < self._limit
        return self._held < self._limit

    def take(self, count: int, wait: float) -> list[Message]:
        """Up to `count` windows in release order, with the end messages met on the way.

        Waits up to `wait` seconds when the cursor job has nothing queued yet.
        """
        with self._changed:
            if not self._releasable():
                self._changed.wait(wait)
            taken: list[Message] = []
            windows = 0
            while windows < count and self._releasable():
                job = self._jobs[self._cursor]
                queue = self._queues[job.index]
                if job.done:  # failed or timed out: what it still queued is dropped
                    self._held -= sum(isinstance(m, WindowMessage) for m in queue)
                    queue.clear()
                    self._advance(self._cursor + 1)
                    continue
                message = queue.popleft()
                taken.append(message)
                if isinstance(message, EndMessage):
                    self._advance(self._cursor + 1)
                else:
                    windows += 1
                    self._held -= 1
            self._changed.notify_all()
            return taken

    def _releasable(self) -> bool:
        if self.exhausted:
            return False
        job = self._jobs[self._cursor]
        return job.done or bool(self._queues[job.index])

    def _advance(self, cursor: int) -> None:
        self._cursor = cursor
        if cursor < len(self._jobs):
            self._reached[self._jobs[cursor].index] = time.monotonic()


def decode_job(job: FileJob, options: TranscribeOptions, gate: WindowGate) -> None:
    """Producer: stream one file into windows, then an EndMessage (with any error)."""
    job.begin()
    count = 0
    start = job.resume_from if job.resume_from is not None else options.start
    try:
        with job.source.open(job.item) as stream:
            blocks = iter_audio(stream, start=start, end=options.end, channel=options.channel)
            for window in speech_windows(blocks, options.vad, offset=start or 0.0, stats=job.stats):
                if job.speakers is not None:  # embedded on its own thread while the engine decodes
                    job.speakers.add(window)
                if not gate.put(WindowMessage(job, window)):
                    return
                count += 1
    except Exception as exc:  # every failure is recorded against the file, never raised
        gate.put(EndMessage(job, count, exc))
        return
    gate.put(EndMessage(job, count))


class EnginePump:
    """Consumer: forms engine batches from the released windows and hands back finished jobs.

    Packing (`pack=True`) fills packs in release order, one open pack per language, and closes a
    pack when the next window does not fit or every job has been released; so pack composition is
    as deterministic as the release order. Batches are cut from the packs (or windows) in that
    order; the engine's results do not depend on what else shares a batch.
    """

    def __init__(
        self,
        engine: Any,
        options: TranscribeOptions,
        handlers: Handlers,
        file_timeout: float | None,
        jobs: list[FileJob],
        pack: bool = False,
    ) -> None:
        self.jobs = jobs
        self.keep = handlers.keep
        self.finish = handlers.finish
        self.pack = pack
        self.engine = engine
        self.options = options
        self.file_timeout = file_timeout
        self.gate = WindowGate(jobs, limit=max(8, options.batch_size * HOLD_BATCHES))
        self.open: dict[str | None, Unit] = {}  # packs being filled, per language
        self.ready: list[Unit] = []  # closed packs (or single windows) waiting for the engine
        self.last_release = time.monotonic()

    def run(self, jobs_total: int) -> None:
        finished = 0
        while finished < jobs_total:
            finished += self._expire()
            finished += self._intake()
            units = self._take_units()
            if units:
                finished += self._transcribe(units)

    def _intake(self) -> int:
        """Release windows from the gate into packs / the ready list; count jobs that ended."""
        wait = BATCH_WAIT_SECONDS if self.ready else IDLE_WAIT_SECONDS
        messages = self.gate.take(self.options.batch_size * 4, wait)
        windows = [m for m in messages if isinstance(m, WindowMessage) and not m.job.done]
        if windows:
            self.last_release = time.monotonic()
        self._detect_languages(windows)
        ended = 0
        for message in messages:
            if isinstance(message, EndMessage):
                ended += self._end(message)
            elif not message.job.done:
                self._add(message)
        if self.gate.exhausted:
            self.ready.extend(unit for unit in self.open.values() if unit)
            self.open.clear()
        return ended

    def _add(self, message: WindowMessage) -> None:
        if not self.pack:
            self.ready.append([message])
            return
        unit = self.open.setdefault(message.job.language, [])
        limit = pack_limit(self.options.decoding.trim_encoder)
        if unit and not fits([m.window for m in unit], message.window, limit):
            self.ready.append(unit)
            unit = self.open[message.job.language] = []
        unit.append(message)

    def _take_units(self) -> list[Unit]:
        """The next engine batch: a full one, else what is ready once the decoders are done or stalled.

        Batches are much cheaper per window than single windows (the decoder steps are shared),
        so a partial batch waits for more windows unless the decoders have released nothing for
        STARVED_SECONDS (slow sources); after the last window, what remains is split evenly.
        """
        size = self.options.batch_size
        starved = time.monotonic() - self.last_release >= STARVED_SECONDS
        if len(self.ready) < size and not (starved or self.gate.exhausted):
            return []
        if self.gate.exhausted:
            size = -(-len(self.ready) // -(-len(self.ready) // size)) if self.ready else size
        units, self.ready = self.ready[:size], self.ready[size:]
        units = [[m for m in unit if not m.job.done] for unit in units]
        return [unit for unit in units if unit]

    def _detect_languages(self, windows: list[WindowMessage]) -> None:
        """Each new file's language from its first window (batched), before its windows are packed."""
        firsts = list({id(m.job): m for m in windows if m.job.language is None}.values())
        if firsts:
            for message, (language, probability) in zip(
                firsts, self.engine.detect_languages([m.window for m in firsts])
            ):
                message.job.language, message.job.language_probability = language, probability

    def _end(self, message: EndMessage) -> int:
        job = message.job
        if job.done:
            return 0
        if message.error is not None:
            job.error = self._timed_out(job) or message.error
            return self._close(job)
        job.windows_total = job.preloaded + message.count
        return self._close(job) if job.complete else 0

    def _timed_out(self, job: FileJob) -> FileTimeoutError | None:
        """Timed out: still being read --file-timeout seconds after both its decoding began and the
        engine began to wait for it.

        Only the job being read can hold the others up, so only it is timed out: not a file whose
        windows wait for earlier files, nor one whose windows all wait for the engine.
        """
        reading = self.gate.reading()
        if self.file_timeout is None or reading is None or reading[0] is not job or job.started is None:
            return None
        if time.monotonic() - max(job.started, reading[1]) <= self.file_timeout:
            return None
        return FileTimeoutError(f"{job.item.uri}: gave up after {self.file_timeout:g} s (--file-timeout)")

    def _expire(self) -> int:
        reading = self.gate.reading()
        timeout = None if reading is None or reading[0].done else self._timed_out(reading[0])
        if reading is None or timeout is None:
            return 0
        reading[0].error = timeout
        return self._close(reading[0])

    def _transcribe(self, units: list[Unit]) -> int:
        ended = 0
        groups: dict[str | None, list[Unit]] = {}
        for unit in units:
            groups.setdefault(unit[0].job.language, []).append(unit)
        for language, group in groups.items():
            try:
                results = self._decode(group, language)
            except Exception as exc:
                for message in (m for unit in group for m in unit):
                    message.job.error = exc
                    ended += self._close(message.job)
                continue
            for unit, unit_results in zip(group, results):
                for message, result in zip(unit, unit_results):
                    ended += self._kept(message.job, result)
        return ended

    def _kept(self, job: FileJob, result: Any) -> int:
        if job.done:
            return 0
        try:
            self.keep(job, result)
        except Exception as exc:  # a fallback model failing, the state DB full: the file fails, the run goes on
            job.error = exc
            return self._close(job)
        return self._close(job) if job.complete else 0

    def _decode(self, units: list[Unit], language: str | None) -> list[list[Any]]:
        """Engine results, one list per unit with one result per window of the unit."""
        decoding = replace(self.options.decoding, language=language)
        if not self.pack:
            results = self.engine.transcribe_batch([unit[0].window for unit in units], decoding, language)[0]
            return [[result] for result in results]
        packs = [build_pack([m.window for m in unit], list(range(len(unit)))) for unit in units]
        return decode_packs(self.engine, packs, decoding, language)

    def _close(self, job: FileJob) -> int:
        if job.done:
            return 0
        job.done = True
        job.cancelled.set()
        self.finish(job)
        return 1


def _seed_sampling() -> None:
    """Seed CTranslate2's sampling (temperature fallback), which otherwise draws from system entropy.

    Its generator is seeded once per thread, at first use: this makes a run in a fresh process
    (the CLI) sample the same way every time, not a second run in the same process.
    """
    import ctranslate2

    ctranslate2.set_random_seed(SAMPLING_SEED)


@dataclass(frozen=True)
class Handlers:
    """What the engine thread calls: `keep(job, result)` for each finished window of a job (in window
    order), then `finish(job)` once per job."""

    keep: Callable[[FileJob, Any], None]
    finish: Callable[[FileJob], None]


def run_pipeline(
    jobs: list[FileJob],
    engine: Any,
    options: TranscribeOptions,
    handlers: Handlers,
    *,
    workers: int = 2,
    file_timeout: float | None = None,
    pack: bool = False,
) -> None:
    """Transcribe every job, calling `handlers` from the engine thread."""
    _seed_sampling()
    pump = EnginePump(engine, options, handlers, file_timeout, jobs, pack)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    try:
        for job in sorted(jobs, key=lambda job: job.index):
            pool.submit(decode_job, job, options, pump.gate)
        pump.run(len(jobs))
    finally:
        for job in jobs:
            job.cancelled.set()
        pool.shutdown(wait=True, cancel_futures=True)
