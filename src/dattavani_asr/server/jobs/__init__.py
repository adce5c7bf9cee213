"""Durable transcription jobs: SQLite state, worker threads, URL downloads, webhooks."""

from .manager import JobManager
from .store import FINISHED, STATUSES, JobRecord, JobStore

__all__ = ["FINISHED", "STATUSES", "JobManager", "JobRecord", "JobStore"]
