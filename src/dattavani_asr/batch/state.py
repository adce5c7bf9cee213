"""Run state in SQLite (WAL): which file is done, failed or pending, so any run can resume.

A file's identity is its URI plus size and version (mtime, ETag…) plus a hash of the options
that shape its transcript: if any of these change, the file is transcribed again. The finished
windows of a long file are kept too (`pipeline.checkpoint`), so a killed run resumes inside it. Outputs are
written (atomically) before a file is marked done, so a run killed at any moment leaves either
no output or a complete one, and the next run finishes exactly what is missing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..io.sources.base import SourceItem
from ..pipeline.checkpoint import WindowLog

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    uri TEXT PRIMARY KEY,
    size INTEGER,
    version TEXT NOT NULL,
    options TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    error_type TEXT,
    audio_seconds REAL,
    wall_seconds REAL,
    outputs TEXT,
    updated_at REAL NOT NULL
);
"""

STATE_FILENAME = ".dattavani-batch.sqlite3"


@dataclass(frozen=True)
class FileRecord:
    uri: str
    status: str
    attempts: int
    error: str | None
    error_type: str | None
    audio_seconds: float | None
    wall_seconds: float | None


class RunState:
    """Thread-safe access to the state database of one output location."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self.windows = WindowLog(self._db, self._lock)  # finished windows of long files, to resume them

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def decide(self, item: SourceItem, options: str, *, retry_failed: bool, max_attempts: int) -> str:
        """'skip' (done, or failed and not retried) or 'run'; registers the item as pending."""
        with self._lock:
            row = self._db.execute(
                "SELECT size, version, options, status, attempts FROM files WHERE uri = ?", (item.uri,)
            ).fetchone()
            same = row is not None and (row[0], row[1], row[2]) == (item.size, item.version, options)
            if same and row[3] == "done":
                return "skip"
            if same and row[3] == "failed" and (not retry_failed or row[4] >= max_attempts):
                return "skip"
            attempts = row[4] if same else 0
            if not same:  # another version of the file, or other options: what was decoded is no use
                self._db.execute("DELETE FROM finished_windows WHERE recording = ?", (item.uri,))
            self._db.execute(
                "INSERT OR REPLACE INTO files (uri, size, version, options, status, attempts, updated_at) "
                "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                (item.uri, item.size, item.version, options, attempts, time.time()),
            )
            return "run"

    def started(self, uri: str) -> None:
        self._update("UPDATE files SET status='running', attempts=attempts+1, updated_at=? WHERE uri=?", uri)

    def finished(self, uri: str, audio_seconds: float, wall_seconds: float, outputs: list[str]) -> None:
        """Record the file done and forget its stored windows, in one transaction: a kill between the two
        would leave the windows of a done file in the database for good."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "UPDATE files SET status='done', error=NULL, error_type=NULL, audio_seconds=?, wall_seconds=?, "
                    "outputs=?, updated_at=? WHERE uri=?",
                    (audio_seconds, wall_seconds, json.dumps(outputs), time.time(), uri),
                )
                self._db.execute("DELETE FROM finished_windows WHERE recording = ?", (uri,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def failed(self, uri: str, error: BaseException, wall_seconds: float) -> None:
        self._update(
            "UPDATE files SET status='failed', error=?, error_type=?, wall_seconds=?, updated_at=? WHERE uri=?",
            str(error) or type(error).__name__,
            type(error).__name__,
            wall_seconds,
            uri=uri,
        )

    def _update(self, sql: str, *values: object, uri: str | None = None) -> None:
        params = (*values, time.time(), uri) if uri is not None else (time.time(), *values)
        with self._lock:
            self._db.execute(sql, params)

    def outputs_taken(self) -> dict[str, str]:
        """Outputs of finished items (case-folded path or URI) and the source each belongs to."""
        with self._lock:
            rows = self._db.execute("SELECT uri, outputs FROM files WHERE status = 'done'").fetchall()
        taken: dict[str, str] = {}
        for uri, outputs in rows:
            for output in json.loads(outputs or "[]"):
                taken[str(output).casefold()] = uri
        return taken

    def records(self, uris: list[str] | None = None) -> list[FileRecord]:
        query = "SELECT uri, status, attempts, error, error_type, audio_seconds, wall_seconds FROM files"
        with self._lock:
            rows = self._db.execute(query + " ORDER BY uri").fetchall()
        wanted = set(uris) if uris is not None else None
        return [FileRecord(*row) for row in rows if wanted is None or row[0] in wanted]
