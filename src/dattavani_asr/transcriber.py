"""The library entry point: `Transcriber(model="tiny.en").transcribe(path)`."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .audio import SILENCE_PEAK, AudioSource, describe_source, iter_audio
from .chunking import AudioStats, speech_windows
from .errors import EmptyAudioError
from .models import DEFAULT_MODEL
from .options import DecodingOptions, TranscribeOptions, VadOptions
from .transcript import Segment, Timings, Transcript

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float], None]


@dataclass
class _Run:
    """Mutable state of one transcription while windows stream through."""

    options: TranscribeOptions
    language: str | None
    language_probability: float = 1.0
    results: list[Any] = field(default_factory=list)
    inference_seconds: float = 0.0


def make_options(
    *,
    language: str | None = None,
    task: str = "transcribe",
    beam_size: int = 5,
    word_timestamps: bool = False,
    vad: bool = True,
    initial_prompt: str | None = None,
    hotwords: str | None = None,
    temperatures: tuple[float, ...] | None = None,
    start: float | None = None,
    end: float | None = None,
    channel: int | None = None,
    batch_size: int = 8,
    fallback_model: str | None = None,
    min_confidence: float = 0.6,
    trim_encoder: bool = False,
) -> TranscribeOptions:
    """Build frozen options from the keyword arguments most callers use."""
    decoding = DecodingOptions(
        task=task,
        language=language,
        beam_size=beam_size,
        word_timestamps=word_timestamps,
        initial_prompt=initial_prompt,
        hotwords=hotwords,
        trim_encoder=trim_encoder,
    )
    if temperatures is not None:
        decoding = replace(decoding, temperatures=temperatures)
    return TranscribeOptions(
        decoding=decoding,
        vad=VadOptions() if vad else None,
        batch_size=batch_size,
        start=start,
        end=end,
        channel=channel,
        fallback_model=fallback_model,
        min_confidence=min_confidence,
    )


class Transcriber:
    """Transcribes audio/video files, bytes, file objects or 16 kHz float32 arrays.

    Models load on first use and are shared per process by (model, device, compute type).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 0,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.model_name = model
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.cache_dir = Path(cache_dir) if cache_dir else None

    def engine(self, model: str | None = None) -> Any:
        """The WhisperEngine for `model` (default: this transcriber's model), loading it if needed."""
        from .engine import WhisperEngine, load_model

        loaded = load_model(
            model or self.model_name,
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=self.cpu_threads,
            cache_dir=self.cache_dir,
        )
        return WhisperEngine(loaded)

    def transcribe(
        self,
        source: AudioSource | np.ndarray,
        options: TranscribeOptions | None = None,
        *,
        progress: ProgressCallback | None = None,
        **kwargs: Any,
    ) -> Transcript:
        """Transcribe one input. Pass `options`, or keyword arguments accepted by `make_options`."""
        options = options or make_options(**kwargs)
        blocks = _opened(self._blocks(source, options))  # bad input fails before any model loads
        engine = self.engine()
        engine.check_options(options.decoding)
        fallback = self.engine(options.fallback_model) if options.fallback_model else None
        started = time.perf_counter()
        stats = AudioStats()
        run = _Run(options=options, language=options.decoding.language)
        windows = speech_windows(blocks, options.vad, offset=options.start or 0.0, stats=stats)
        for batch in _batched(windows, options.batch_size):
            self._run_batch(engine, fallback, batch, run)
            if progress is not None:
                progress(batch[-1].end)
        check_not_empty(stats, source)
        return self._transcript(run, stats, source, engine.name, time.perf_counter() - started)

    def _blocks(self, source: AudioSource | np.ndarray, options: TranscribeOptions) -> Iterable[np.ndarray]:
        if isinstance(source, np.ndarray):
            return [np.asarray(source, dtype=np.float32).reshape(-1)]
        return iter_audio(source, start=options.start, end=options.end, channel=options.channel)

    def _run_batch(self, engine: Any, fallback: Any, batch: list[Any], run: _Run) -> None:
        started = time.perf_counter()
        decoding = run.options.decoding
        results, language, probability = engine.transcribe_batch(batch, decoding, run.language)
        if run.language is None:
            run.language, run.language_probability = language, probability
        if fallback is not None:
            results = _apply_fallback(fallback, results, replace(decoding, language=run.language), run.options)
        run.results.extend(results)
        run.inference_seconds += time.perf_counter() - started

    def _transcript(self, run: _Run, stats: AudioStats, source: Any, model: str, total: float) -> Transcript:
        return Transcript(
            segments=segments_from_results(run.results),
            language=run.language or "en",
            language_probability=run.language_probability,
            duration=round(stats.duration, 3),
            model=model,
            task=run.options.decoding.task,
            source=describe_source(source) if not isinstance(source, np.ndarray) else "<array>",
            timings=Timings(
                audio=round(total - run.inference_seconds, 3),
                inference=round(run.inference_seconds, 3),
                total=round(total, 3),
            ),
        )


def _opened(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Decode the first block now, so open/decode errors surface before the model loads."""
    iterator = iter(blocks)
    first = next(iterator, None)
    return iter(()) if first is None else itertools.chain([first], iterator)


def _batched(windows: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for window in windows:
        batch.append(window)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _apply_fallback(
    fallback: Any, results: list[Any], decoding: DecodingOptions, options: TranscribeOptions
) -> list[Any]:
    """Re-run low-confidence windows on the fallback model; keep whichever is more confident."""
    weak = [i for i, r in enumerate(results) if r.segments and r.confidence < options.min_confidence]
    if not weak:
        return results
    retried, _, _ = fallback.transcribe_batch([results[i].window for i in weak], decoding, decoding.language)
    merged = list(results)
    for index, candidate in zip(weak, retried):
        if candidate.confidence > merged[index].confidence:
            log.info("fallback model %s replaced window at %.1f s", candidate.model, candidate.window.offset)
            merged[index] = candidate
    return merged


def segments_from_results(results: list[Any]) -> tuple[Segment, ...]:
    """Numbered segments, in time order, from the engine's window results."""
    pairs = sorted(((s, r) for r in results for s in r.segments), key=lambda pair: pair[0].start)
    return tuple(_segment(index, raw, result) for index, (raw, result) in enumerate(pairs))


def _segment(index: int, raw: Any, result: Any) -> Segment:
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
        confidence=result.confidence,
        tokens=raw.tokens,
        words=raw.words,
        model=result.model,
    )


def check_not_empty(stats: AudioStats, source: Any) -> None:
    name = "<array>" if isinstance(source, np.ndarray) else describe_source(source)
    if stats.samples == 0:
        raise EmptyAudioError(f"{name}: no audio samples (empty stream or range)")
    if stats.peak < SILENCE_PEAK:
        raise EmptyAudioError(f"{name}: audio is silent ({stats.duration:.1f} s of digital silence)")
