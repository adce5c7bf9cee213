"""Webhook delivery from its own threads: retries with exponential backoff (tenacity) behind a
circuit breaker per receiving host, so a dead receiver neither blocks job workers nor gets hammered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ..io.retrying import CircuitBreaker
from .errors import APIError
from .security import UrlGuard, check_url_target

log = logging.getLogger("dattavani_asr.server.webhooks")

MAX_BACKOFF_SECONDS = 300.0
# Called with (key, status, attempts, error): status is delivered, failed or pending (delivery interrupted by stop).
ResultCallback = Callable[[str, str, int, str | None], None]


class DeliveryError(Exception):
    """One attempt failed and may be retried."""


class CircuitOpenError(DeliveryError):
    """The receiving host failed too often lately; no request was sent."""


class _Stopped(Exception):
    """The sender is stopping: the delivery stays pending (it is resumed on the next start)."""


@dataclass(frozen=True)
class Delivery:
    key: str
    url: str
    payload: dict[str, Any]
    secret: str | None = None  # the job's own; else the sender's


class WebhookSender:
    """Queue deliveries with `send()`; `threads` daemon threads deliver them and report each outcome."""

    def __init__(
        self,
        on_result: ResultCallback,
        *,
        max_attempts: int = 5,
        backoff: float = 1.0,
        breaker_failures: int = 5,
        breaker_cooldown: float = 30.0,
        guard: UrlGuard | None = None,
        timeout: float = 10.0,
        threads: int = 2,
        secret: str | None = None,
    ) -> None:
        self.on_result = on_result
        self.secret = secret.encode() if secret else None
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.breaker_failures = breaker_failures
        self.breaker_cooldown = breaker_cooldown
        self.guard = guard or UrlGuard()
        self.timeout = timeout
        self.thread_count = threads
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._client: httpx.Client | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)
        for index in range(self.thread_count):
            thread = threading.Thread(target=self._loop, name=f"webhook-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop delivering; deliveries not done stay pending (reported as such) for the next start."""
        self._stopping.set()
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        if self._client is not None:
            self._client.close()
            self._client = None

    def send(self, key: str, url: str, payload: dict[str, Any], secret: str | None = None) -> None:
        self._queue.put(Delivery(key, url, payload, secret))

    def breaker(self, url: str) -> CircuitBreaker:
        host = urlsplit(url).netloc.lower()
        with self._lock:
            if host not in self._breakers:
                self._breakers[host] = CircuitBreaker(self.breaker_failures, self.breaker_cooldown)
            return self._breakers[host]

    def _loop(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None or self._stopping.is_set():
                return
            try:
                self.deliver(delivery)
            except Exception:  # a reporting failure must not kill the delivery thread
                log.exception("webhook delivery for %s failed unexpectedly", delivery.key)

    def deliver(self, delivery: Delivery) -> None:
        """Deliver one webhook (blocking, with retries) and report the outcome."""
        attempts = 0

        def count(state: RetryCallState) -> None:
            nonlocal attempts
            attempts = state.attempt_number

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=self.backoff, max=MAX_BACKOFF_SECONDS),
            retry=retry_if_exception_type(DeliveryError),
            sleep=self._sleep,
            before=count,
            reraise=True,
        )
        try:
            retrying(self._attempt, delivery)
        except _Stopped:
            self.on_result(delivery.key, "pending", attempts, "server stopped before delivery")
        except (DeliveryError, APIError) as exc:
            log.warning("webhook for %s to %s failed after %d attempts: %s", delivery.key, delivery.url, attempts, exc)
            self.on_result(delivery.key, "failed", attempts, str(exc))
        else:
            self.on_result(delivery.key, "delivered", attempts, None)

    def _attempt(self, delivery: Delivery) -> None:
        if self._stopping.is_set():
            raise _Stopped
        target = check_url_target(delivery.url, self.guard)  # APIError: not retried
        breaker = self.breaker(delivery.url)
        if not breaker.allow():
            raise CircuitOpenError(f"circuit open for {urlsplit(delivery.url).netloc} after repeated failures")
        assert self._client is not None
        body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "X-Dattavani-Delivery": delivery.key,
            "User-Agent": "dattavani-asr-webhook",
            "Content-Type": "application/json",
            **self.signature(body, secret=delivery.secret),
            **target.headers,
        }
        try:
            response = self._client.post(target.url, content=body, headers=headers, extensions=target.extensions)
        except httpx.HTTPError as exc:
            breaker.failure()
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            breaker.failure()
            raise DeliveryError(f"receiver answered HTTP {response.status_code}")
        breaker.success()

    def signature(self, body: bytes, now: float | None = None, secret: str | None = None) -> dict[str, str]:
        """`X-Dattavani-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with the job's
        secret, else the server's (none without one). The receiver recomputes it and refuses old timestamps."""
        key = secret.encode() if secret else self.secret
        if key is None:
            return {}
        stamp = str(int(now if now is not None else time.time()))
        digest = hmac.new(key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return {"X-Dattavani-Signature": f"t={stamp},v1={digest}"}

    def _sleep(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise _Stopped
