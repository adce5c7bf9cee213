"""`ws /v1/stream`: live transcription (protocol in docs/streaming.md), over the shared `live_driver`."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket

from ...core.errors import DattavaniError, InvalidOptionError
from ...core.options import LANGUAGE, MODEL, OPTIONS, TASK, Option
from ...pipeline.live import Event, StreamSession
from ..errors import APIError, from_core
from ..live_driver import AudioDecoder, LiveDriver, SessionRequest, drive, next_message, open_session, sample_rate
from ..state import ServerState

router = APIRouter(tags=["streaming"])
POLICY_VIOLATION = 1008
UNSUPPORTED_DATA = 1003
INTERNAL_ERROR = 1011
PCM_ENCODINGS = ("pcm_s16le", "pcm_f32le")

# The transcription options a stream takes as query parameters (with `encoding` and `sample_rate`).
STREAM_OPTIONS = tuple(option for option in OPTIONS.values() if "stream" in option.surfaces)


def stream_option(params: dict[str, str], option: Option) -> str | None:
    """A query parameter of a declared option: its value, checked against the declared choices."""
    value = params.get(option.name_on("stream")) or None
    if value is not None and option.choices and value not in option.choices:
        raise InvalidOptionError(f"{option.name_on('stream')} must be one of {', '.join(option.choices)}")
    return value


async def _refuse(websocket: WebSocket, error: APIError, close_code: int) -> None:
    await websocket.send_json({"type": "error", "code": error.code or "error", "message": error.message})
    await websocket.close(code=close_code)


def _open(
    state: ServerState, params: dict[str, str], stack: contextlib.ExitStack
) -> tuple[StreamSession, AudioDecoder]:
    """Blocking: validate parameters, load the models (held until the session ends), make the session."""
    encoding = params.get("encoding", "pcm_s16le")
    if encoding not in PCM_ENCODINGS:
        raise InvalidOptionError(f"encoding must be one of {', '.join(PCM_ENCODINGS)}")
    decoder = AudioDecoder(encoding, sample_rate(params.get("sample_rate", "16000")))
    task = stream_option(params, TASK) or TASK.default
    request = SessionRequest(stream_option(params, MODEL) or "", stream_option(params, LANGUAGE), task)
    return open_session(state, request, stack), decoder


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket) -> None:
    state: ServerState = websocket.app.state.server
    await websocket.accept()
    try:
        state.auth(websocket)
    except APIError as exc:
        await _refuse(websocket, exc, POLICY_VIOLATION)
        return
    with contextlib.ExitStack() as stack:
        try:
            session, decoder = await state.run(_open, state, dict(websocket.query_params), stack)
        except DattavaniError as exc:
            await _refuse(websocket, from_core(exc), UNSUPPORTED_DATA)
            return
        ready = {"type": "ready", "session_id": session.session_id, "model": session.batcher.engine.name}
        await websocket.send_json(ready | {"language": session.decoding.language, "sample_rate": decoder.sample_rate})
        driver = LiveDriver(state, session, lambda events: _send(websocket, events))
        await drive(websocket, driver, lambda: _receive(websocket, driver, decoder), lambda: _close_failed(websocket))


async def _close_failed(websocket: WebSocket) -> None:
    message = "the session failed on the server (see its log); start a new one"
    await websocket.send_json({"type": "error", "code": "internal", "message": message})
    await websocket.close(code=INTERNAL_ERROR)


async def _receive(websocket: WebSocket, driver: LiveDriver, decoder: AudioDecoder) -> None:
    """Read frames until the client's `end`; bad frames get an error event and are skipped."""
    while True:
        data, text = await next_message(websocket)
        if data is not None:
            try:
                driver.put(decoder.decode(data))
            except InvalidOptionError as exc:
                await websocket.send_json({"type": "error", "code": "bad_frame", "message": str(exc)})
            continue
        if _control(text or "", driver.session, websocket) == "end":
            return
        await _flush_errors(websocket, driver.session)


def _control(text: str, session: StreamSession, websocket: WebSocket) -> str | None:
    try:
        command: Any = json.loads(text)
        kind = command.get("type") if isinstance(command, dict) else None
    except ValueError:
        kind = None
    if kind == "end":
        return "end"
    if kind == "config":
        try:
            session.set_options(language=command.get("language"), task=command.get("task"))
        except DattavaniError as exc:
            session.pending_errors.append({"type": "error", "code": "bad_config", "message": str(exc)})
        return "config"
    session.pending_errors.append({"type": "error", "code": "bad_message", "message": f"unknown message: {text[:80]}"})
    return None


async def _flush_errors(websocket: WebSocket, session: StreamSession) -> None:
    while session.pending_errors:
        await websocket.send_json(session.pending_errors.pop(0))


async def _send(websocket: WebSocket, events: list[Event]) -> None:
    for event in events:  # this protocol's partials carry no words
        await websocket.send_json(
            {key: value for key, value in event.items() if key != "words"} if event["type"] == "partial" else event
        )
