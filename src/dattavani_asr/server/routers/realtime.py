"""`ws /v1/realtime`: OpenAI's Realtime API, transcription sessions only (docs/streaming.md).

A thin adapter over `live_driver`: OpenAI's client events become audio and commands for the shared
live session, the session's partials and finals become `conversation.item.input_audio_transcription`
events. Shapes follow the `openai` package's types (openai/types/realtime/).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import APIRouter, WebSocket

from ...core.errors import DattavaniError, InvalidOptionError
from ...pipeline.live import Event, StreamPolicy
from ..errors import APIError, from_core
from ..live_driver import (
    AudioDecoder,
    LiveDriver,
    SessionRequest,
    authorize,
    deny,
    drive,
    next_message,
    open_session,
)
from ..state import ServerState

router = APIRouter(tags=["streaming"])
LOGPROBS = "item.input_audio_transcription.logprobs"
# Input formats: OpenAI's type → (our encoding, its rate); the beta API's names for them.
FORMATS = {"audio/pcm": ("pcm_s16le", 24000), "audio/pcmu": ("mulaw", 8000), "audio/pcma": ("alaw", 8000)}
BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
PCM_RATES = (16000, 24000)  # OpenAI takes 24 kHz; 16 kHz is ours as well
MIN_COMMIT_SECONDS = 0.1  # OpenAI refuses to commit less audio
UNSUPPORTED = ("response.", "conversation.", "output_audio_buffer.")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def error_event(
    code: str, message: str, param: str | None = None, event_id: str | None = None, kind: str = "invalid_request_error"
) -> Event:
    """OpenAI's `error` server event; `event_id` inside names the client event that caused it."""
    error = {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id}
    return {"type": "error", "event_id": new_id("event"), "error": error}


def our_model(name: str | None) -> str:
    """OpenAI's model names (whisper-1, gpt-4o-transcribe, gpt-realtime...) mean the default model."""
    return "" if not name or name == "whisper-1" or name.startswith("gpt-") else name


@dataclass
class Config:
    """A transcription session's settings, as OpenAI's `session.update` sets them."""

    format: str = "audio/pcm"
    rate: int = 24000
    model: str = "whisper-1"
    language: str | None = None
    prompt: str = ""
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: vad_settings({}))
    include: list[str] = field(default_factory=list)

    def request(self) -> SessionRequest:
        return SessionRequest(our_model(self.model), self.language or None)

    def policy(self) -> StreamPolicy:
        """The live session's timing for this turn detection (our defaults where the client set none)."""
        policy, detection = StreamPolicy(), self.turn_detection or {}
        vad = replace(policy.vad, threshold=float(detection.get("threshold", policy.vad.threshold)))
        silence = detection.get("silence_duration_ms", policy.end_silence * 1000) / 1000
        lead = detection.get("prefix_padding_ms", policy.lead * 1000) / 1000
        short = max(policy.short_utterance_silence, silence)
        return replace(policy, vad=vad, end_silence=silence, short_utterance_silence=short, lead=lead)

    def view(self, session_id: str) -> dict[str, Any]:
        """The session object of `session.created` / `session.updated`."""
        fmt: dict[str, Any] = {"type": self.format} | ({"rate": self.rate} if self.format == "audio/pcm" else {})
        transcription = {"model": self.model, "language": self.language, "prompt": self.prompt}
        audio_input = {"format": fmt, "transcription": transcription, "noise_reduction": None}
        session = {"type": "transcription", "object": "realtime.transcription_session", "id": session_id}
        return session | {
            "audio": {"input": audio_input | {"turn_detection": self.turn_detection}},
            "include": self.include,
        }

    def beta_view(self, session_id: str) -> dict[str, Any]:
        """The same in the beta API's shape (`transcription_session.updated`)."""
        beta_format = next(name for name, kind in BETA_FORMATS.items() if kind == self.format)
        transcription = {"model": self.model, "language": self.language, "prompt": self.prompt}
        return {
            "id": session_id,
            "object": "realtime.transcription_session",
            "input_audio_format": beta_format,
            "input_audio_transcription": transcription,
            "turn_detection": self.turn_detection,
            "input_audio_noise_reduction": None,
            "include": self.include,
        }


def vad_settings(given: dict[str, Any]) -> dict[str, Any]:
    """`server_vad` settings with our defaults for what the client left out (the values in effect)."""
    policy = StreamPolicy()
    defaults = {
        "type": "server_vad",
        "threshold": policy.vad.threshold,
        "prefix_padding_ms": round(policy.lead * 1000),
        "silence_duration_ms": round(policy.end_silence * 1000),
    }
    settings = defaults | {key: value for key, value in given.items() if value is not None}
    for key, low, high in (("threshold", 0.0, 1.0), ("prefix_padding_ms", 0, 5000), ("silence_duration_ms", 0, 10000)):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise InvalidOptionError(f"turn_detection.{key} must be a number from {low} to {high}")
    return settings


