"""API keys, per-key rate limits, the upload size limit, and the URL-job target guard."""

from __future__ import annotations

import hmac
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError, api_error_response
from .settings import ServerSettings

PUBLIC_PATHS = ("/health",)


class BodyTooLargeError(APIError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the {limit / 1048576:g} MB limit", code="payload_too_large")


class BodyLimitMiddleware:
    """Refuses bodies over the limit: at once from Content-Length, or as soon as the stream passes it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await api_error_response(BodyTooLargeError(self.limit))(scope, receive, send)
            return
        state = {"received": 0, "exceeded": False, "replaced": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.limit:
                    state["exceeded"] = True
                    raise BodyTooLargeError(self.limit)
            return message

        async def guarded_send(message: Message) -> None:
            # FastAPI turns errors while parsing a form into a 400; the caller must see the 413.
            if state["exceeded"] and message["type"] == "http.response.start":
                state["replaced"] = True
                await api_error_response(BodyTooLargeError(self.limit))(scope, receive, send)
            elif not state["replaced"]:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)


class AuthGateMiddleware:
    """With API keys set, an /v1/ HTTP request without a valid key is answered 401 before any of its body is
    read: an unauthenticated client can make the server neither spool an upload nor parse a form. (The route's
    own dependency then identifies the caller and applies its rate limit.)"""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.keys = [key.encode() for key in settings.api_keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and scope.get("method") != "OPTIONS"  # CORS preflights carry no key
        if guarded and self.keys and scope.get("path", "").startswith("/v1/"):
            key = bearer_key(HTTPConnection(scope))
            error = _key_error(key, self.keys)
            if error is not None:
                await api_error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _key_error(key: str | None, keys: list[bytes]) -> APIError | None:
    if key is None:
        return APIError(401, "missing API key: send Authorization: Bearer <key>", code="missing_api_key")
    if not any(hmac.compare_digest(key.encode(), known) for known in keys):
        return APIError(401, "incorrect API key", code="invalid_api_key")
    return None


def bearer_key(request: HTTPConnection) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.query_params.get("api_key")


class Authenticator:
    def __init__(self, settings: ServerSettings) -> None:
        self.keys = [key.encode() for key in settings.api_keys]
        self.limiter = RateLimiter(settings.rate_limit_per_minute)

    def __call__(self, request: HTTPConnection) -> str:
        """The caller's identity (its key, or its address when no keys are configured)."""
        key = bearer_key(request)
        if self.keys:
            error = _key_error(key, self.keys)
            if error is not None:
                raise error
            identity = str(key)
        else:
            identity = request.client.host if request.client else "-"
        self.limiter.check(identity)
        return identity


class MetricsGuard:
    """Who may read /metrics: anyone (no `metrics_token`: Prometheus scrapes without the API keys), or
    whoever sends that token (`Authorization: Bearer`, as Prometheus' `authorization` block does)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.token = settings.metrics_token.encode() if settings.metrics_token else None

    def __call__(self, request: HTTPConnection) -> None:
        if self.token is None:
            return
        sent = bearer_key(request)
        if sent is None or not hmac.compare_digest(sent.encode(), self.token):
            raise APIError(
                401,
                "/metrics needs its token: send Authorization: Bearer <metrics_token>",
                code="invalid_metrics_token",
            )


class RateLimiter:
    """A token bucket per caller: `per_minute` requests per minute, bursts up to the same number."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, identity: str) -> None:
        if self.per_minute <= 0:
            return
        rate = self.per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(identity, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[identity] = (tokens, now)
                wait = max(1, round((1.0 - tokens) / rate))
                raise APIError(
                    429,
                    f"rate limit of {self.per_minute} requests per minute reached",
                    code="rate_limit_exceeded",
                    headers={"Retry-After": str(wait)},
                )
            self._buckets[identity] = (tokens - 1.0, now)


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (the guard's only DNS lookup: what it checks is what is used)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)]


@dataclass(frozen=True)
class PinnedUrl:
    """A checked URL rewritten to the address that was checked, so a second DNS answer cannot redirect it.

    Send the request to `url` with `headers` (the original Host) and `extensions` (TLS server name:
    certificates are still verified against the original host name).
    """

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UrlGuard:
    """Which hosts URL jobs and webhooks may reach: public addresses, plus `allowed_hosts` (`host` or
    `host:port`, e.g. an internal object store) or, with `allow_private`, anything."""

    allow_private: bool = False
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> UrlGuard:
        hosts = frozenset(host.strip().lower() for host in settings.allowed_url_hosts if host.strip())
        return cls(settings.allow_private_urls, hosts)

    def allows_host(self, host: str, port: int | None) -> bool:
        return self.allow_private or host in self.allowed_hosts or f"{host}:{port}" in self.allowed_hosts

    def check(self, url: str) -> PinnedUrl:
        """Refuse non-HTTP URLs and hosts resolving to non-public addresses; pin the rest (see PinnedUrl)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host:
            raise APIError(400, "url must be an http(s) URL with a host", code="invalid_url", param="url")
        if self.allows_host(host, parts.port):
            return PinnedUrl(url)
        addresses = _public_addresses(host, parts.port or (443 if parts.scheme == "https" else 80))
        literal = f"[{addresses[0]}]" if ":" in addresses[0] else addresses[0]
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (f"{userinfo}@" if userinfo else "") + literal + (f":{parts.port}" if parts.port else "")
        pinned = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        host_header = parts.netloc.rpartition("@")[2]
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        return PinnedUrl(pinned, {"Host": host_header}, extensions)


def _public_addresses(host: str, port: int) -> list[str]:
    try:
        addresses = resolve(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "bad host name"
        raise APIError(400, f"cannot resolve {host}: {reason}", code="invalid_url", param="url") from exc
    for text in addresses:
        address = ipaddress.ip_address(text.partition("%")[0])
        if not address.is_global or address.is_multicast:
            raise APIError(
                400,
                f"url host {host} resolves to a non-public address ({address}); refused",
                code="forbidden_url",
                param="url",
            )
    if not addresses:
        raise APIError(400, f"cannot resolve {host}", code="invalid_url", param="url")
    return addresses


def check_url_target(url: str, guard: UrlGuard) -> PinnedUrl:
    """`guard.check(url)`: the URL pinned to its checked address, or an APIError saying why not."""
    return guard.check(url)
