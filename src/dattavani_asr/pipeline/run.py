"""The one path from speech windows to a Transcript, shared by the library, batch runs and the service.

Every entry point cuts audio into windows its own way (one file in order, many files packed, an
upload as it arrives) and decodes them on its own kind of decoder (an engine called directly, the
cross-request scheduler, Ray replicas); what the windows become is decided here, once:

- the options a model really decodes with: its encoder trimming policy (`trims_encoder`);
- the language: given, or detected once on the first window by the first model (an English-only
  model is English), and used for every window;
- the fallback chain: a window under `min_confidence` is decoded again by each fallback model in
  turn and the most confident result is kept; a fallback decodes in the language the first model
  detected, unless that model is English-only and no language was given (then the fallback, which
  can hear other languages, detects it itself instead of translating into English);
- the Transcript: numbered segments in time order, each with its own confidence.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ..core.options import DecodingOptions, TranscribeOptions, VadOptions
from ..core.transcript import Segment, Timings, Transcript
from ..engine import AudioWindow, WindowResult
from .guard import flag_segments, script_warnings

log = logging.getLogger(__name__)


class WindowDecoder(Protocol):
    """Decodes windows on one model: an engine called directly, or through the shared scheduler."""

    @property
    def name(self) -> str: ...

    @property
    def multilingual(self) -> bool: ...

    def check(self, options: DecodingOptions) -> None:
        """Refuse options the model cannot honour (InvalidOptionError)."""
        ...

    def detect(self, window: AudioWindow) -> tuple[str, float]:
        """The language of one window and its probability."""
        ...

    def submit(self, windows: list[AudioWindow], options: DecodingOptions) -> list[Future[WindowResult]]:
        """Decode the windows (with `options.language` set); one future per window."""
        ...


def trims_encoder(configured: bool | None, multilingual: bool) -> bool:
    """Whether windows are encoded in a context trimmed to their audio (faster), unless configured.

    On by default for English-only models only: on English the trimmed context gave the same or a
    better WER, on FLEURS de/es/fr/pt with base it cost accuracy (15.6 % → 18.5 % in batch runs, and
    over HTTP it dropped words that the full context kept).
    """
    return configured if configured is not None else not multilingual


TRIMMED_WINDOW_SECONDS = 15.0


def window_vad(vad: VadOptions | None, trims: bool) -> VadOptions | None:
    """How speech is cut into windows for a model: at most 15 s when its encoder context is trimmed.

    The encoder's cost grows faster than its context (tiny.en here: 15 s 0.11 s, 30 s 0.45 s), so two
    15-s windows encode in half the time of one 30-s window. On a 60-min recording of many speakers
    (tiny.en, 2 cores): 78 s at WER 6.8 % against 98 s at 7.3 % with 30-s windows. A model that
    always encodes 30 s (multilingual ones) keeps 30-s windows: shorter ones would only add decodes.
    """
    if vad is None or not trims:
        return vad
    return replace(vad, max_window_s=min(vad.max_window_s, TRIMMED_WINDOW_SECONDS))


def decoding_for(decoder: WindowDecoder, options: DecodingOptions, language: str | None) -> DecodingOptions:
    """`options` as `decoder`'s model decodes them: its trimming policy, in `language`."""
    return replace(options, language=language, trim_encoder=trims_encoder(options.trim_encoder, decoder.multilingual))


