"""Turn one upload (or job file) into a Transcript, with its windows decoded by the shared batcher."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import IO, Any, cast

from ..audio import AudioSource, describe_source, iter_audio
from ..chunking import AudioStats, speech_windows
from ..engine import AudioWindow, WindowResult
from ..errors import DattavaniError, EmptyAudioError, InvalidOptionError
from ..options import DecodingOptions, VadOptions
from ..transcriber import check_not_empty, segments_from_results
from ..transcript import Timings, Transcript
from .batcher import Priority
from .model_manager import LoadedEntry, ModelManager

WindowCallback = Callable[[WindowResult], None]


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
    trim_encoder: bool = False

    def decoding(self) -> DecodingOptions:
        options = DecodingOptions(
            task=self.task,
            language=self.language,
            beam_size=self.beam_size,
            initial_prompt=self.prompt or None,
            word_timestamps=self.word_timestamps,
            trim_encoder=self.trim_encoder,
        )
        if self.temperature > 0:
            options = replace(options, temperatures=(self.temperature,))
        return options

    def check(self) -> None:
        if not 0.0 <= self.temperature <= 1.0:
            raise InvalidOptionError("temperature must be between 0 and 1")


@dataclass
class _Progress:
    stats: AudioStats
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
        on_window: WindowCallback | None = None,
    ) -> Transcript:
        """Blocking; call from a worker thread, never from the event loop."""
        request.check()
        started = time.perf_counter()
        stats = AudioStats()
        blocks = iter_audio(source)
        first = next(blocks, None)  # bad input fails before any model loads
        with self.models.use(request.model or "") as entry:
            decoding = request.decoding()
            entry.engine.check_options(decoding)
            windows = speech_windows(_chain(first, blocks), VadOptions() if request.vad else None, stats=stats)
            tracker = _Progress(stats, progress, duration)
            results, decoding = self._run(entry, windows, decoding, priority, cancel, on_window, tracker)
        check_not_empty(stats, source)
        total = time.perf_counter() - started
        return Transcript(
            segments=segments_from_results(results),
            language=decoding.language or "en",
            language_probability=1.0,
            duration=round(stats.duration, 3),
            model=entry.name,
            task=decoding.task,
            source=describe_source(source),
            timings=Timings(inference=round(total, 3), total=round(total, 3)),
        )

    def _run(
        self,
        entry: LoadedEntry,
        windows: Iterator[AudioWindow],
        decoding: DecodingOptions,
        priority: int,
        cancel: threading.Event | None,
        on_window: WindowCallback | None,
        tracker: _Progress,
    ) -> tuple[list[WindowResult], DecodingOptions]:
        """Submit windows as they are cut, keeping at most `in_flight_windows` outstanding."""
        outstanding: deque[Future[WindowResult]] = deque()
        results: list[WindowResult] = []

        def collect_one() -> None:
            result = _wait(outstanding.popleft(), cancel)
            results.append(result)
            tracker.update(result)
            if on_window is not None:
                on_window(result)

        try:
            for window in windows:
                if decoding.language is None:
                    decoding = replace(decoding, language=_language(entry, window))
                outstanding.extend(entry.batcher.submit([window], decoding, priority))
                while len(outstanding) >= self.in_flight_windows or (outstanding and outstanding[0].done()):
                    collect_one()
                _check_cancel(cancel)
            while outstanding:
                collect_one()
        finally:
            for future in outstanding:
                future.cancel()
        return results, decoding


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    if first is not None:
        yield first
        yield from rest


def _language(entry: LoadedEntry, window: AudioWindow) -> str:
    [(language, _)] = entry.engine.detect_languages([window])
    return str(language)


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
