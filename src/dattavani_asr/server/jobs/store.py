"""Durable job state in SQLite (WAL): jobs, their runs, and webhook delivery status.

Every change of a job's status is one transaction. A job's *runs* table records each time a
worker picked it up and how that run ended (succeeded, failed, cancelled, requeued, interrupted),
so "run twice to completion" is something the database can answer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...pipeline.checkpoint import WindowLog

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    source_kind TEXT NOT NULL CHECK (source_kind IN ('upload', 'url')),
    source TEXT NOT NULL,
    options TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    duration REAL,
    error TEXT,
    error_code TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    webhook_url TEXT,
    webhook_status TEXT,
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    webhook_error TEXT,
    webhook_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS runs (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT,
    PRIMARY KEY (job_id, attempt)
);
"""

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
AGING = 1.0  # seconds of audio a queued job is moved forward per second it waits

_COLUMNS = (
    "id, status, source_kind, source, options, progress, duration, error, error_code, attempts, cancel_requested, "
    "created_at, started_at, finished_at, webhook_url, webhook_status, webhook_attempts, webhook_error, webhook_at"
)


@dataclass(frozen=True)
class JobRecord:
    id: str
    status: str
    source_kind: str
    source: str
    options: dict[str, Any]
    progress: float
    duration: float | None
    error: str | None
    error_code: str | None
    attempts: int
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    webhook_url: str | None
    webhook_status: str | None
    webhook_attempts: int
    webhook_error: str | None
    webhook_at: float | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> JobRecord:
        values = list(row)
        values[4] = json.loads(values[4])
        values[10] = bool(values[10])
        return cls(*values)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class NewJob:
    id: str
    source_kind: str
    source: str
    options: dict[str, Any]
    duration: float | None = None
    webhook_url: str | None = None


class QueueFullError(Exception):
    """More than the allowed number of jobs are queued."""


class JobStore:
    """Thread-safe access to the jobs database; every method is one short transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self.windows = WindowLog(self._db, self._lock)  # finished windows of running jobs, to resume them

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, params).rowcount

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is committed, or none of it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add(self, job: NewJob, max_queued: int) -> JobRecord:
        """Insert a queued job, unless `max_queued` jobs are already queued."""
        with self._tx() as db:
            (queued,) = db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()
            if queued >= max_queued:
                raise QueueFullError(f"{queued} jobs are queued")
            db.execute(
                "INSERT INTO jobs (id, status, source_kind, source, options, duration, created_at, webhook_url) "
                "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.source_kind,
                    job.source,
                    json.dumps(job.options),
                    job.duration,
                    time.time(),
                    job.webhook_url,
                ),
            )
        record = self.get(job.id)
        assert record is not None
        return record

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return JobRecord.from_row(row) if row else None

    def recent(self, limit: int, status: str | None = None, before: str | None = None) -> list[JobRecord]:
        """Newest first; `before` (a job id) pages past that job."""
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if before is not None:
            where.append("seq < (SELECT seq FROM jobs WHERE id = ?)")
            params.append(before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT ?", (*params, limit)
            ).fetchall()
        return [JobRecord.from_row(row) for row in rows]

    def ids(self, statuses: tuple[str, ...]) -> list[str]:
        marks = ", ".join("?" for _ in statuses)
        with self._lock:
            rows = self._db.execute(f"SELECT id FROM jobs WHERE status IN ({marks}) ORDER BY seq", statuses).fetchall()
        return [row[0] for row in rows]

    def counts(self) -> dict[str, float]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        found = dict(rows)
        return {status: float(found.get(status, 0)) for status in STATUSES}

    def queued_count(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()
        return int(count)

    def claim_next(self) -> JobRecord | None:
        """The queued job to run next, now running (a new run is recorded), or None.

        Shortest first, so an 11-s upload does not wait behind a 20-min one; each second a job has waited
        counts as AGING seconds less audio, so a long job is never starved (unknown durations: last).
        """
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE status = 'queued' "
                "ORDER BY COALESCE(duration, 86400) - (? - created_at) * ?, seq LIMIT 1",
                (now, AGING),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, progress = 0, started_at = ?, "
                "error = NULL, error_code = NULL WHERE id = ?",
                (now, row[0]),
            )
            db.execute(
                "INSERT INTO runs (job_id, attempt, started_at) SELECT id, attempts, ? FROM jobs WHERE id = ?",
                (now, row[0]),
            )
        return self.get(row[0])

    def set_progress(self, job_id: str, progress: float, duration: float | None = None) -> None:
        self._transaction(
            "UPDATE jobs SET progress = ?, duration = COALESCE(?, duration) WHERE id = ? AND status = 'running'",
            (progress, duration, job_id),
        )

    def finish(self, job_id: str, status: str, error: str | None = None, code: str | None = None) -> bool:
        """Mark a queued or running job finished (its open run gets the same outcome); False if it was not."""
        assert status in FINISHED
        now = time.time()
        with self._tx() as db:
            changed = db.execute(
                "UPDATE jobs SET status = ?, error = ?, error_code = ?, finished_at = ?, "
                "progress = CASE WHEN ? = 'succeeded' THEN 1 ELSE progress END, "
                "webhook_status = CASE WHEN webhook_url IS NULL THEN NULL ELSE 'pending' END "
                "WHERE id = ? AND status IN ('queued', 'running')",
                (status, error, code, now, status, job_id),
            ).rowcount
            if changed:
                self._end_run(job_id, status, now)
        return changed == 1

    def requeue(self, job_id: str, outcome: str) -> None:
        """A running job goes back to the queue (shutdown or a killed server); its run ends with `outcome`."""
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = 'queued', progress = 0 WHERE id = ? AND status = 'running'", (job_id,))
            self._end_run(job_id, outcome, now)

    def _end_run(self, job_id: str, outcome: str, now: float) -> None:
        self._db.execute(
            "UPDATE runs SET ended_at = ?, outcome = ? WHERE job_id = ? AND outcome IS NULL", (now, outcome, job_id)
        )

    def request_cancel(self, job_id: str) -> None:
        self._transaction("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))

    def webhook_update(self, job_id: str, status: str, attempts: int, error: str | None) -> None:
        self._transaction(
            "UPDATE jobs SET webhook_status = ?, webhook_attempts = ?, webhook_error = ?, webhook_at = ? WHERE id = ?",
            (status, attempts, error, time.time(), job_id),
        )

    def pending_webhooks(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE webhook_status = 'pending' ORDER BY seq").fetchall()
        return [row[0] for row in rows]

    def runs(self, job_id: str) -> list[tuple[int, str | None]]:
        """(attempt, outcome) of each run of the job, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT attempt, outcome FROM runs WHERE job_id = ? ORDER BY attempt", (job_id,)
            ).fetchall()
        return [(int(attempt), outcome) for attempt, outcome in rows]
