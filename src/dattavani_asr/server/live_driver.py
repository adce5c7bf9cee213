"""What every live protocol shares (`/v1/stream`, `/v1/realtime`, `/v1/listen`): one driving loop.

A protocol router authenticates, opens a `StreamSession` (`open_session`), makes a `LiveDriver` with
a function that translates the session's events into its own messages, and runs `drive` with its
receive loop. The receive loop hands the driver audio (`put`) and commands (`flush`: finals for all
speech so far now; `discard`: drop the audio not yet final) in the order they came; the driver runs
the session on the request pool every check interval (never on the event loop), observes the finals'
latency, and after `end` finishes the session. Commands come back as events in the same order:
`{"type": "flushed", "events": [...]}` and `{"type": "discarded"}`; `lag` events come from here too.
The session's state (`speech_onset`, `audio_received`) may be read inside `emit`: the session is idle
while its events are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from fastapi import WebSocket, WebSocketDisconnect
from starlette.requests import HTTPConnection

from ..core.errors import InvalidOptionError
from ..core.options import DecodingOptions
from ..pipeline.live import Event, FallbackChain, PcmDecoder, StreamSession
from ..pipeline.transcriber import fallback_chain
from .errors import APIError, api_error_response
from .state import ServerState

Emit = Callable[[list[Event]], Awaitable[None]]
FLUSH, DISCARD = "flush", "discard"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionRequest:
    """What a protocol asked of a session: a model ("" or whisper-1: the default), language, task."""

    model: str = ""
    language: str | None = None  # None: detected on first speech (English-only models: en)
    task: str = "transcribe"


def open_session(state: ServerState, request: SessionRequest, stack: contextlib.ExitStack) -> StreamSession:
    """Blocking: load the models (held until `stack` closes) and make the session; typed errors for bad options."""
    entry = stack.enter_context(state.models.use(request.model))
    language = request.language or (None if entry.engine.multilingual else "en")
    decoding = DecodingOptions(task=request.task, language=language, beam_size=state.settings.stream_beam_size)
    entry.engine.check_options(decoding)
    session = StreamSession(entry.batcher, decoding, fallback=_fallbacks(state, request, entry, decoding, stack))
    entry.batcher.stream_opened()
    stack.callback(entry.batcher.stream_closed)
    return session


def _fallbacks(
    state: ServerState, request: SessionRequest, entry: Any, decoding: DecodingOptions, stack: contextlib.ExitStack
) -> FallbackChain:
    """The service's fallback chain for this session's finals (`fallback_model`, `min_confidence`)."""
    detect = not entry.engine.multilingual and request.language is None
    fallbacks = [stack.enter_context(state.models.use(name)) for name in fallback_chain(state.settings.fallback_model)]
    for fallback in fallbacks:
        fallback.engine.check_options(replace(decoding, language=None) if detect else decoding)
    schedulers = tuple(fallback.batcher for fallback in fallbacks)
    return FallbackChain(schedulers, state.settings.min_confidence, detect)


class AudioDecoder:
    """Bytes of mono audio → 16-kHz float32: PCM (`pcm_s16le`, `pcm_f32le`) or G.711 (`mulaw`, `alaw`)."""

    def __init__(self, encoding: str, sample_rate: int) -> None:
        self.table = G711.get(encoding)
        self.pcm = PcmDecoder("pcm_s16le" if self.table is not None else encoding, sample_rate)
        self.sample_rate = sample_rate

    def decode(self, data: bytes) -> np.ndarray:
        if self.table is not None:
            data = self.table[np.frombuffer(data, np.uint8)].tobytes()
        return self.pcm.decode(data)


def _mulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((codes & 0x0F) << 3) + 0x84) << ((codes & 0x70) >> 4)
    return np.where(codes & 0x80, 0x84 - magnitude, magnitude - 0x84).astype("<i2")


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent, mantissa = (codes & 0x70) >> 4, codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(codes & 0x80, magnitude, -magnitude).astype("<i2")


G711 = {"mulaw": _mulaw_table(), "alaw": _alaw_table()}


@dataclass
class _Inbox:
    """Audio and commands received but not yet given to the session (busy in a worker thread)."""

    items: list[np.ndarray | str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ended: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, item: np.ndarray | str) -> None:
        with self.lock:
            self.items.append(item)
        self.changed.set()

    def take(self) -> list[np.ndarray | str]:
        with self.lock:
            items, self.items = self.items, []
        return items


def _step(session: StreamSession, items: list[np.ndarray | str], update: bool = True) -> list[Event]:
    """Blocking: the items in order (audio fed, commands run), then an update if audio came after them."""
    events: list[Event] = []
    fresh = False
    for item in items:
        if isinstance(item, np.ndarray):
            session.feed(item)
            fresh = True
            continue
        fresh = False
        if item == FLUSH:
            events.append({"type": "flushed", "events": session.flush(), "audio_received": session.audio_received})
        else:
            session.discard()
            events.append({"type": "discarded", "audio_received": session.audio_received})
    return events + session.update() if fresh and update else events


class LiveDriver:
    """Runs one session for a protocol router: audio and commands in (from the event loop), events out."""

    def __init__(self, state: ServerState, session: StreamSession, emit: Emit) -> None:
        self.state = state
        self.session = session  # may be replaced before any audio came (a protocol's late model choice)
        self.emit = emit
        self._inbox = _Inbox()

    def put(self, audio: np.ndarray) -> None:
        self._inbox.put(audio)

    def flush(self) -> None:
        self._inbox.put(FLUSH)

    def discard(self) -> None:
        self._inbox.put(DISCARD)

    def end(self) -> None:
        self._inbox.ended = True
        self._inbox.changed.set()

    async def process(self) -> None:
        """Run the session every check interval while audio arrives; finish after `end`."""
        inbox, loop = self._inbox, asyncio.get_running_loop()
        while not inbox.ended:
            interval = self.session.policy.check_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(inbox.changed.wait(), timeout=interval)
            inbox.changed.clear()
            if inbox.ended:
                break
            session, lagging, started = self.session, self.session.lagging, loop.time()
            items = inbox.take()
            events = await self.state.run(_step, session, items) if items else []
            await self._emit(events)
            if session.lagging != lagging:
                lag = {"type": "lag", "behind": _behind(session), "step": round(session.step, 2)}
                await self._emit([lag | {"audio_received": session.audio_received}])
            # After a decode, look at the audio that came meanwhile at once (an utterance may have ended).
            await asyncio.sleep(max(0.0, interval - 0.02 - (loop.time() - started)))
        events = await self.state.run(_finish, self.session, inbox.take())
        await self._emit(events)

    async def _emit(self, events: list[Event]) -> None:
        model = self.session.batcher.engine.name
        for event in [*events, *(e for flushed in events for e in flushed.get("events", ()))]:
            if event["type"] == "final":  # latency: audio that had arrived past the utterance's end
                latency = max(0.0, event["audio_received"] - event["end"])
                self.state.metrics.stream_final_seconds.labels(model=model).observe(latency)
        await self.emit(events)


def _finish(session: StreamSession, items: list[np.ndarray | str]) -> list[Event]:
    return _step(session, items, update=False) + session.finish()


def _behind(session: StreamSession) -> float:
    return round(max(0.0, session.audio_received - session.last_update_audio), 2)


async def drive(
    websocket: WebSocket,
    driver: LiveDriver,
    receive: Callable[[], Awaitable[None]],
    on_failure: Callable[[], Awaitable[None]],
) -> None:
    """Run `receive` (the protocol's reading loop, returns when the client ends the stream) beside the
    driver; after the end, let the session finish and close. A failure (a decode that raises, a bug)
    calls `on_failure` (say so, close); a client that disconnects just ends it."""
    worker = asyncio.ensure_future(driver.process())
    receiver = asyncio.ensure_future(receive())
    try:
        await asyncio.wait({worker, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if worker.done():  # the session failed while audio was still coming
            await worker
        await receiver
        driver.end()
        await worker
        await websocket.close()
    except WebSocketDisconnect:
        pass
    except Exception:  # never drop the connection silently
        logger.exception("live session %s failed", driver.session.session_id)
        with contextlib.suppress(Exception):  # the client may already be gone
            await on_failure()
    finally:
        worker.cancel()
        receiver.cancel()


async def next_message(websocket: WebSocket) -> tuple[bytes | None, str | None]:
    """The next frame's bytes or text; a disconnect raises WebSocketDisconnect."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    return message.get("bytes"), message.get("text")


def sample_rate(value: str, name: str = "sample_rate") -> int:
    if not value.isdigit():
        raise InvalidOptionError(f"{name} must be an integer number of Hz")
    return int(value)


def authorize(state: ServerState, websocket: WebSocket, key: str | None = None) -> None:
    """The server's key check and rate limit (`state.auth`), with `key` (taken from a protocol's own
    header or subprotocol) standing for the bearer key; raises APIError."""
    if key is None:
        state.auth(websocket)
        return
    headers = [(name, value) for name, value in websocket.scope["headers"] if name != b"authorization"]
    state.auth(HTTPConnection({**websocket.scope, "headers": [*headers, (b"authorization", f"Bearer {key}".encode())]}))


async def deny(websocket: WebSocket, error: APIError) -> bool:
    """Refuse the handshake with the error's HTTP status and OpenAI-shaped body (what OpenAI's and
    Deepgram's clients expect of a bad key); False where the server cannot (then accept and close)."""
    if "websocket.http.response" not in websocket.scope.get("extensions", {}):
        return False
    await websocket.send_denial_response(api_error_response(error))
    return True
