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
from ..core.errors import EmptyAudioError, InvalidOptionError
from ..core.options import DecodingOptions, SpeakerOptions, TranscribeOptions, VadOptions
from ..core.transcript import Timings, Transcript
from ..engine import AudioWindow, WindowResult
from ..engine.device import resolve_device
from ..models import DEFAULT_MODEL
from .routing import routed
from .run import EngineDecoder, TranscriptRun, WindowDecoder, decode_stream
from .speakers import SpeakerTrack, speaker_name

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
    diarize: bool = False,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    channels_as_speakers: bool = False,
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
        speakers=speaker_options(diarize, num_speakers, min_speakers, max_speakers),
        channels_as_speakers=channels_as_speakers,
    )


def speaker_options(
    diarize: bool, num_speakers: int | None, min_speakers: int | None, max_speakers: int | None
) -> SpeakerOptions | None:
    """Diarization options (None: no diarization); a speaker count alone turns it on."""
    if not (diarize or num_speakers or min_speakers or max_speakers):
        return None
    if min_speakers and max_speakers and min_speakers > max_speakers:
        raise InvalidOptionError(f"--min-speakers {min_speakers} is more than --max-speakers {max_speakers}")
    return SpeakerOptions(num_speakers, min_speakers, max_speakers)


def speaker_device(device: str) -> str:
    """Where speaker embeddings run: the engine's device."""
    return resolve_device(device)


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
        device_index: str | int | Sequence[int] = 0,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.model_name = model
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.device_index = device_index
        self.cache_dir = Path(cache_dir) if cache_dir else None

    def engine(self, model: str | None = None) -> Any:
        """The WhisperEngine for `model` (default: this transcriber's model), loading it if needed."""
        from ..engine import WhisperEngine, load_model

        loaded = load_model(
            model or self.model_name,
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=self.cpu_threads,
            device_index=self.device_index,
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
        if options.channels_as_speakers:
            return self._channels_as_speakers(source, options, progress)
        track = SpeakerTrack(options.speakers, speaker_device(self.device)) if options.speakers else None
        try:
            transcript = self._transcribe(source, with_words(options) if track else options, progress, track)
            return track.label(transcript).without_words(options.decoding.word_timestamps) if track else transcript
        finally:
            if track is not None:
                track.close()

    def _transcribe(
        self,
        source: AudioSource | np.ndarray,
        options: TranscribeOptions,
        progress: ProgressCallback | None,
        track: SpeakerTrack | None,
    ) -> Transcript:
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
        windows = _teed(windows, track.add) if track is not None else windows
        decode_stream(run, windows, in_flight=max(2, options.batch_size), on_result=collect)
        check_not_empty(stats, source)
        total = time.perf_counter() - started
        return run.transcript(results, stats.duration, _name(source), Timings(total=round(total, 3)))

    def _channels_as_speakers(
        self, source: AudioSource | np.ndarray, options: TranscribeOptions, progress: ProgressCallback | None
    ) -> Transcript:
        """A stereo call: each channel transcribed as its own speaker, the segments merged in time order."""
        if isinstance(source, np.ndarray) or not isinstance(source, (str, Path)):
            raise InvalidOptionError("--channels-as-speakers needs a file (its channels are read one at a time)")
        single = replace(options, channels_as_speakers=False, speakers=None)
        parts = [self.transcribe(source, replace(single, channel=channel), progress=progress) for channel in (0, 1)]
        return merge_channels(parts)

    def _blocks(self, source: AudioSource | np.ndarray, options: TranscribeOptions) -> Iterable[np.ndarray]:
        if isinstance(source, np.ndarray):
            return [np.asarray(source, dtype=np.float32).reshape(-1)]
        return iter_audio(source, start=options.start, end=options.end, channel=options.channel)


def with_words(options: TranscribeOptions) -> TranscribeOptions:
    """Options that time every word (speakers are put on words, then segments split where they change)."""
    return replace(options, decoding=replace(options.decoding, word_timestamps=True))


def _teed(windows: Iterable[AudioWindow], also: Callable[[AudioWindow], None]) -> Iterator[AudioWindow]:
    for window in windows:
        also(window)
        yield window


def merge_channels(parts: Sequence[Transcript]) -> Transcript:
    """One transcript of a call from one per channel: channel k speaks as SPEAKER_{k+1}."""
    labelled = [
        replace(s, speaker=speaker_name(k), words=tuple(replace(w, speaker=speaker_name(k)) for w in s.words))
        for k, part in enumerate(parts)
        for s in part.segments
    ]
    ordered = sorted(labelled, key=lambda segment: (segment.start, segment.end))
    segments = tuple(replace(segment, id=index) for index, segment in enumerate(ordered))
    warnings = tuple(dict.fromkeys(w for part in parts for w in part.warnings))
    duration = max(part.duration for part in parts)
    return replace(parts[0], segments=segments, warnings=warnings, duration=duration)


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
