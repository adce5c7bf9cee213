"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, with the right status."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..core import errors as core

# Our typed errors, mapped onto HTTP: what the caller sent is wrong (4xx) or we failed (5xx).
STATUS_BY_ERROR: tuple[tuple[type[core.DattavaniError], int, str], ...] = (
    (core.UndecodableAudioError, 415, "unsupported_media"),
    (core.NoAudioStreamError, 415, "no_audio_stream"),
    (core.EmptyAudioError, 400, "empty_audio"),
    (core.InvalidOptionError, 400, "invalid_option"),
    (core.UnreadablePathError, 400, "unreadable_input"),
    (core.ModelError, 503, "model_unavailable"),
)


class APIError(Exception):
    """An error the API returns as-is to the caller."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    @property
    def type(self) -> str:
        if self.status == 401:
            return "authentication_error"
        if self.status == 429:
            return "rate_limit_error"
        return "invalid_request_error" if self.status < 500 else "server_error"


def error_body(message: str, error_type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def api_error_response(error: APIError) -> JSONResponse:
    body = error_body(error.message, error.type, error.code, error.param)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def from_core(error: core.DattavaniError) -> APIError:
    for kind, status, code in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return APIError(status, str(error), code=code)
    return APIError(500, str(error), code="internal_error")


def busy(retry_after: float, what: str = "server") -> APIError:
    seconds = max(1, round(retry_after))
    return APIError(429, f"{what} is busy; retry after {seconds} s", code="busy", headers={"Retry-After": str(seconds)})


def _counted(request: Request, error: APIError) -> JSONResponse:
    """The error's response, counted in `dattavani_errors_total` by its type."""
    state = getattr(request.app.state, "server", None)
    if state is not None:
        state.metrics.errors.labels(type=error.type).inc()
    return api_error_response(error)


def install_handlers(app: FastAPI) -> None:
    """Every error leaves the app in OpenAI's error shape, never as a traceback."""

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        return _counted(request, exc)

    @app.exception_handler(core.DattavaniError)
    async def _core(request: Request, exc: core.DattavaniError) -> JSONResponse:
        return _counted(request, from_core(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
        message = f"{param}: {first.get('msg', 'invalid request')}" if param else str(first.get("msg", "invalid"))
        return _counted(request, APIError(400, message, code="invalid_parameter", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _counted(request, APIError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request.app.state.log.exception("unhandled error on %s", request.url.path)
        return _counted(request, APIError(500, "internal server error", code="internal_error"))
