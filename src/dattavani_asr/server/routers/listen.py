"""`ws /v1/listen`: Deepgram's live streaming API (docs/streaming.md), over the shared `live_driver`.

Query parameters become a live session; binary frames are its audio; partials become interim
`Results`, finals final ones (`speech_final` where speech paused), and the stream ends with
`Metadata`. Deepgram's own shapes (developers.deepgram.com, "Live Audio").
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import APIRouter, WebSocket

from ...core.errors import DattavaniError, InvalidOptionError
from ...pipeline.live import Event, StreamPolicy, StreamSession
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
    sample_rate,
)
from ..state import ServerState

router = APIRouter(tags=["streaming"])
ENCODINGS = {"linear16": "pcm_s16le", "mulaw": "mulaw", "alaw": "alaw"}
DEEPGRAM_MODELS = ("nova", "enhanced", "general")  # Deepgram's model names: the default model here
CHANNEL = [0, 1]  # Deepgram's channel_index: [channel, number of channels]


def _flag(params: dict[str, str], name: str, default: bool = False) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise InvalidOptionError(f"{name} must be true or false")
    return value.lower() == "true"


def _milliseconds(params: dict[str, str], name: str) -> int | None:
    """A duration in ms, or None when absent or `false`."""
    value = params.get(name)
    if value is None or value.lower() == "false":
        return None
    if not value.isdigit():
        raise InvalidOptionError(f"{name} must be a number of milliseconds or false")
    return int(value)


@dataclass(frozen=True)
class ListenOptions:
    """Deepgram's query parameters, checked."""

    encoding: str = "pcm_s16le"
    sample_rate: int = 16000
    interim_results: bool = False
    endpointing: int | None = None  # ms of silence that end an utterance; None: ours (or `false`: no speech_final)
    speech_final: bool = True
    punctuate: bool = False
    vad_events: bool = False
    utterance_end_ms: int | None = None
    request: SessionRequest = field(default_factory=SessionRequest)

    @staticmethod
    def parse(params: dict[str, str]) -> ListenOptions:
        encoding = params.get("encoding", "linear16")
        if encoding not in ENCODINGS:
            raise InvalidOptionError(f"encoding must be one of {', '.join(ENCODINGS)}")
        if params.get("channels", "1") != "1":
            raise InvalidOptionError("channels must be 1: send mono audio")
        model = params.get("model", "")
        model = "" if model.startswith(DEEPGRAM_MODELS) else model
        language = params.get("language", "").split("-")[0].lower()
        request = SessionRequest(model, None if language in ("", "multi") else language)
        return ListenOptions(
            encoding=ENCODINGS[encoding],
            sample_rate=sample_rate(params.get("sample_rate", "16000")),
            interim_results=_flag(params, "interim_results"),
            endpointing=_milliseconds(params, "endpointing"),
            speech_final=params.get("endpointing", "").lower() != "false",
            punctuate=_flag(params, "punctuate"),
            vad_events=_flag(params, "vad_events"),
            utterance_end_ms=_milliseconds(params, "utterance_end_ms"),
            request=request,
        )

    def policy(self) -> StreamPolicy:
        policy = StreamPolicy()
        if self.endpointing is None:
            return policy
        silence = self.endpointing / 1000
        return replace(
            policy, end_silence=silence, short_utterance_silence=max(policy.short_utterance_silence, silence)
        )


def _token(websocket: WebSocket) -> tuple[str | None, str | None]:
    """Deepgram's key: `Authorization: Token <key>` (or Bearer), or the subprotocols `token`, <key>."""
    scheme, _, key = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("token", "bearer") and key.strip():
        return None, key.strip()
    offered = websocket.scope.get("subprotocols") or []
    if len(offered) >= 2 and offered[0] == "token":
        return "token", offered[1]
    return None, None


def _open(state: ServerState, options: ListenOptions, stack: contextlib.ExitStack) -> StreamSession:
    session = open_session(state, options.request, stack)
    session.set_policy(options.policy())
    return session


@router.websocket("/v1/listen")
async def listen(websocket: WebSocket) -> None:
    state: ServerState = websocket.app.state.server
    subprotocol, key = _token(websocket)
    with contextlib.ExitStack() as stack:
        try:
            authorize(state, websocket, key)
            options = ListenOptions.parse(dict(websocket.query_params))
            session = await state.run(_open, state, options, stack)
        except (APIError, DattavaniError) as exc:
            await _refuse(websocket, exc if isinstance(exc, APIError) else from_core(exc), subprotocol)
            return
        await websocket.accept(subprotocol)
        adapter = Listen(websocket, options, session.batcher.engine.name)
        adapter.driver = LiveDriver(state, session, adapter.on_events)
        await drive(websocket, adapter.driver, adapter.receive, adapter.fail)


async def _refuse(websocket: WebSocket, error: APIError, subprotocol: str | None) -> None:
    """An HTTP refusal at the handshake (as Deepgram: 401 for a key, 400 for a parameter)."""
    if not await deny(websocket, error):
        await websocket.accept(subprotocol)
        await websocket.send_json(_error(error.message))
        await websocket.close(code=1008)


def _error(message: str) -> Event:
    return {"type": "Error", "variant": "error", "description": message, "message": message}


