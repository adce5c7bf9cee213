"""What the routers share: settings, models, the transcription service, pools, metrics, jobs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request

from .errors import APIError, busy
from .metrics import Metrics
from .model_manager import ModelManager
from .security import Authenticator
from .service import TranscriptionService
from .settings import ServerSettings

T = TypeVar("T")


class Admission:
    """Counts synchronous requests in flight; beyond the limit callers get 429 with Retry-After."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            if self.active >= self.limit:
                raise busy(2.0, "transcription queue")
            self.active += 1

    def release(self) -> None:
        with self._lock:
            self.active -= 1

    def __enter__(self) -> Admission:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class ServerState:
    settings: ServerSettings
    metrics: Metrics
    models: ModelManager
    service: TranscriptionService
    auth: Authenticator
    pool: ThreadPoolExecutor
    admission: Admission
    jobs: Any = None
    accepting: bool = True
    ready_checked: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work on the request pool, never on the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: function(*args, **kwargs))


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    if not state.accepting:
        raise APIError(503, "server is shutting down", code="shutting_down", headers={"Retry-After": "5"})
    return state


def authorized(request: Request) -> str:
    state: ServerState = request.app.state.server
    identity: str = state.auth(request)
    return identity
