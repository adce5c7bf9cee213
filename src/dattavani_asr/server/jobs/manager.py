"""`JobManager`: accepts jobs, runs them on worker threads, survives kills and restarts.

Layout under `data_dir`: `jobs.sqlite3` (state), `uploads/<id>` (an upload, or a URL job's
download, deleted once the job is finished) and `results/<id>.json` (the transcript, written
atomically *before* the job is marked succeeded). On start, a job left running by a killed server
is marked succeeded if its result exists, and otherwise queued again; so no job is lost and none
runs twice to completion.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from ...core.errors import ConfigError, DattavaniError, EmptyAudioError
from ...core.transcript import Transcript
from ...io.writers import write_text_atomic
from ...pipeline.checkpoint import Checkpointer
from ...pipeline.scheduler import Priority
from ..errors import APIError, busy, from_core
from ..metrics import Metrics
from ..security import UrlGuard
from ..service import CancelledError, TranscriptionRequest, TranscriptionService
from ..settings import ServerSettings
from ..webhooks import WebhookSender
from .download import JobFailure, download, redact
from .store import FINISHED, JobRecord, JobStore, NewJob, QueueFullError
from .views import job_view

log = logging.getLogger("dattavani_asr.server.jobs")

PROGRESS_SAVE_SECONDS = 1.0
QUEUE_FULL_RETRY_SECONDS = 30.0


@dataclass
class _Active:
    """A job a worker is running: how to cancel it, why, and its live progress."""

    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None  # "user" (DELETE) or "shutdown" (stop): decides cancelled vs queued again
    progress: float = 0.0
    saved_at: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


def new_job_id() -> str:
    return f"job_{uuid.uuid4().hex}"


def check_audio(path: Path) -> float | None:
    """Probe an upload and decode its first seconds; raises the typed decode error. Returns its duration."""
    from ...audio.decode import iter_audio, probe

    info = probe(path)
    blocks = iter_audio(path, block_seconds=5.0)
    try:
        first = next(blocks, None)
    finally:
        getattr(blocks, "close", lambda: None)()  # release the container now
    if first is None or first.size == 0:
        raise EmptyAudioError(f"{path}: no audio samples")
    return info.duration


class JobManager:
    """Durable jobs over `TranscriptionService`; blocking methods are meant for worker/pool threads."""

    def __init__(self, settings: ServerSettings, service: TranscriptionService, metrics: Metrics) -> None:
        self.settings = settings
        self.service = service
        self.metrics = metrics
        self.root = Path(settings.data_dir)
        self.uploads = self.root / "uploads"
        self.results = self.root / "results"
        self._store: JobStore | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._active: dict[str, _Active] = {}
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._lock_file: IO[bytes] | None = None
        self.webhooks = WebhookSender(
            self._webhook_result,
            max_attempts=settings.webhook_max_attempts,
            backoff=settings.webhook_backoff_seconds,
            breaker_failures=settings.webhook_breaker_failures,
            breaker_cooldown=settings.webhook_breaker_cooldown_seconds,
            guard=UrlGuard.from_settings(settings),
            secret=settings.webhook_secret,
        )

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise APIError(503, "the job service is not running", code="not_ready", headers={"Retry-After": "5"})
        return self._store

    # ---- lifecycle

    def start(self) -> None:
        """Open the data dir (one server per data dir), recover from a kill, start workers and webhooks."""
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.results.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        self._store = JobStore(self.root / "jobs.sqlite3")
        self._recover()
        self._stopping.clear()
        self.webhooks.start()
        for job_id in self.store.pending_webhooks():
            self._send_webhook(job_id)
        for index in range(self.settings.job_workers):
            thread = threading.Thread(target=self._work, name=f"job-worker-{index}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def _lock_data_dir(self) -> None:
        handle = (self.root / ".lock").open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise ConfigError(f"{self.root} is in use by another server (its jobs would run twice)") from exc
        self._lock_file = handle

    def stop(self, grace_seconds: float) -> None:
        """Take no more jobs; let running ones finish for up to `grace_seconds`, then queue them again."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + grace_seconds
        for thread in self._workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for active in self._active.values():
                active.reason = active.reason or "shutdown"
                active.cancel.set()
        for thread in self._workers:
            thread.join(30.0)
        stuck = [thread.name for thread in self._workers if thread.is_alive()]
        self._workers.clear()
        self.webhooks.stop()
        if stuck:
            log.error("job workers still busy at exit: %s", ", ".join(stuck))
        elif self._store is not None:
            self._store.close()
            self._store = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _recover(self) -> None:
        """Jobs a killed server left running: succeeded if their result exists, else queued again."""
        store = self.store
        for job_id in store.ids(("queued", "running")):
            job = store.get(job_id)
            if job is None:
                continue
            if self.result_path(job_id).exists():
                store.finish(job_id, "succeeded")
                log.info("job %s: result found after restart, marked succeeded", job_id)
            elif job.status == "running" and job.cancel_requested:
                store.finish(job_id, "cancelled", "cancelled by request", "cancelled")
            elif job.status == "running":
                store.requeue(job_id, "interrupted")
                log.info("job %s: interrupted by a stop, queued again", job_id)
        live = set(store.ids(("queued", "running")))
        for recording in store.windows.recordings():
            if recording.split("/", 1)[0] not in live:
                store.windows.drop(recording)
        for path in self.uploads.iterdir():
            if path.name not in live:  # finished jobs' uploads, partial downloads, refused uploads
                path.unlink(missing_ok=True)
        for path in self.results.glob(".*.part"):
            path.unlink(missing_ok=True)

    def counts(self) -> dict[str, float]:
        """Jobs by state (for the metrics gauge)."""
        store = self._store
        return store.counts() if store is not None else {}

    # ---- paths

    def upload_path(self, job_id: str) -> Path:
        return self.uploads / job_id

    def result_path(self, job_id: str) -> Path:
        return self.results / f"{job_id}.json"

    # ---- API (blocking: call through the request pool)

    def submit_upload(
        self, stream: IO[bytes], filename: str, options: dict[str, Any], webhook_url: str | None = None
    ) -> JobRecord:
        """Save and probe an upload, then queue it; nothing is left behind if it is refused."""
        self._check_room()
        job_id = new_job_id()
        path = self.upload_path(job_id)
        part = path.with_name(path.name + ".part")
        try:
            with part.open("wb") as out:
                shutil.copyfileobj(stream, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            try:
                duration = check_audio(part)
            except DattavaniError as exc:
                raise type(exc)(str(exc).replace(str(part), filename)) from exc
            os.replace(part, path)
            return self._add(NewJob(job_id, "upload", filename, options, duration, webhook_url))
        except BaseException:
            part.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
            raise

    def submit_url(self, url: str, options: dict[str, Any], webhook_url: str | None = None) -> JobRecord:
        """Queue a URL job (the download happens when it runs)."""
        self._check_room()
        return self._add(NewJob(new_job_id(), "url", url, options, None, webhook_url))

    def _check_room(self) -> None:
        if self.store.queued_count() >= self.settings.max_queued_jobs:
            raise busy(QUEUE_FULL_RETRY_SECONDS, "job queue")

    def _add(self, job: NewJob) -> JobRecord:
        try:
            record = self.store.add(job, self.settings.max_queued_jobs)
        except QueueFullError as exc:
            raise busy(QUEUE_FULL_RETRY_SECONDS, "job queue") from exc
        with self._wake:
            self._wake.notify()
        log.info("job %s queued (%s %s)", job.id, job.source_kind, _name(record))
        return record

    def get(self, job_id: str) -> JobRecord:
        job = self.store.get(job_id)
        if job is None:
            raise APIError(404, f"no job {job_id!r}", code="job_not_found", param="job_id")
        return job

    def view(self, job: JobRecord) -> dict[str, Any]:
        """The job's summary, with live progress while it runs."""
        active = self._active.get(job.id)
        return job_view(job, active.progress if active is not None and job.status == "running" else None)

    def recent(self, limit: int, status: str | None = None, after: str | None = None) -> list[JobRecord]:
        """Newest first; `after` (a job id) pages on to older jobs."""
        return self.store.recent(limit, status, after)

    def cancel(self, job_id: str, wait_seconds: float = 10.0) -> JobRecord:
        """Cancel a queued job at once, or stop a running one (waiting up to `wait_seconds` for it)."""
        with self._lock:
            job = self.get(job_id)
            active = self._active.get(job_id) if job.status == "running" else None
            cancelled_now = job.status == "queued" and self.store.finish(
                job_id, "cancelled", "cancelled by request", "cancelled"
            )
            if active is not None:
                self.store.request_cancel(job_id)
                active.reason = "user"
                active.cancel.set()
        if cancelled_now:
            self._finished(job_id)
        elif active is not None:
            active.done.wait(wait_seconds)
        return self.get(job_id)

    def result(self, job_id: str) -> Transcript:
        job = self.get(job_id)
        if job.status != "succeeded":
            detail = f": {job.error}" if job.error else ""
            raise APIError(409, f"job {job_id} is {job.status}{detail}; no result", code=f"job_{job.status}")
        try:
            data = json.loads(self.result_path(job_id).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise APIError(500, f"result of job {job_id} is unreadable", code="result_unavailable") from exc
        return Transcript.from_dict(data)

    # ---- workers

    def _work(self) -> None:
        while True:
            claimed = self._claim()
            if claimed is None:
                return
            job, active = claimed
            try:
                self._run(job, active)
            finally:
                with self._lock:
                    self._active.pop(job.id, None)
                active.done.set()

    def _claim(self) -> tuple[JobRecord, _Active] | None:
        with self._wake:
            while not self._stopping.is_set():
                job = self.store.claim_next()
                if job is not None:
                    active = self._active[job.id] = _Active()
                    return job, active
                self._wake.wait(5.0)
        return None

    def _run(self, job: JobRecord, active: _Active) -> None:
        started = time.perf_counter()
        log.info("job %s running (attempt %d)", job.id, job.attempts)
        try:
            transcript = self._transcribe(job, active)
            if active.reason == "user":
                raise CancelledError("cancelled by request")
            write_text_atomic(json.dumps(transcript.to_dict(), ensure_ascii=False), self.result_path(job.id))
            self._end(job, "succeeded")
            self.metrics.transcribed(transcript.model, transcript.duration, time.perf_counter() - started)
        except CancelledError:
            if active.reason == "shutdown":
                self.store.requeue(job.id, "requeued")
                log.info("job %s queued again: server stopping", job.id)
            else:
                self._end(job, "cancelled", "cancelled by request", "cancelled")
        except DattavaniError as exc:
            error = from_core(exc)
            self._end(job, "failed", error.message.replace(str(self.upload_path(job.id)), _name(job)), error.code)
        except JobFailure as exc:
            self._end(job, "failed", exc.message, exc.code)
        except Exception as exc:
            log.exception("job %s failed unexpectedly", job.id)
            self._end(job, "failed", f"internal error: {type(exc).__name__}: {exc}", "internal_error")

    def _transcribe(self, job: JobRecord, active: _Active) -> Transcript:
        path = self.upload_path(job.id)
        duration = job.duration
        if job.source_kind == "url":
            download(
                job.source,
                path,
                limit=self.settings.max_upload_bytes,
                guard=UrlGuard.from_settings(self.settings),
                cancel=active.cancel,
            )
            duration = check_audio(path)
            self.store.set_progress(job.id, 0.0, duration)

        def progress(value: float) -> None:
            active.progress = value
            now = time.monotonic()
            if now - active.saved_at >= PROGRESS_SAVE_SECONDS:
                active.saved_at = now
                self.store.set_progress(job.id, value)

        stored = dict(job.options["request"])
        stored["fallback_models"] = tuple(stored.get("fallback_models", ()))
        request = TranscriptionRequest(**stored)
        checkpoint = Checkpointer(self.store.windows, f"{job.id}/{path.stat().st_size}")  # a new download: anew
        if checkpoint.resumed.results:
            log.info("job %s resumes at %.1f s", job.id, checkpoint.resumed.start)
        transcript = self.service.transcribe(
            path,
            request,
            priority=Priority.JOB,
            progress=progress,
            duration=duration,
            cancel=active.cancel,
            checkpoint=checkpoint,
        )
        return replace(transcript, source=_name(job))

    def _end(self, job: JobRecord, status: str, error: str | None = None, code: str | None = None) -> None:
        if self.store.finish(job.id, status, error, code):
            log.info("job %s %s%s", job.id, status, f": {error}" if error else "")
            self._finished(job.id)

    def _finished(self, job_id: str) -> None:
        """After a job is finished: its upload and stored windows go, its webhook is sent."""
        self.store.windows.drop_under(f"{job_id}/")
        for path in (self.upload_path(job_id), self.upload_path(job_id).with_name(f"{job_id}.part")):
            path.unlink(missing_ok=True)
        self._send_webhook(job_id)

    # ---- webhooks

    def _send_webhook(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or not job.webhook_url or job.status not in FINISHED:
            return
        payload = {"type": f"job.{job.status}", "job": job_view(job)}
        self.webhooks.send(job_id, job.webhook_url, payload, secret=job.options.get("webhook_secret"))

    def _webhook_result(self, job_id: str, status: str, attempts: int, error: str | None) -> None:
        store = self._store
        if store is not None:
            store.webhook_update(job_id, status, attempts, error)


def _name(job: JobRecord) -> str:
    return job.source if job.source_kind == "upload" else redact(job.source)