class Listen:
    """One connection: binary audio and control messages in, Deepgram's messages out."""

    def __init__(self, websocket: WebSocket, options: ListenOptions, model: str) -> None:
        self.websocket, self.options = websocket, options
        self.request_id = str(uuid.uuid4())
        self.model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"dattavani-asr:{model}"))
        self.model_info = {"name": model, "version": "dattavani-asr", "arch": "whisper"}
        self.created = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        self.decoder = AudioDecoder(options.encoding, options.sample_rate)
        self.sha256 = hashlib.sha256()
        self.speaking = False  # SpeechStarted sent for the speech going on
        self.last_word_end: float | None = None  # end of the last final's words, until UtteranceEnd
        self.driver: LiveDriver

    async def send(self, message: Event) -> None:
        await self.websocket.send_json(message)

    async def fail(self) -> None:
        await self.send(_error("the session failed on the server (see its log); start a new one"))
        await self.websocket.close(code=1011)

    async def receive(self) -> None:
        """Audio frames and KeepAlive / Finalize until CloseStream."""
        driver = self.driver
        while True:
            data, text = await next_message(self.websocket)
            if data is not None:
                self.sha256.update(data)
                try:
                    driver.put(self.decoder.decode(data))
                except InvalidOptionError as exc:
                    await self.send(_error(str(exc)))
                continue
            kind = _control(text or "")
            if kind == "CloseStream":
                return
            if kind == "Finalize":
                driver.flush()
            elif kind != "KeepAlive":
                await self.send(_error(f"unknown message: {(text or '')[:80]}"))

    async def on_events(self, events: list[Event]) -> None:
        for event in events:
            if event["type"] == "flushed":
                for inner in event["events"]:
                    await self.result(inner, from_finalize=True)
            elif event["type"] != "done":
                await self.result(event)
        await self.speech_events()
        for event in events:
            if event["type"] == "done":  # the last message before the server closes
                await self.send(self.metadata(event["audio_received"]))

    async def result(self, event: Event, from_finalize: bool = False) -> None:
        if event["type"] in ("partial", "final"):
            await self.speech_started(event["start"])
        if event["type"] == "partial" and self.options.interim_results:
            await self.send(self.results(event, is_final=False, speech_final=False, from_finalize=False))
        elif event["type"] == "final":
            # A final at a pause (the session hears no speech after it) ends the utterance.
            ended = self.driver.session.speech_onset is None and self.options.speech_final
            await self.send(self.results(event, is_final=True, speech_final=ended, from_finalize=from_finalize))
            self.last_word_end = event["end"]
            self.speaking = self.speaking and not ended

    async def speech_events(self) -> None:
        """SpeechStarted (`vad_events`) as speech begins; UtteranceEnd after `utterance_end_ms` without words."""
        session = self.driver.session
        if session.speech_onset is not None:
            await self.speech_started(session.speech_onset)
        else:
            self.speaking = False
        gap, last = self.options.utterance_end_ms, self.last_word_end
        quiet = session.speech_onset is None and last is not None and gap is not None
        if quiet and session.audio_received - (last or 0.0) >= (gap or 0) / 1000:
            await self.send({"type": "UtteranceEnd", "channel": CHANNEL, "last_word_end": last})
            self.last_word_end = None

    async def speech_started(self, onset: float) -> None:
        if not self.speaking:
            self.speaking = True
            if self.options.vad_events:
                await self.send({"type": "SpeechStarted", "channel": CHANNEL, "timestamp": round(onset, 3)})

    def results(self, event: Event, is_final: bool, speech_final: bool, from_finalize: bool) -> Event:
        words = [self.word(word) for word in event.get("words", [])]
        transcript = event["text"] if self.options.punctuate else " ".join(_plain(w) for w in event["text"].split())
        confidence = sum(word["confidence"] for word in words) / len(words) if words else 0.0
        alternative = {"transcript": transcript, "confidence": round(confidence, 4), "words": words}
        return {
            "type": "Results",
            "channel_index": CHANNEL,
            "duration": round(event["end"] - event["start"], 3),
            "start": round(event["start"], 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [alternative]},
            "metadata": {"request_id": self.request_id, "model_info": self.model_info, "model_uuid": self.model_uuid},
        }

    def word(self, word: dict[str, Any]) -> dict[str, Any]:
        timed = {"word": _plain(word["word"]), "start": word["start"], "end": word["end"]}
        timed["confidence"] = round(word["probability"], 4)
        return timed | ({"punctuated_word": word["word"]} if self.options.punctuate else {})

    def metadata(self, duration: float) -> Event:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self.sha256.hexdigest(),
            "created": self.created,
            "duration": duration,
            "channels": 1,
            "models": [self.model_uuid],
            "model_info": {self.model_uuid: self.model_info},
        }


def _plain(word: str) -> str:
    """A word as Deepgram writes it without punctuation: lower case, no punctuation around it."""
    return re.sub(r"^[^\w']+|[^\w']+$", "", word.strip()).lower()


def _control(text: str) -> str | None:
    with contextlib.suppress(ValueError):
        message: Any = json.loads(text)
        if isinstance(message, dict) and message.get("type") in ("KeepAlive", "Finalize", "CloseStream"):
            return str(message["type"])
    return None
