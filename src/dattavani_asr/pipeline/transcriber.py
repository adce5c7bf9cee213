"""The library entry point: `Transcriber(model="tiny.en").transcribe(path)`."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..audio.decode import SILENCE_PEAK, AudioSource, describe_source, iter_audio
from ..audio.windows import AudioStats, speech_windows
from ..core.errors import EmptyAudioError
from ..core.options import DecodingOptions, TranscribeOptions, VadOptions
from ..core.transcript import Timings, Transcript
from ..engine import WindowResult
from ..models import DEFAULT_MODEL
from .routing import routed
from .run import EngineDecoder, TranscriptRun, WindowDecoder, decode_stream

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float], None]


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
    fallback_model: str | Sequence[str] | None = None,
    min_confidence: float = 0.6,
    trim_encoder: bool | None = None,
) -> TranscribeOptions:
    """Build frozen options from the keyword arguments most callers use.

    `fallback_model` is one model, a comma list (`"base,small"`) or a sequence: tried in turn.
    """
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
        fallback_models=fallback_chain(fallback_model),
        min_confidence=min_confidence,
    )


def fallback_chain(models: str | Sequence[str] | None) -> tuple[str, ...]:
    """Fallback model names from a comma list or a sequence, in order, without blanks."""
    names = models.split(",") if isinstance(models, str) else list(models or ())
    return tuple(name.strip() for name in names if name.strip())


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
        from ..engine import WhisperEngine, load_model

        loaded = load_model(
            model or self.model_name,
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=self.cpu_threads,
            cache_dir=self.cache_dir,
        )
        return WhisperEngine(loaded)

    def chain(self, options: TranscribeOptions) -> list[WindowDecoder]:
        """The model (or a model per language: `kn=kannada-small,*=base`), then each fallback model, loaded."""
        first = routed(self.model_name, lambda name: EngineDecoder(self.engine(name)))
        return [first, *(EngineDecoder(self.engine(name)) for name in options.fallback_models)]

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
        run = TranscriptRun(self.chain(options), options)
        run.check()
        started = time.perf_counter()
        stats = AudioStats()
        results: list[WindowResult] = []

        def collect(result: WindowResult) -> None:
            results.append(result)
            if progress is not None:
                progress(result.window.end)

        windows = speech_windows(blocks, run.vad(), offset=options.start or 0.0, stats=stats)
        decode_stream(run, windows, in_flight=max(2, options.batch_size), on_result=collect)
        check_not_empty(stats, source)
        total = time.perf_counter() - started
        return run.transcript(results, stats.duration, _name(source), Timings(total=round(total, 3)))

    def _blocks(self, source: AudioSource | np.ndarray, options: TranscribeOptions) -> Iterable[np.ndarray]:
        if isinstance(source, np.ndarray):
            return [np.asarray(source, dtype=np.float32).reshape(-1)]
        return iter_audio(source, start=options.start, end=options.end, channel=options.channel)


def _name(source: AudioSource | np.ndarray) -> str:
    return "<array>" if isinstance(source, np.ndarray) else describe_source(source)


def _opened(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Decode the first block now, so open/decode errors surface before the model loads."""
    iterator = iter(blocks)
    first = next(iterator, None)
    return iter(()) if first is None else itertools.chain([first], iterator)


def check_not_empty(stats: AudioStats, source: Any) -> None:
    name = _name(source)
    if stats.samples == 0:
        raise EmptyAudioError(f"{name}: no audio samples (empty stream or range)")
    if stats.peak < SILENCE_PEAK:
        raise EmptyAudioError(f"{name}: audio is silent ({stats.duration:.1f} s of digital silence)")