def updated_config(config: Config, session: dict[str, Any], beta: bool) -> Config:
    """`config` with the fields a `session.update` (or the beta `transcription_session.update`) sets."""
    if not beta and session.get("type", "transcription") != "transcription":
        raise InvalidOptionError("only transcription sessions are served here: session.type must be 'transcription'")
    audio = session.get("audio") or {}
    given = session if beta else (audio.get("input") or {})
    fmt = _format(given.get("input_audio_format")) if beta else given.get("format")
    transcription = given.get("input_audio_transcription" if beta else "transcription")
    changes: dict[str, Any] = {}
    if isinstance(fmt, dict):
        kind = fmt.get("type", config.format)
        if kind not in FORMATS:
            raise InvalidOptionError(f"audio format must be one of {', '.join(FORMATS)}")
        rate = int(fmt.get("rate") or FORMATS[kind][1])
        if kind == "audio/pcm" and rate not in PCM_RATES:
            raise InvalidOptionError("audio/pcm rate must be 24000 (or 16000)")
        changes |= {"format": kind, "rate": rate if kind == "audio/pcm" else 8000}
    if isinstance(transcription, dict):
        keys = ("model", "language", "prompt")
        changes |= {key: transcription[key] for key in keys if key in transcription}
        changes["prompt"] = changes.get("prompt") or ""
    if "turn_detection" in given:
        detection = given["turn_detection"]
        changes["turn_detection"] = None if detection is None else vad_settings(dict(detection))
    if "include" in session:
        changes["include"] = [name for name in session["include"] or [] if name == LOGPROBS]
    return replace(config, **changes)


def _format(beta_name: Any) -> dict[str, Any] | None:
    if beta_name is None:
        return None
    if beta_name not in BETA_FORMATS:
        raise InvalidOptionError(f"input_audio_format must be one of {', '.join(BETA_FORMATS)}")
    return {"type": BETA_FORMATS[beta_name]}


@dataclass
class _Item:
    """One transcription item: an utterance (server VAD) or what came between two commits."""

    item_id: str = field(default_factory=lambda: new_id("item"))
    start: float = 0.0
    sent: list[str] = field(default_factory=list)  # words already sent as deltas
    last: list[str] = field(default_factory=list)  # the words of the last partial


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    state: ServerState = websocket.app.state.server
    subprotocol, key = _subprotocol_key(websocket)
    try:
        authorize(state, websocket, key)
    except APIError as exc:
        if not await deny(websocket, exc):
            await websocket.accept(subprotocol)
            await websocket.send_json(error_event(exc.code or "invalid_api_key", exc.message))
            await websocket.close(code=1008)
        return
    await websocket.accept(subprotocol)
    adapter = Realtime(state, websocket, Config(model=websocket.query_params.get("model") or "whisper-1"))
    try:
        await adapter.serve()
    finally:
        adapter.stack.close()


def _subprotocol_key(websocket: WebSocket) -> tuple[str | None, str | None]:
    """Browsers send the key as a subprotocol (`realtime`, `openai-insecure-api-key.<key>`)."""
    offered = websocket.scope.get("subprotocols") or []
    keys = [name.removeprefix("openai-insecure-api-key.") for name in offered if name.startswith("openai-insecure")]
    return ("realtime" if "realtime" in offered else None), (keys[0] if keys else None)


