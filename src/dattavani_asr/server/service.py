"""Turn one upload (or job file) into a Transcript, with its windows decoded by the shared batcher."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import IO, Any, cast

from ..audio.decode import AudioSource, describe_source, iter_audio
from ..audio.windows import speech_windows
from ..core.errors import DattavaniError, EmptyAudioError, InvalidOptionError
from ..core.options import DecodingOptions, TranscribeOptions, VadOptions
from ..core.transcript import Timings, Transcript
from ..engine import AudioWindow, WindowResult
from ..pipeline.checkpoint import Checkpointer, Resumed
from ..pipeline.routing import routed
from ..pipeline.run import TranscriptRun, decode_stream
from ..pipeline.scheduler import Priority, ScheduledDecoder
from ..pipeline.speakers import SpeakerTrack
from ..pipeline.transcriber import check_not_empty, speaker_device, speaker_options, with_words
from .model_manager import ModelManager


class CancelledError(DattavaniError):
    """The caller went away or cancelled the job."""


@dataclass(frozen=True)
class TranscriptionRequest:
    """What a caller asks for, in our terms (the routers translate OpenAI's parameters)."""

    model: str | None = None
    task: str = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    beam_size: int = 5
    vad: bool = True
    trim_encoder: bool | None = None  # None: the model's policy (pipeline.run.trims_encoder)
    fallback_models: tuple[str, ...] = ()
    min_confidence: float = 0.6
    diarize: bool = False
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    def options(self) -> TranscribeOptions:
        decoding = DecodingOptions(
            task=self.task,
            language=self.language,
            beam_size=self.beam_size,
            initial_prompt=self.prompt or None,
            word_timestamps=self.word_timestamps,
            trim_encoder=self.trim_encoder,
        )
        if self.temperature > 0:
            decoding = replace(decoding, temperatures=(self.temperature,))
        vad = VadOptions() if self.vad else None
        speakers = speaker_options(self.diarize, self.num_speakers, self.min_speakers, self.max_speakers)
        return TranscribeOptions(
            decoding=decoding,
            vad=vad,
            fallback_models=self.fallback_models,
            min_confidence=self.min_confidence,
            speakers=speakers,
        )

    def check(self) -> None:
        if not 0.0 <= self.temperature <= 1.0:
            raise InvalidOptionError("temperature must be between 0 and 1")


@dataclass
class _Progress:
    callback: Callable[[float], None] | None
    duration: float | None

    def update(self, result: WindowResult) -> None:
        if self.callback is not None and self.duration:
            self.callback(min(1.0, result.window.end / self.duration))


class TranscriptionService:
    """Decode + VAD in the caller's thread; windows go to the model's batcher as soon as they exist."""

    def __init__(self, models: ModelManager, in_flight_windows: int = 16) -> None:
        self.models = models
        self.in_flight_windows = in_flight_windows

    def transcribe(
        self,
        source: AudioSource,
        request: TranscriptionRequest,
        *,
        priority: int = Priority.INTERACTIVE,
        progress: Callable[[float], None] | None = None,
        duration: float | None = None,
        cancel: threading.Event | None = None,
        on_window: Callable[[WindowResult], None] | None = None,
        checkpoint: Checkpointer | None = None,
    ) -> Transcript:
        """Blocking; call from a worker thread, never from the event loop.

        With a `checkpoint`, decoding resumes after the windows an interrupted run stored, and each
        new finished window is stored."""
        request.check()
        options = request.options()
        if options.speakers is None:
            return self._transcribe(
                source, request, options, priority, progress, duration, cancel, on_window, checkpoint
            )
        # Speakers are clustered over the whole recording: a diarized job starts again from the start.
        track = SpeakerTrack(options.speakers, speaker_device(self.models.settings.device))
        try:
            transcript = self._transcribe(
                source, request, with_words(options), priority, progress, duration, cancel, on_window, None, track
            )
            return track.label(transcript).without_words(request.word_timestamps)
        finally:
            track.close()

    def _transcribe(
        self,
        source: AudioSource,
        request: TranscriptionRequest,
        options: TranscribeOptions,
        priority: int,
        progress: Callable[[float], None] | None,
        duration: float | None,
        cancel: threading.Event | None,
        on_window: Callable[[WindowResult], None] | None,
        checkpoint: Checkpointer | None,
        track: SpeakerTrack | None = None,
    ) -> Transcript:
        started = time.perf_counter()
        resumed = checkpoint.resumed if checkpoint is not None else Resumed([], None, 1.0)
        stats = resumed.stats(0.0)
        blocks = iter_audio(source, start=resumed.start)
        first = next(blocks, None)  # bad input fails before any model loads
        with contextlib.ExitStack() as stack:

            def decoder(name: str) -> ScheduledDecoder:
                return ScheduledDecoder(stack.enter_context(self.models.use(name)).batcher, priority)

            model = routed(request.model or "", decoder)  # a model per language, or one model
            run = TranscriptRun([model, *(decoder(name) for name in request.fallback_models)], options)
            run.check()
            run.adopt(resumed.language, resumed.language_probability)
            windows = speech_windows(_chain(first, blocks), run.vad(), offset=resumed.start or 0.0, stats=stats)
            windows = _cancellable(windows, cancel, track)
            results = list(resumed.results)
            collect = _Collector(results, _Progress(progress, duration), run, on_window, checkpoint)
            decode_stream(run, windows, self.in_flight_windows, collect, lambda f: _wait(f, cancel))
        check_not_empty(stats, source)
        total = time.perf_counter() - started
        timings = Timings(inference=round(total, 3), total=round(total, 3))
        return run.transcript(results, stats.duration, describe_source(source), timings)


@dataclass
class _Collector:
    """Where each finished window goes: the results, the progress, the caller, the checkpoint."""

    results: list[WindowResult]
    progress: _Progress
    run: TranscriptRun
    on_window: Callable[[WindowResult], None] | None
    checkpoint: Checkpointer | None

    def __call__(self, result: WindowResult) -> None:
        self.results.append(result)
        self.progress.update(result)
        if self.on_window is not None:
            self.on_window(result)
        if self.checkpoint is not None:
            self.checkpoint.add(result, self.run.language.probability)


def _cancellable(
    windows: Iterator[AudioWindow], cancel: threading.Event | None, track: SpeakerTrack | None = None
) -> Iterator[AudioWindow]:
    for window in windows:
        _check_cancel(cancel)
        if track is not None:
            track.add(window)
        yield window


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    if first is not None:
        yield first
        yield from rest


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError("transcription cancelled")


def _wait(future: Future[WindowResult], cancel: threading.Event | None) -> WindowResult:
    while True:
        _check_cancel(cancel)
        try:
            return future.result(timeout=0.2)
        except TimeoutError:
            continue


class NamedUpload:
    """A file object PyAV can read, carrying the caller's file name for error messages."""

    def __init__(self, raw: Any, name: str) -> None:
        self.raw = raw
        self.name = name

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.raw.read(size)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        position: int = self.raw.seek(offset, whence)
        return position

    def tell(self) -> int:
        position: int = self.raw.tell()
        return position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def upload_source(raw: Any, name: str | None) -> IO[bytes]:
    """Wrap an uploaded file; an empty one is refused before anything decodes it."""
    label = name or "upload"
    raw.seek(0, 2)
    size = raw.tell()
    raw.seek(0)
    if size == 0:
        raise EmptyAudioError(f"{label}: file is empty (0 bytes)")
    return cast(IO[bytes], NamedUpload(raw, label))
