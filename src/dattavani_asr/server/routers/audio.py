"""OpenAI-compatible `POST /v1/audio/transcriptions` and `/v1/audio/translations`."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response, StreamingResponse

from ...core.errors import DattavaniError, InvalidOptionError
from ...core.options import (
    DIARIZE,
    INITIAL_PROMPT,
    LANGUAGE,
    MAX_SPEAKERS,
    MIN_SPEAKERS,
    NUM_SPEAKERS,
    TEMPERATURE,
    Option,
)
from ...core.transcript import Transcript
from ...engine import WindowResult
from ...pipeline.transcriber import fallback_chain
from ..errors import APIError, from_core
from ..responses import check_granularities, check_response_format, openai_response
from ..service import TranscriptionRequest, upload_source
from ..state import ServerState, authorized, get_state

router = APIRouter(prefix="/v1/audio", tags=["audio"], dependencies=[Depends(authorized)])


@dataclass(frozen=True)
class SpeakerFields:
    """The diarization fields of a request (`response_format=diarized_json` asks for speakers too)."""

    diarize: bool = DIARIZE.default
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None


@dataclass(frozen=True)
class AudioCall:
    """One parsed request: the service request plus how to answer it."""

    request: TranscriptionRequest
    response_format: str
    granularities: list[str]
    include_logprobs: bool
    stream: bool


def _chunking(value: str | None) -> None:
    """`auto` (or a server_vad object) means our VAD chunking, which is always on; nothing else is known."""
    if value is None or value == "auto":
        return
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or parsed.get("type") != "server_vad":
        raise InvalidOptionError('chunking_strategy must be \'auto\' or {"type": "server_vad", ...}')


def _parse(
    state: ServerState,
    task: str,
    model: str | None,
    language: str | None,
    prompt: str | None,
    response_format: str,
    temperature: float,
    granularities: list[str],
    include: list[str],
    stream: bool,
    chunking: str | None,
    speakers: SpeakerFields = SpeakerFields(),
) -> AudioCall:
    check_response_format(response_format)
    check_granularities(granularities)
    _chunking(chunking)
    unknown = [item for item in include if item != "logprobs"]
    if unknown:
        raise InvalidOptionError(f"include: unknown {', '.join(unknown)}; only logprobs is supported")
    words = "word" in granularities or "logprobs" in include
    request = TranscriptionRequest(
        model=state.models.canonical(model),
        task=task,
        language=language or None,
        prompt=prompt,
        temperature=temperature,
        word_timestamps=words,
        beam_size=state.settings.beam_size,
        trim_encoder=state.settings.trim_encoder,
        fallback_models=fallback_chain(state.settings.fallback_model),
        min_confidence=state.settings.min_confidence,
        diarize=speakers.diarize or response_format == "diarized_json",
        num_speakers=speakers.num_speakers,
        min_speakers=speakers.min_speakers,
        max_speakers=speakers.max_speakers,
    )
    return AudioCall(request, response_format, granularities, "logprobs" in include, stream)


async def _transcribe(state: ServerState, upload: UploadFile, call: AudioCall) -> Transcript:
    cancel = threading.Event()
    started = time.perf_counter()
    source = upload_source(upload.file, upload.filename)
    try:
        transcript = await asyncio.wait_for(
            state.run(state.service.transcribe, source, call.request, cancel=cancel),
            timeout=state.settings.request_timeout_seconds,
        )
    except TimeoutError as exc:
        cancel.set()
        raise APIError(504, "transcription took longer than the request timeout", code="timeout") from exc
    finally:
        cancel.set()
    state.metrics.transcribed(transcript.model, transcript.duration, time.perf_counter() - started)
    return transcript


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


async def _stream_events(state: ServerState, upload: UploadFile, call: AudioCall) -> AsyncIterator[bytes]:
    """`transcript.text.delta` per decoded window, in order, then `transcript.text.done` with the text."""
    loop = asyncio.get_running_loop()
    deltas: asyncio.Queue[str] = asyncio.Queue()
    cancel = threading.Event()

    def on_window(result: WindowResult) -> None:
        text = " ".join(segment.text.strip() for segment in result.segments if segment.text.strip())
        if text:
            loop.call_soon_threadsafe(deltas.put_nowait, text)

    source = upload_source(upload.file, upload.filename)
    work = asyncio.ensure_future(
        state.run(state.service.transcribe, source, call.request, cancel=cancel, on_window=on_window)
    )
    first = True
    try:
        while not (work.done() and deltas.empty()):
            getter = asyncio.ensure_future(deltas.get())
            await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                continue
            text = getter.result()
            yield _sse({"type": "transcript.text.delta", "delta": text if first else " " + text})
            first = False
        transcript = work.result()
        yield _sse({"type": "transcript.text.done", "text": transcript.text})
    except Exception as exc:  # the status line is sent: errors travel as an event
        yield _sse(_error_event(exc))
    finally:
        cancel.set()
        state.admission.release()
        await upload.close()


def _error_event(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, APIError):
        error = exc
    elif isinstance(exc, DattavaniError):
        error = from_core(exc)
    else:
        error = APIError(500, "transcription failed", code="internal_error")
    return {"type": "error", "error": {"message": error.message, "type": error.type, "code": error.code}}


async def _answer(state: ServerState, upload: UploadFile, call: AudioCall) -> Response:
    if call.stream:
        return await _streaming(state, upload, call)
    with state.admission:
        transcript = await _transcribe(state, upload, call)
    return openai_response(transcript, call.response_format, call.granularities, call.include_logprobs)


async def _streaming(state: ServerState, upload: UploadFile, call: AudioCall) -> Response:
    """Validate the audio before answering 200, so a bad file still gets its status code.

    The admission slot is held until the event stream ends (released by `_stream_events`).
    """
    state.admission.acquire()
    try:
        await state.run(_probe, upload)
    except BaseException:
        state.admission.release()
        raise
    return StreamingResponse(_stream_events(state, upload, call), media_type="text/event-stream")


def _probe(upload: UploadFile) -> None:
    from ...audio.decode import iter_audio

    next(iter_audio(upload_source(upload.file, upload.filename)), None)
    upload.file.seek(0)


Granularities = Annotated[list[str], Form(alias="timestamp_granularities[]")]
Include = Annotated[list[str], Form(alias="include[]")]


def form(option: Option) -> Any:
    """A form field with the declared range and help (`dattavani_asr.core.options`)."""
    return Form(ge=option.ge, le=option.le, description=option.help)


Model = Annotated[str | None, Form(description="a model this server offers; whisper-1 or none: its default model")]
Language = Annotated[str | None, form(LANGUAGE)]
Prompt = Annotated[str | None, form(INITIAL_PROMPT)]
Temperature = Annotated[float, form(TEMPERATURE)]
Diarize = Annotated[bool, form(DIARIZE)]
SpeakerCount = Annotated[int | None, form(NUM_SPEAKERS)]
FewestSpeakers = Annotated[int | None, form(MIN_SPEAKERS)]
MostSpeakers = Annotated[int | None, form(MAX_SPEAKERS)]


@router.post("/transcriptions", summary="Transcribe audio into the input language")
async def transcriptions(
    request: Request,
    file: Annotated[UploadFile, File()],
    model: Model = None,
    language: Language = LANGUAGE.default,
    prompt: Prompt = INITIAL_PROMPT.default,
    response_format: Annotated[str, Form()] = "json",
    temperature: Temperature = TEMPERATURE.default,
    timestamp_granularities: Granularities = [],  # noqa: B006 - FastAPI copies defaults
    include: Include = [],  # noqa: B006
    stream: Annotated[bool, Form()] = False,
    chunking_strategy: Annotated[str | None, Form()] = None,
    diarize: Diarize = DIARIZE.default,
    num_speakers: SpeakerCount = NUM_SPEAKERS.default,
    min_speakers: FewestSpeakers = MIN_SPEAKERS.default,
    max_speakers: MostSpeakers = MAX_SPEAKERS.default,
) -> Response:
    state = get_state(request)
    speakers = SpeakerFields(diarize, num_speakers, min_speakers, max_speakers)
    call = _parse(
        state,
        "transcribe",
        model,
        language,
        prompt,
        response_format,
        temperature,
        timestamp_granularities,
        include,
        stream,
        chunking_strategy,
        speakers,
    )
    return await _answer(state, file, call)


@router.post("/translations", summary="Translate audio into English")
async def translations(
    request: Request,
    file: Annotated[UploadFile, File()],
    model: Model = None,
    prompt: Prompt = INITIAL_PROMPT.default,
    response_format: Annotated[str, Form()] = "json",
    temperature: Temperature = TEMPERATURE.default,
    timestamp_granularities: Granularities = [],  # noqa: B006
    stream: Annotated[bool, Form()] = False,
) -> Response:
    state = get_state(request)
    call = _parse(
        state, "translate", model, None, prompt, response_format, temperature, timestamp_granularities, [], stream, None
    )
    return await _answer(state, file, call)
