"""Retries with exponential backoff (tenacity) behind a circuit breaker per host, for outgoing HTTP.

An attempt raises `TransientError` for what another attempt may fix (connection refused or
dropped, timeout, HTTP 429 or 5xx); anything else fails at once. `guarded(url)` wraps one
request: it refuses to send while the host's breaker is open and records the outcome.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

MAX_ATTEMPTS = 4
BACKOFF_SECONDS = 1.0  # first wait; doubled after each failed attempt
MAX_BACKOFF_SECONDS = 30.0
MAX_RETRY_AFTER_SECONDS = 60.0  # a server asking for a longer pause gets this long
BREAKER_FAILURES = 5
BREAKER_COOLDOWN_SECONDS = 30.0

# Errors of the connection, not of the request: another attempt may succeed.
TRANSIENT_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

T = TypeVar("T")


class TransientError(Exception):
    """One attempt failed in a way that another attempt may not."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CircuitOpenError(Exception):
    """The host failed too often lately; no request was sent."""

    def __init__(self, host: str) -> None:
        super().__init__(f"{host} failed repeatedly; not contacted again for a while (circuit open)")
        self.host = host


class CircuitBreaker:
    """Closed → open after `failures` consecutive failures → half-open (one trial call) after `cooldown`."""

    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self.state = "closed"
        self.consecutive = 0
        self.opened_at = 0.0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether a call may go out now (in half-open state, only the one trial call)."""
        with self._lock:
            if self.state == "closed":
                return True
            if self.state == "open" and self.clock() - self.opened_at >= self.cooldown:
                self.state = "half_open"
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self.state = "closed"
            self.consecutive = 0

    def failure(self) -> None:
        with self._lock:
            self.consecutive += 1
            if self.state == "half_open" or self.consecutive >= self.failures:
                self.state = "open"
                self.opened_at = self.clock()


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def host_of(url: str) -> str:
    """`host[:port]` of a URL, lower-case and without credentials."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return f"{host}:{parts.port}" if parts.port else host


def breaker_for(host: str) -> CircuitBreaker:
    """The process-wide breaker of `host` (every source and download to that host shares it)."""
    with _breakers_lock:
        breaker = _breakers.get(host)
        if breaker is None:
            breaker = _breakers[host] = CircuitBreaker(BREAKER_FAILURES, BREAKER_COOLDOWN_SECONDS)
        return breaker


@contextmanager
def guarded(url: str) -> Iterator[None]:
    """One request to `url`'s host through its breaker; transient transport errors become `TransientError`."""
    host = host_of(url)
    breaker = breaker_for(host)
    if not breaker.allow():
        raise CircuitOpenError(host)
    try:
        yield
    except TRANSIENT_TRANSPORT_ERRORS as exc:
        breaker.failure()
        raise TransientError(f"{type(exc).__name__}: {_first_line(exc)}") from exc
    except TransientError:
        breaker.failure()
        raise
    except BaseException:
        breaker.success()  # the host answered (404, too large, cancelled...): it is up
        raise
    breaker.success()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def raise_if_transient(response: httpx.Response) -> None:
    """Raise `TransientError` for HTTP 429 and 5xx (with the server's Retry-After, if any)."""
    status = response.status_code
    if status == 429 or status >= 500:
        reason = f"HTTP {status} {response.reason_phrase}".strip()
        raise TransientError(reason, retry_after_seconds(response.headers.get("retry-after")))


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds from now: either a number of seconds or an HTTP date."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry `TransientError`s."""

    attempts: int = MAX_ATTEMPTS
    backoff: float = BACKOFF_SECONDS
    max_backoff: float = MAX_BACKOFF_SECONDS
    max_retry_after: float = MAX_RETRY_AFTER_SECONDS

    def wait(self, state: RetryCallState) -> float:
        """Exponential backoff, or longer when the server asked for it (up to `max_retry_after`)."""
        exponential = float(wait_exponential(multiplier=self.backoff, max=self.max_backoff)(state))
        error = state.outcome.exception() if state.outcome is not None else None
        asked = error.retry_after if isinstance(error, TransientError) else None
        return max(exponential, min(asked, self.max_retry_after)) if asked is not None else exponential


DEFAULT_POLICY = RetryPolicy()


def call_with_retries(attempt: Callable[[], T], policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep) -> T:
    """`attempt()`, repeated on `TransientError` per `policy`; the last one says how many attempts were made."""
    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=policy.wait,
        retry=retry_if_exception_type(TransientError),
        sleep=sleep,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except TransientError as exc:
        attempts = retrying.statistics.get("attempt_number", 1)
        raise TransientError(f"{exc}, after {attempts} attempt{'s' if attempts > 1 else ''}") from exc