class EngineDecoder:
    """A WindowDecoder over an engine called in the caller's thread (one batch per call)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    @property
    def name(self) -> str:
        return str(self.engine.name)

    @property
    def multilingual(self) -> bool:
        return bool(self.engine.multilingual)

    def check(self, options: DecodingOptions) -> None:
        self.engine.check_options(options)

    def detect(self, window: AudioWindow) -> tuple[str, float]:
        [(language, probability)] = self.engine.detect_languages([window])
        return str(language), float(probability)

    def submit(self, windows: list[AudioWindow], options: DecodingOptions) -> list[Future[WindowResult]]:
        if hasattr(self.engine, "submit"):  # decoded on the model's workers while the caller cuts more windows
            return list(self.engine.submit(windows, options))
        results, _, _ = self.engine.transcribe_batch(windows, options, options.language)  # e.g. Ray replicas
        futures: list[Future[WindowResult]] = []
        for result in results:
            future: Future[WindowResult] = Future()
            future.set_result(result)
            futures.append(future)
        return futures


@dataclass(frozen=True)
class Language:
    code: str | None
    probability: float = 1.0
    detected: bool = False  # by a multilingual model (an English-only model's "en" is not a detection)


class TranscriptRun:
    """One transcription: settles the language, decodes windows down the fallback chain, builds the Transcript.

    `chain[0]` is the model asked for; the others are fallbacks, in order.
    """

    def __init__(self, chain: Sequence[WindowDecoder], options: TranscribeOptions) -> None:
        self.chain = list(chain)
        self.options = options
        given = options.decoding.language
        self.language = Language(given) if given else Language(None)

    def check(self) -> None:
        """Refuse, before any audio is decoded, options a model of the chain cannot honour."""
        for level, decoder in enumerate(self.chain):
            decoder.check(self.decoding(level))

    def adopt(self, code: str | None, probability: float) -> None:
        """A language settled elsewhere (batch runs detect the first windows of many files at once)."""
        if self.language.code is None and code is not None:
            self.language = Language(code, probability, detected=self.chain[0].multilingual)

    def settle(self, first: AudioWindow) -> None:
        """Fix the language from the first window, once."""
        if self.language.code is not None:
            return
        decoder = self.chain[0]
        if not decoder.multilingual:
            self.language = Language("en")
            return
        code, probability = decoder.detect(first)
        self.language = Language(code, probability, detected=True)

    def vad(self) -> VadOptions | None:
        """The VAD options the audio is cut into windows with, for the first model (`window_vad`)."""
        return window_vad(
            self.options.vad, trims_encoder(self.options.decoding.trim_encoder, self.chain[0].multilingual)
        )

    @property
    def per_window(self) -> bool:
        """Whether each window has its own language (a model per language: pipeline.routing)."""
        return bool(getattr(self.chain[0], "per_window_language", False))

    def decoding(self, level: int = 0, window_language: str | None = None) -> DecodingOptions:
        """The options the model at `level` of the chain decodes with (for a window in `window_language`)."""
        if level == 0 and self.per_window:  # the router settles each window's language and model options
            return self.options.decoding
        language = window_language if self.per_window else self.language.code
        if level > 0 and not (self.options.decoding.language or self.language.detected or self.per_window):
            language = None  # an English-only first model cannot tell: the fallback detects
        return decoding_for(self.chain[level], self.options.decoding, language)

    def submit(self, windows: list[AudioWindow]) -> list[Future[WindowResult]]:
        """Start decoding windows on the first model (settling the language on the first call)."""
        self.settle(windows[0])
        return self.chain[0].submit(windows, self.decoding(0))

    def improve(self, results: list[WindowResult]) -> list[WindowResult]:
        """Windows under `min_confidence` decoded again down the fallback chain; the most confident wins."""
        improved = list(results)
        for level in range(1, len(self.chain)):
            weak = [i for i, r in enumerate(improved) if r.segments and r.confidence < self.options.min_confidence]
            if not weak:
                break
            futures = [self._retry(level, improved[i]) for i in weak]
            for index, future in zip(weak, futures):
                candidate = future.result()
                if candidate.confidence > improved[index].confidence:
                    log.info("fallback %s replaced the window at %.1f s", candidate.model, candidate.window.offset)
                    improved[index] = candidate
        return improved

    def _retry(self, level: int, result: WindowResult) -> Future[WindowResult]:
        [future] = self.chain[level].submit([result.window], self.decoding(level, result.language))
        return future

    def decode(self, windows: list[AudioWindow]) -> list[WindowResult]:
        """Blocking: decode windows on the first model, then down the fallback chain."""
        return self.improve([future.result() for future in self.submit(windows)])

    def transcript(
        self, results: Sequence[WindowResult], duration: float, source: str, timings: Timings | None = None
    ) -> Transcript:
        segments = segments_from_results(results)
        language = (self.per_window and main_language(segments)) or self.language.code or "en"
        segments = flag_segments(segments, language)
        spoken = sum(1 for result in results if result.window.speech_end is not None)  # VAD heard speech
        return Transcript(
            segments=segments,
            warnings=script_warnings(segments, language, self.chain[0].name, spoken),
            language=language,
            language_probability=self.language.probability,
            duration=round(duration, 3),
            model=self.chain[0].name,
            task=self.options.decoding.task,
            source=source,
            timings=timings or Timings(),
        )


def decode_stream(
    run: TranscriptRun,
    windows: Iterable[AudioWindow],
    in_flight: int,
    on_result: Callable[[WindowResult], None],
    wait: Callable[[Future[WindowResult]], WindowResult] = Future.result,
) -> None:
    """Decode windows as they are cut (the caller's thread keeps decoding audio and finding speech while
    the engine works), at most `in_flight` outstanding; each result, down the fallback chain, goes to
    `on_result` in window order, without its audio (memory stays flat however long the recording).
    Unfinished work is cancelled on any error."""
    outstanding: deque[Future[WindowResult]] = deque()
    try:
        for window in windows:
            outstanding.extend(run.submit([window]))
            while len(outstanding) >= in_flight or (outstanding and outstanding[0].done()):
                on_result(run.improve([wait(outstanding.popleft())])[0].released())
        while outstanding:
            on_result(run.improve([wait(outstanding.popleft())])[0].released())
    finally:
        for future in outstanding:
            future.cancel()


def main_language(segments: Sequence[Segment]) -> str | None:
    """The language most of the speech is in (by segment time), when windows have their own."""
    spoken: dict[str, float] = {}
    for segment in segments:
        spoken[segment.language] = spoken.get(segment.language, 0.0) + segment.end - segment.start
    return max(spoken, key=spoken.__getitem__) if spoken else None


def segments_from_results(results: Sequence[WindowResult]) -> tuple[Segment, ...]:
    """Numbered segments, in time order, from the engine's window results."""
    pairs = sorted(((s, r) for r in results for s in r.segments), key=lambda pair: pair[0].start)
    return tuple(_segment(index, raw, result) for index, (raw, result) in enumerate(pairs))


def _segment(index: int, raw: Any, result: WindowResult) -> Segment:
    decoded = result.decoded
    return Segment(
        id=index,
        start=raw.start,
        end=raw.end,
        text=raw.text,
        avg_logprob=round(decoded.avg_logprob, 4),
        no_speech_prob=round(decoded.no_speech_prob, 4),
        compression_ratio=round(decoded.compression_ratio, 4),
        temperature=decoded.temperature,
        confidence=raw.confidence if raw.confidence is not None else result.confidence,
        tokens=raw.tokens,
        words=raw.words,
        model=result.model,
        language=result.language,
    )
