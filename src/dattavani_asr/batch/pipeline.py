"""The batch pipeline: decode + VAD in worker threads, one engine batching windows across files.

Decoder threads turn files into speech windows and put them on a bounded queue (so memory is
bounded however many files there are); the engine thread takes windows from any files, up to
`batch_size` at a time, so short files share batches instead of each paying for its own; a file
is finished (written, then marked done) as soon as all its windows are back.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from ..audio import iter_audio
from ..chunking import speech_windows
from ..errors import DattavaniError
from ..options import TranscribeOptions
from .jobs import EndMessage, FileJob, WindowMessage
from .packing import build_pack, plan_packs, unpack

log = logging.getLogger(__name__)

BATCH_WAIT_SECONDS = 0.05
PACK_INTAKE = 3  # windows taken per batch slot when packing (about three short clips per 30 s)
Message = WindowMessage | EndMessage


def _without_words(result: Any) -> Any:
    return replace(result, segments=tuple(replace(segment, words=()) for segment in result.segments))


class FileTimeoutError(DattavaniError):
    """A file took longer than --file-timeout."""


def _put(out: queue.Queue[Message], message: Message, job: FileJob) -> bool:
    """Block until there is room (bounded memory), unless the job is cancelled meanwhile."""
    while not job.cancelled.is_set():
        try:
            out.put(message, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


def decode_job(job: FileJob, options: TranscribeOptions, out: queue.Queue[Message]) -> None:
    """Producer: stream one file into windows on `out`, then an EndMessage (with any error)."""
    job.begin()
    count = 0
    try:
        with job.source.open(job.item) as stream:
            blocks = iter_audio(stream, start=options.start, end=options.end, channel=options.channel)
            for window in speech_windows(blocks, options.vad, offset=options.start or 0.0, stats=job.stats):
                if not _put(out, WindowMessage(job, window), job):
                    return
                count += 1
    except Exception as exc:  # every failure is recorded against the file, never raised
        _put(out, EndMessage(job, count, exc), job)
        return
    _put(out, EndMessage(job, count), job)


class EnginePump:
    """Consumer: batches windows from the queue through the engine and hands back finished jobs."""

    def __init__(
        self,
        engine: Any,
        options: TranscribeOptions,
        finish: Callable[[FileJob], None],
        file_timeout: float | None,
        jobs: list[FileJob],
        pack: bool = False,
    ) -> None:
        self.jobs = jobs
        self.pack = pack
        self.intake = options.batch_size * (PACK_INTAKE if pack else 1)
        self.engine = engine
        self.options = options
        self.finish = finish
        self.file_timeout = file_timeout
        self.pending: list[WindowMessage] = []

    def run(self, inbox: queue.Queue[Message], jobs_total: int) -> None:
        finished = 0
        while finished < jobs_total:
            finished += self._expire()
            finished += self._drain(inbox)
            batch = self._take_batch()
            if batch:
                finished += self._transcribe(batch)

    def _drain(self, inbox: queue.Queue[Message]) -> int:
        """Move queued messages into `pending` (waiting a little when idle); count jobs it ends."""
        ended = 0
        wait = BATCH_WAIT_SECONDS if self.pending else 0.5
        deadline = time.monotonic() + wait
        while len(self.pending) < self.intake:
            try:
                message = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if isinstance(message, WindowMessage):
                if not message.job.done:
                    self.pending.append(message)
                continue
            ended += self._end(message)
        return ended

    def _end(self, message: EndMessage) -> int:
        job = message.job
        if job.done:
            return 0
        if message.error is not None:
            job.error = self._timed_out(job) or message.error
            return self._close(job)
        job.windows_total = message.count
        return self._close(job) if job.complete else 0

    def _timed_out(self, job: FileJob) -> FileTimeoutError | None:
        if self.file_timeout is None or job.elapsed() <= self.file_timeout:
            return None
        return FileTimeoutError(f"{job.item.uri}: gave up after {self.file_timeout:g} s (--file-timeout)")

    def _expire(self) -> int:
        ended = 0
        for job in self.jobs:
            timeout = None if job.done else self._timed_out(job)
            if timeout is not None:
                job.error = timeout
                ended += self._close(job)
        self.pending = [m for m in self.pending if not m.job.done]
        return ended

    def _take_batch(self) -> list[WindowMessage]:
        batch, self.pending = self.pending[: self.intake], self.pending[self.intake :]
        return [m for m in batch if not m.job.done]

    def _transcribe(self, batch: list[WindowMessage]) -> int:
        ended = 0
        for language, group in self._by_language(batch).items():
            try:
                results = self._decode([m.window for m in group], language)
            except Exception as exc:
                for message in group:
                    message.job.error = exc
                    ended += self._close(message.job)
                continue
            for message, result in zip(group, results):
                message.job.results.append(result)
                ended += self._close(message.job) if message.job.complete else 0
        return ended

    def _decode(self, windows: list[Any], language: str | None) -> list[Any]:
        """Engine results, one per window; short windows share packed windows when packing."""
        decoding = replace(self.options.decoding, language=language)
        if not self.pack:
            return list(self.engine.transcribe_batch(windows, decoding, language)[0])
        packs = [build_pack(windows, indices) for indices in plan_packs(windows)]
        with_words = replace(decoding, word_timestamps=True)  # segments are split between files by word
        packed, _, _ = self.engine.transcribe_batch([pack.window for pack in packs], with_words, language)
        results: list[Any] = [None] * len(windows)
        for pack, result in zip(packs, packed):
            for part, part_result in zip(pack.parts, unpack(pack, result)):
                results[part.index] = part_result if decoding.word_timestamps else _without_words(part_result)
        return results

    def _by_language(self, batch: list[WindowMessage]) -> dict[str | None, list[WindowMessage]]:
        """Group windows by their file's language, detecting it (batched) for new files."""
        unknown = [m for m in batch if m.job.language is None]
        firsts = list({id(m.job): m for m in unknown}.values())
        if firsts:
            for message, (language, probability) in zip(
                firsts, self.engine.detect_languages([m.window for m in firsts])
            ):
                message.job.language, message.job.language_probability = language, probability
        groups: dict[str | None, list[WindowMessage]] = {}
        for message in batch:
            groups.setdefault(message.job.language, []).append(message)
        return groups

    def _close(self, job: FileJob) -> int:
        if job.done:
            return 0
        job.done = True
        job.cancelled.set()
        self.finish(job)
        return 1


def run_pipeline(
    jobs: list[FileJob],
    engine: Any,
    options: TranscribeOptions,
    finish: Callable[[FileJob], None],
    *,
    workers: int = 2,
    file_timeout: float | None = None,
    pack: bool = False,
) -> None:
    """Transcribe every job; `finish(job)` is called once per job, from the engine thread."""
    inbox: queue.Queue[Message] = queue.Queue(maxsize=max(4, options.batch_size * 3))
    pump = EnginePump(engine, options, finish, file_timeout, jobs, pack)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    try:
        for job in jobs:
            pool.submit(decode_job, job, options, inbox)
        pump.run(inbox, len(jobs))
    finally:
        for job in jobs:
            job.cancelled.set()
        pool.shutdown(wait=True, cancel_futures=True)
