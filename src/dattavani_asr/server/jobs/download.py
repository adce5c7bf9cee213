"""Fetch a URL job's audio: streamed, size-limited, cancellable, retried, every redirect hop checked."""

from __future__ import annotations

import os
import threading
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from ...io.retrying import (
    DEFAULT_POLICY,
    CircuitOpenError,
    RetryPolicy,
    TransientError,
    call_with_retries,
    guarded,
    raise_if_transient,
)
from ..errors import APIError
from ..security import PinnedUrl, UrlGuard, check_url_target
from ..service import CancelledError

MAX_REDIRECTS = 5
CHUNK_BYTES = 1 << 20


class JobFailure(Exception):
    """A job cannot finish, for a reason the caller should read (`code` as in API errors)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def redact(url: str) -> str:
    """The URL without its query, fragment or credentials (signed URLs carry secrets there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def download(
    url: str,
    dest: Path,
    *,
    limit: int,
    guard: UrlGuard,
    cancel: threading.Event,
    policy: RetryPolicy | None = None,
) -> int:
    """Save `url` to `dest` (atomically); returns the byte count. Failures are `JobFailure`s.

    Connection errors, timeouts, 429 and 5xx are retried with backoff (`policy`) behind the host's
    circuit breaker; each attempt starts again from `url`, checking every redirect hop.
    """

    def pause(seconds: float) -> None:
        if cancel.wait(seconds):
            raise CancelledError("download cancelled")

    timeout = httpx.Timeout(60.0, connect=10.0)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            attempt = partial(_attempt, client, url, dest, limit=limit, guard=guard, cancel=cancel)
            return call_with_retries(attempt, policy or DEFAULT_POLICY, sleep=pause)
    except (TransientError, CircuitOpenError) as exc:
        raise JobFailure(f"cannot download {redact(url)}: {exc}", "download_failed") from exc
    except httpx.HTTPError as exc:
        raise JobFailure(f"cannot download {redact(url)}: {type(exc).__name__}: {exc}", "download_failed") from exc


def _attempt(
    client: httpx.Client, url: str, dest: Path, *, limit: int, guard: UrlGuard, cancel: threading.Event
) -> int:
    for _ in range(MAX_REDIRECTS + 1):
        target = _check_target(url, guard)
        headers = {"User-Agent": "dattavani-asr", **target.headers}
        with guarded(url), client.stream("GET", target.url, headers=headers, extensions=target.extensions) as response:
            if response.is_redirect and "location" in response.headers:
                url = str(httpx.URL(url).join(response.headers["location"]))
                continue
            _check_response(response, url, limit)
            return _save(response, dest, limit, cancel)
    raise JobFailure(f"cannot download {redact(url)}: more than {MAX_REDIRECTS} redirects", "download_failed")


def _check_target(url: str, guard: UrlGuard) -> PinnedUrl:
    try:
        return check_url_target(url, guard)
    except APIError as error:
        raise JobFailure(error.message, error.code or "invalid_url") from error


def _check_response(response: httpx.Response, url: str, limit: int) -> None:
    raise_if_transient(response)
    if response.status_code != 200:
        raise JobFailure(f"cannot download {redact(url)}: HTTP {response.status_code}", "download_failed")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise JobFailure(f"{redact(url)} is larger than the {limit / 1048576:g} MB limit", "file_too_large")


def _save(response: httpx.Response, dest: Path, limit: int, cancel: threading.Event) -> int:
    part = dest.with_name(dest.name + ".part")
    size = 0
    try:
        with part.open("wb") as out:
            for chunk in response.iter_bytes(CHUNK_BYTES):
                if cancel.is_set():
                    raise CancelledError("download cancelled")
                size += len(chunk)
                if size > limit:
                    raise JobFailure(
                        f"{redact(str(response.url))} is larger than the {limit / 1048576:g} MB limit", "file_too_large"
                    )
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return size
