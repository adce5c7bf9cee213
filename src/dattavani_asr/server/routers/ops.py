"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..security import MetricsGuard
from ..service import TranscriptionRequest
from ..state import ServerState

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness: answers at once, even while every worker is busy")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def _ready_check(state: ServerState) -> None:
    """Load the default model and decode a second of noise through the batcher once."""
    noise = (np.random.default_rng(0).standard_normal(16000) * 0.01).astype(np.float32)
    with state.models.use(state.settings.default_model) as entry:
        from ...engine import AudioWindow

        decoding = TranscriptionRequest(language="en").options().decoding
        [future] = entry.batcher.submit([AudioWindow(0.0, noise)], decoding, 0)
        future.result(timeout=120)


@router.get("/ready", summary="Readiness: models loaded and a test decode passed")
async def ready(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.server
    if not state.accepting:
        return JSONResponse({"status": "shutting_down"}, status_code=503)
    lock: threading.Lock = state.extras.setdefault("ready_lock", threading.Lock())
    if not state.ready_checked:
        if not lock.acquire(blocking=False):
            return JSONResponse({"status": "starting"}, status_code=503, headers={"Retry-After": "2"})
        try:
            await state.run(_ready_check, state)
            state.ready_checked = True
        except Exception as exc:
            return JSONResponse({"status": "not_ready", "error": str(exc)}, status_code=503)
        finally:
            lock.release()
    return JSONResponse({"status": "ready", "models": sorted(state.models.loaded())})


@router.get("/metrics", summary="Prometheus metrics (open, or its own token: settings.metrics_token)")
async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.server
    MetricsGuard(state.settings)(request)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def gauges(state: ServerState) -> list[tuple[str, str, str, dict[str, Any]]]:
    loaded = state.models.loaded()
    depth = {name: float(entry.batcher.depth) for name, entry in loaded.items()}
    rows = [
        ("dattavani_queue_windows", "Speech windows waiting for the engine", "model", depth),
        (
            "dattavani_requests_in_flight",
            "Synchronous requests in flight",
            "kind",
            {"sync": float(state.admission.active)},
        ),
        ("dattavani_models_loaded", "Loaded models", "model", {name: 1.0 for name in loaded}),
        (
            "dattavani_stream_sessions",
            "Live stream sessions",
            "model",
            {name: float(entry.batcher.streams) for name, entry in loaded.items()},
        ),
        # 1 once /ready passed its test decode, while accepting work (the readiness probe calls /ready)
        (
            "dattavani_ready",
            "Ready: a test decode passed and work is accepted",
            "server",
            {"self": float(state.ready_checked and state.accepting)},
        ),
    ]
    if state.jobs is not None:
        rows.append(("dattavani_jobs", "Jobs by state", "state", state.jobs.counts()))
    return rows
