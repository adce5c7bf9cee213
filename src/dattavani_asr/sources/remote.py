"""Remote sources: Google Drive, S3, Google Cloud Storage and plain HTTP(S) URLs.

Constructing them imports nothing heavy and touches no network; each reports a missing optional
dependency (`pip install 'dattavani-asr[remote]'`) only when it is first used.
"""

from __future__ import annotations

from .base import Source
from .cloud import CloudSink, CloudSource
from .gdrive import DriveClient, DriveSink, DriveSource, drive_id
from .http import HttpSource

__all__ = [
    "CloudSink",
    "CloudSource",
    "DriveClient",
    "DriveSink",
    "DriveSource",
    "HttpSource",
    "drive_id",
    "remote_sources",
]


def remote_sources() -> list[Source]:
    """In matching order: Drive URLs before other https URLs."""
    return [DriveSource(), CloudSource("s3"), CloudSource("gs"), HttpSource()]