class Realtime:
    """One connection: client events → the live driver; the session's events → OpenAI's events."""

    def __init__(self, state: ServerState, websocket: WebSocket, config: Config) -> None:
        self.state, self.websocket, self.config = state, websocket, config
        self.session_id = new_id("sess")
        self.stack = contextlib.ExitStack()
        self.decoder = AudioDecoder(*self._encoding())
        self.item: _Item | None = None  # the item being spoken (server VAD)
        self.pending: list[Event] = []  # finals since the last commit (turn detection off)
        self.last_commit = 0.0  # audio seconds at the last commit or clear
        self.previous_item_id: str | None = None
        self.uncommitted = 0.0  # seconds appended since the last commit or clear
        self.appended = False
        self.driver: LiveDriver

    def _encoding(self) -> tuple[str, int]:
        return FORMATS[self.config.format][0], self.config.rate

    async def serve(self) -> None:
        try:
            self.config = replace(self.config, model=self.config.model if our_model(self.config.model) else "whisper-1")
            session = await self.state.run(open_session, self.state, self.config.request(), self.stack)
        except DattavaniError as exc:
            await self.send(error_event(from_core(exc).code or "invalid_value", str(exc), "model"))
            await self.websocket.close(code=1011)
            return
        self.driver = LiveDriver(self.state, session, self.on_events)
        await self.send(
            {"type": "session.created", "event_id": new_id("event"), "session": self.config.view(self.session_id)}
        )
        await drive(self.websocket, self.driver, self.receive, self.fail)

    async def send(self, event: Event) -> None:
        await self.websocket.send_json(event)

    async def fail(self) -> None:
        message = "the session failed on the server (see its log); start a new one"
        await self.send(error_event("server_error", message, kind="server_error"))
        await self.websocket.close(code=1011)

    async def receive(self) -> None:
        """Client events until the client goes (a disconnect ends the session)."""
        while True:
            _, text = await next_message(self.websocket)
            if text is None:
                await self.send(error_event("invalid_json", "send client events as JSON text frames"))
                continue
            await self.handle(text)

    async def handle(self, text: str) -> None:
        try:
            event: Any = json.loads(text)
        except ValueError:
            await self.send(error_event("invalid_json", f"the message is not JSON: {text[:80]}"))
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            await self.send(error_event("invalid_value", "a client event is a JSON object with a type", "type"))
            return
        kind, event_id = event["type"], event.get("event_id")
        handler = {
            "session.update": self.update_session,
            "transcription_session.update": self.update_session,
            "input_audio_buffer.append": self.append,
            "input_audio_buffer.commit": self.commit,
            "input_audio_buffer.clear": self.clear,
        }.get(kind)
        if handler is not None:
            await handler(event)
        elif kind.startswith(UNSUPPORTED):
            await self.send(
                error_event(
                    "unsupported_event", f"{kind} is not served: this is a transcription session", "type", event_id
                )
            )
        else:
            await self.send(error_event("invalid_value", f"unknown client event type {kind!r}", "type", event_id))

    async def update_session(self, event: dict[str, Any]) -> None:
        """Apply a session update whole or not at all; answer with the session in effect."""
        beta, event_id = event["type"].startswith("transcription_session"), event.get("event_id")
        try:
            session = event.get("session")
            if not isinstance(session, dict):
                raise InvalidOptionError("session must be an object")
            config = updated_config(self.config, session, beta)
            await self._apply(config)
        except (DattavaniError, TypeError, ValueError) as exc:
            await self.send(error_event("invalid_value", str(exc), "session", event_id))
            return
        self.config = config
        view = config.beta_view(self.session_id) if beta else config.view(self.session_id)
        kind = "transcription_session.updated" if beta else "session.updated"
        await self.send({"type": kind, "event_id": new_id("event"), "session": view})

    async def _apply(self, config: Config) -> None:
        """The live session for `config`: a new one while no audio came (model, language), else its options."""
        if config.request() != self.config.request():
            if self.appended and config.request().model != self.config.request().model:
                raise InvalidOptionError("the transcription model cannot change once audio was appended")
            if self.appended:
                self.driver.session.set_options(language=config.language)
            else:
                stack = contextlib.ExitStack()
                try:
                    self.driver.session = await self.state.run(open_session, self.state, config.request(), stack)
                except BaseException:
                    stack.close()
                    raise
                self.stack.close()
                self.stack = stack
        if (config.format, config.rate) != (self.config.format, self.config.rate):
            self.decoder = AudioDecoder(FORMATS[config.format][0], config.rate)
        self.driver.session.set_policy(config.policy())

    async def append(self, event: dict[str, Any]) -> None:
        try:
            audio = self.decoder.decode(base64.b64decode(str(event.get("audio", "")), validate=True))
        except (binascii.Error, InvalidOptionError) as exc:
            await self.send(
                error_event(
                    "invalid_value", f"audio must be base64 {self.config.format}: {exc}", "audio", event.get("event_id")
                )
            )
            return
        self.appended = True
        self.uncommitted += audio.shape[0] / 16000
        self.driver.put(audio)

    async def commit(self, event: dict[str, Any]) -> None:
        if self.uncommitted < MIN_COMMIT_SECONDS:
            got = f"{self.uncommitted * 1000:.0f} ms"
            message = f"buffer too small: at least {MIN_COMMIT_SECONDS * 1000:g} ms of audio is needed, got {got}"
            await self.send(error_event("input_audio_buffer_commit_empty", message, None, event.get("event_id")))
            return
        self.uncommitted = 0.0
        self.driver.flush()

    async def clear(self, event: dict[str, Any]) -> None:
        self.uncommitted = 0.0
        self.driver.discard()

    async def on_events(self, events: list[Event]) -> None:
        """The live session's events, translated (see `live_driver`: commands come back in order)."""
        for event in events:
            if event["type"] == "flushed":
                closed = [await self.transcribed(inner) for inner in event["events"]]
                await self.committed_by_client(event["audio_received"], any(closed))
            elif event["type"] == "discarded":
                self.item, self.pending, self.last_commit = None, [], event["audio_received"]
                await self.send({"type": "input_audio_buffer.cleared", "event_id": new_id("event")})
            else:
                await self.transcribed(event)
        if self.config.turn_detection is not None:
            await self.vad_edges()

    async def transcribed(self, event: Event) -> bool:
        """A partial (a delta) or a final (an item completed; turn detection off: kept until the commit)."""
        if self.config.turn_detection is None:
            if event["type"] == "final":
                self.pending.append(event)
            return False
        if event["type"] not in ("partial", "final"):
            return False
        item = await self._started(event["start"])
        if event["type"] == "partial":
            await self.delta(item, event["text"].split())
            return False
        await self.close_item(item, [event], event["end"])
        return True

    async def _started(self, onset: float) -> _Item:
        """The open item (speech_started sent for it), opened now if none is."""
        if self.item is None:
            self.item = _Item(start=onset)
            started = {"audio_start_ms": round(onset * 1000), "item_id": self.item.item_id}
            await self.send({"type": "input_audio_buffer.speech_started", "event_id": new_id("event")} | started)
        return self.item

    async def vad_edges(self) -> None:
        """speech_started as soon as the session hears speech; an item whose speech held no words ends empty."""
        onset = self.driver.session.speech_onset
        if onset is not None:
            await self._started(onset)
        elif self.item is not None:
            await self.close_item(self.item, [], self.driver.session.audio_received)

    async def committed_by_client(self, audio_received: float, closed: bool) -> None:
        """A commit: turn detection off, the finals since the last commit are one item; on, an open item
        ends now (the flush's finals already closed theirs)."""
        if self.config.turn_detection is None:
            finals, self.pending = self.pending, []
            await self.close_item(_Item(start=self.last_commit), finals, audio_received, spoken=False)
        elif not closed:
            spoken = self.item is not None
            await self.close_item(self.item or _Item(start=self.last_commit), [], audio_received, spoken)
        self.last_commit = audio_received

    async def delta(self, item: _Item, words: list[str], final: bool = False) -> None:
        """A delta with the words two hypotheses agree on past those sent (a final's words: all)."""
        agreed = words if final else _common_prefix(item.last, words)
        item.last = words
        if agreed[: len(item.sent)] != item.sent or len(agreed) <= len(item.sent):
            return
        text = (" " if item.sent else "") + " ".join(agreed[len(item.sent) :])
        item.sent = agreed
        event = {"type": "conversation.item.input_audio_transcription.delta", "event_id": new_id("event")}
        await self.send(event | {"item_id": item.item_id, "content_index": 0, "delta": text})

    async def close_item(self, item: _Item, finals: list[Event], end: float, spoken: bool = True) -> None:
        """speech_stopped (server VAD), committed, the last delta, completed."""
        ids = {"item_id": item.item_id}
        if spoken:
            await self.send(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "event_id": new_id("event"),
                    "audio_end_ms": round(end * 1000),
                }
                | ids
            )
        committed = {
            "type": "input_audio_buffer.committed",
            "event_id": new_id("event"),
            "previous_item_id": self.previous_item_id,
        }
        await self.send(committed | ids)
        text = " ".join(final["text"] for final in finals)
        await self.delta(item, text.split(), final=True)
        usage = {"type": "duration", "seconds": round(max(0.0, end - item.start), 3)}
        completed: Event = {
            "type": "conversation.item.input_audio_transcription.completed",
            "event_id": new_id("event"),
        }
        completed |= ids | {"content_index": 0, "transcript": text, "usage": usage}
        if LOGPROBS in self.config.include:
            completed["logprobs"] = _logprobs([word for final in finals for word in final["words"]])
        await self.send(completed)
        self.previous_item_id = item.item_id
        if self.item is item:
            self.item = None


def _common_prefix(first: list[str], second: list[str]) -> list[str]:
    count = next((i for i, (a, b) in enumerate(zip(first, second)) if a != b), min(len(first), len(second)))
    return second[:count]


def _logprobs(words: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry a word (our decoder's words, not OpenAI's tokens): its text, bytes and log probability."""
    entries = []
    for index, word in enumerate(words):
        token = (" " if index else "") + word["word"]
        entries.append(
            {"token": token, "bytes": list(token.encode()), "logprob": math.log(max(word["probability"], 1e-12))}
        )
    return entries
