"""A job as the API (and its webhook) shows it."""

from __future__ import annotations

from typing import Any

from .download import redact
from .store import JobRecord


def _time(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def job_view(job: JobRecord, progress: float | None = None) -> dict[str, Any]:
    """The job summary: status, progress 0–1, error, times (unix seconds), options, webhook status."""
    request = job.options.get("request", {})
    source: dict[str, Any] = (
        {"type": "upload", "filename": job.source}
        if job.source_kind == "upload"
        else {"type": "url", "url": redact(job.source)}
    )
    return {
        "id": job.id,
        "object": "transcription.job",
        "status": job.status,
        "progress": round(job.progress if progress is None else progress, 4),
        "error": {"message": job.error, "code": job.error_code} if job.error else None,
        "created_at": _time(job.created_at),
        "started_at": _time(job.started_at),
        "finished_at": _time(job.finished_at),
        "duration": None if job.duration is None else round(job.duration, 3),
        "model": request.get("model"),
        "task": request.get("task", "transcribe"),
        "language": request.get("language"),
        "word_timestamps": bool(request.get("word_timestamps")),
        "response_format": job.options.get("response_format", "json"),
        "source": source,
        "attempts": job.attempts,
        "result_url": f"/v1/jobs/{job.id}/result" if job.status == "succeeded" else None,
        "webhook": _webhook(job),
    }


def _webhook(job: JobRecord) -> dict[str, Any] | None:
    if not job.webhook_url:
        return None
    return {
        "url": redact(job.webhook_url),
        "status": job.webhook_status,
        "attempts": job.webhook_attempts,
        "error": job.webhook_error,
        "updated_at": _time(job.webhook_at),
    }
