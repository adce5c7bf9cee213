"""Remote sources: Google Drive, S3, Google Cloud Storage and plain HTTP(S) URLs.

Constructing them imports nothing heavy and touches no network; each reports a missing optional
dependency (`pip install 'dattavani-asr[remote]'`) only when it is first used.
"""

from __future__ import annotations

from ...core.errors import InvalidOptionError
from .base import Sink, Source
from .cloud import CloudSink, CloudSource, CloudTreeSink, cloud_filesystem
from .gdrive import FOLDER_MIME, DriveClient, DriveSink, DriveSource, DriveTreeSink, drive_id
from .http import HttpSource

__all__ = [
    "CloudSink",
    "CloudSource",
    "CloudTreeSink",
    "DriveClient",
    "DriveSink",
    "DriveSource",
    "DriveTreeSink",
    "HttpSource",
    "drive_id",
    "remote_sources",
    "tree_sink",
]


def remote_sources() -> list[Source]:
    """In matching order: Drive URLs before other https URLs."""
    return [DriveSource(), CloudSource("s3"), CloudSource("gs"), HttpSource()]


def tree_sink(uri: str) -> Sink:
    """A sink mirroring items under the remote folder `uri`; a clear error when it cannot be written."""
    scheme = uri.split("://", 1)[0].lower()
    if scheme in ("s3", "gs"):
        cloud_filesystem(scheme)  # reports a missing extra now, not after hours of work
        return CloudTreeSink(CloudSource(scheme), uri)
    folder_id = drive_id(uri)
    if folder_id is not None:
        client = DriveClient()
        if client.metadata(folder_id).get("mimeType") != FOLDER_MIME:
            raise InvalidOptionError(f"--output-dir {uri}: not a Google Drive folder")
        return DriveTreeSink(client, folder_id)
    raise InvalidOptionError(
        f"--output-dir {uri}: cannot write there; use a local folder, s3://bucket/prefix, gs://bucket/prefix "
        "or a Google Drive folder"
    )
