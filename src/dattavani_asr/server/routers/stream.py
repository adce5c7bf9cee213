"""`ws /v1/stream`: live transcription (protocol in docs/streaming.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ...core.errors import DattavaniError, InvalidOptionError
from ...core.options import LANGUAGE, MODEL, OPTIONS, TASK, DecodingOptions, Option
from ...pipeline.live import Event, FallbackChain, PcmDecoder, StreamSession
from ...pipeline.transcriber import fallback_chain
from ..errors import APIError, from_core
from ..state import ServerState

router = APIRouter(tags=["streaming"])
POLICY_VIOLATION = 1008
UNSUPPORTED_DATA = 1003
INTERNAL_ERROR = 1011
logger = logging.getLogger(__name__)


@dataclass
class _Inbox:
    """Audio received but not yet given to the session (the session is busy in a worker thread)."""

    chunks: list[np.ndarray] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ended: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, audio: np.ndarray) -> None:
        with self.lock:
            self.chunks.append(audio)
        self.changed.set()

    def drain_into(self, session: StreamSession) -> int:
        with self.lock:
            chunks, self.chunks = self.chunks, []
        for chunk in chunks:
            session.feed(chunk)
        return len(chunks)


# The transcription options a stream takes as query parameters (with `encoding` and `sample_rate`).
STREAM_OPTIONS = tuple(option for option in OPTIONS.values() if "stream" in option.surfaces)


def stream_option(params: dict[str, str], option: Option) -> str | None:
    """A query parameter of a declared option: its value, checked against the declared choices."""
    value = params.get(option.name_on("stream")) or None
    if value is not None and option.choices and value not in option.choices:
        raise InvalidOptionError(f"{option.name_on('stream')} must be one of {', '.join(option.choices)}")
    return value


def _decoding(state: ServerState, params: dict[str, str], multilingual: bool) -> DecodingOptions:
    language = stream_option(params, LANGUAGE) or (None if multilingual else "en")  # None: detected on first speech
    task = stream_option(params, TASK) or TASK.default
    return DecodingOptions(task=task, language=language, beam_size=state.settings.stream_beam_size)


async def _refuse(websocket: WebSocket, error: APIError, close_code: int) -> None:
    await websocket.send_json({"type": "error", "code": error.code or "error", "message": error.message})
    await websocket.close(code=close_code)


def _open(state: ServerState, params: dict[str, str], stack: contextlib.ExitStack) -> tuple[StreamSession, PcmDecoder]:
    """Blocking: validate parameters, load the models (held until the session ends), make the session."""
    decoder = PcmDecoder(params.get("encoding", "pcm_s16le"), _rate(params.get("sample_rate", "16000")))
    entry = stack.enter_context(state.models.use(stream_option(params, MODEL) or ""))
    decoding = _decoding(state, params, entry.engine.multilingual)
    entry.engine.check_options(decoding)
    session = StreamSession(entry.batcher, decoding, fallback=_fallbacks(state, params, entry, decoding, stack))
    entry.batcher.stream_opened()
    stack.callback(entry.batcher.stream_closed)
    return session, decoder


def _fallbacks(
    state: ServerState, params: dict[str, str], entry: Any, decoding: DecodingOptions, stack: contextlib.ExitStack
) -> FallbackChain:
    """The service's fallback chain for this session's finals (`fallback_model`, `min_confidence`)."""
    detect = not entry.engine.multilingual and stream_option(params, LANGUAGE) is None
    fallbacks = [stack.enter_context(state.models.use(name)) for name in fallback_chain(state.settings.fallback_model)]
    for fallback in fallbacks:
        fallback.engine.check_options(replace(decoding, language=None) if detect else decoding)
    schedulers = tuple(fallback.batcher for fallback in fallbacks)
    return FallbackChain(schedulers, state.settings.min_confidence, detect)


def _rate(value: str) -> int:
    if not value.isdigit():
        raise InvalidOptionError("sample_rate must be an integer number of Hz")
    return int(value)


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
        await _serve(state, websocket, session, decoder)


async def _serve(state: ServerState, websocket: WebSocket, session: StreamSession, decoder: PcmDecoder) -> None:
    inbox = _Inbox()
    worker = asyncio.ensure_future(_process(state, websocket, session, inbox))
    receiver = asyncio.ensure_future(_receive(websocket, session, decoder, inbox))
    try:
        await asyncio.wait({worker, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if worker.done():  # the session failed while audio was still coming
            await worker
        await receiver
        inbox.ended = True
        inbox.changed.set()
        await worker
        await websocket.close()
    except WebSocketDisconnect:
        pass
    except Exception:  # a failed decode or a bug: say so and close, never drop the connection silently
        logger.exception("stream session %s failed", session.session_id)
        await _close_failed(websocket)
    finally:
        worker.cancel()
        receiver.cancel()


async def _close_failed(websocket: WebSocket) -> None:
    with contextlib.suppress(Exception):  # the client may already be gone
        message = "the session failed on the server (see its log); start a new one"
        await websocket.send_json({"type": "error", "code": "internal", "message": message})
        await websocket.close(code=INTERNAL_ERROR)


async def _receive(websocket: WebSocket, session: StreamSession, decoder: PcmDecoder, inbox: _Inbox) -> None:
    """Read frames until the client's `end`; bad frames get an error event and are skipped."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("bytes") is not None:
            try:
                inbox.put(decoder.decode(message["bytes"]))
            except InvalidOptionError as exc:
                await websocket.send_json({"type": "error", "code": "bad_frame", "message": str(exc)})
            continue
        if _control(message.get("text") or "", session, websocket) == "end":
            return
        await _flush_errors(websocket, session)


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


async def _process(state: ServerState, websocket: WebSocket, session: StreamSession, inbox: _Inbox) -> None:
    """Run the session every check interval while audio arrives; finish after `end`."""
    interval = session.policy.check_interval
    while not inbox.ended:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(inbox.changed.wait(), timeout=interval)
        inbox.changed.clear()
        if inbox.ended:
            break
        lagging = session.lagging
        started = asyncio.get_running_loop().time()
        events = await state.run(_update, session, inbox)
        _observe_finals(state, session, events)
        await _send(websocket, events)
        if session.lagging != lagging:
            lag = {"type": "lag", "behind": _behind(session), "step": round(session.step, 2)}
            await _send(websocket, [lag | {"audio_received": session.audio_received}])
        # After a decode, look at the audio that came meanwhile at once (an utterance may have ended).
        await asyncio.sleep(max(0.0, interval - 0.02 - (asyncio.get_running_loop().time() - started)))
    inbox.drain_into(session)
    events = await state.run(session.finish)
    _observe_finals(state, session, events)
    await _send(websocket, events)


def _observe_finals(state: ServerState, session: StreamSession, events: list[Event]) -> None:
    """Each final's latency: how much audio had arrived past the utterance's end when it was sent."""
    for event in events:
        if event["type"] == "final":
            latency = max(0.0, event["audio_received"] - event["end"])
            state.metrics.stream_final_seconds.labels(model=session.batcher.engine.name).observe(latency)


def _update(session: StreamSession, inbox: _Inbox) -> list[Event]:
    return session.update() if inbox.drain_into(session) else []


def _behind(session: StreamSession) -> float:
    return round(max(0.0, session.audio_received - session.last_update_audio), 2)


async def _send(websocket: WebSocket, events: list[Event]) -> None:
    for event in events:
        await websocket.send_json(event)
