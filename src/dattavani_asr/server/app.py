"""`create_app(settings)`: the FastAPI application, its routers, middleware and lifecycle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .errors import install_handlers
from .metrics import Metrics
from .model_manager import ModelManager
from .observability import RequestContextMiddleware, setup_tracing
from .routers import audio, listen, models, ops, realtime, stream, web
from .security import Authenticator, AuthGateMiddleware, BodyLimitMiddleware
from .service import TranscriptionService
from .settings import ServerSettings, load_server_settings
from .state import Admission, ServerState

log = logging.getLogger("dattavani_asr.server")


def build_state(settings: ServerSettings) -> ServerState:
    metrics = Metrics()
    models_ = ModelManager(
        settings,
        on_load=lambda name, seconds: metrics.model_load_seconds.labels(name).set(seconds),
        on_batch=metrics.batch_observer,
    )
    service = TranscriptionService(models_, in_flight_windows=max(2, settings.batch_size))
    state = ServerState(
        settings=settings,
        metrics=metrics,
        models=models_,
        service=service,
        auth=Authenticator(settings),
        pool=ThreadPoolExecutor(max_workers=settings.request_workers, thread_name_prefix="request"),
        admission=Admission(settings.max_pending_requests),
    )
    from .jobs import JobManager

    state.jobs = JobManager(settings, service, metrics)
    metrics.add_gauges(lambda: ops.gauges(state))
    return state


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServerState = app.state.server
    settings = state.settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.preload:
        await state.run(state.models.preload)
    state.jobs.start()
    log.info("serving on models %s (default %s)", ", ".join(state.models.available()), settings.default_model)
    try:
        yield
    finally:
        state.accepting = False
        await state.run(state.jobs.stop, settings.shutdown_grace_seconds)
        state.pool.shutdown(wait=True, cancel_futures=True)
        state.models.close()
        log.info("stopped")


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """A ready-to-serve app; nothing loads until the lifespan starts (models on first use or preload)."""
    settings = settings or load_server_settings()
    app = FastAPI(
        title="Dattavani ASR",
        version=_version(),
        description="Speech-to-text with an OpenAI-compatible API, durable jobs and live streaming.",
        lifespan=_lifespan,
    )
    state = build_state(settings)
    app.state.server = state
    app.state.log = log
    install_handlers(app)
    live = (stream.router, realtime.router, listen.router)  # one live core, three protocols
    for router in (ops.router, audio.router, models.router, _jobs_router(), *live, web.router):
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_upload_bytes)
    app.add_middleware(AuthGateMiddleware, settings=settings)  # outside the body limit: auth before any body
    if settings.cors_origins:  # outside the gate: preflights pass, refusals carry CORS headers
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware, metrics=state.metrics)
    setup_tracing(app)
    return app


def _jobs_router() -> APIRouter:
    from .routers import jobs

    return jobs.router


def _version() -> str:
    from .. import __version__

    return __version__
