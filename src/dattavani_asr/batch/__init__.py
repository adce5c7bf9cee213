"""Batch transcription: resumable runs over folders, manifests, URLs and cloud storage."""

from .runner import BatchConfig, BatchRun, BatchSummary
from .state import RunState

__all__ = ["BatchConfig", "BatchRun", "BatchSummary", "RunState"]
