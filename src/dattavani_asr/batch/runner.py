"""`run_batch()`: expand sources, skip what is done, run the pipeline, write outputs and summary."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..core.errors import DattavaniError, InvalidOptionError
from ..core.options import TranscribeOptions
from ..core.transcript import Timings, Transcript
from ..engine import WindowResult
from ..io.sources import Sink, Source, SourceItem, expand_all, output_sink
from ..io.writers import OUTPUT_SUBDIR, render, write_text_atomic
from ..pipeline.checkpoint import Checkpointer
from ..pipeline.routing import RoutedEngine, parse_routes
from ..pipeline.run import EngineDecoder, TranscriptRun, WindowDecoder, decoding_for
from ..pipeline.speakers import SpeakerTrack, check_available
from ..pipeline.transcriber import Transcriber, check_not_empty, speaker_device
from .jobs import FileJob
from .outputs import Destination, mirror, plan_destinations
from .pipeline import Handlers, run_pipeline
from .state import STATE_FILENAME, RunState

log = logging.getLogger(__name__)
SUMMARY_FILENAME = "batch-summary.json"


@dataclass(frozen=True)
class BatchConfig:
    specs: list[str]
    formats: list[str]
    output_dir: str | Path | None = None  # a local folder, or s3://, gs://, a Drive folder
    pattern: str | None = None
    workers: int = 2
    retry_failed: bool = False
    max_attempts: int = 3
    file_timeout: float | None = None
    state_dir: Path | None = None
    pack: bool = True  # short files share Whisper's 30-s windows (packing.py); False: one file per window
    ray_address: str | None = None
    ray_replicas: int | None = None


@dataclass
class BatchSummary:
    files: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def real_time_factor(self) -> float:
        return self.wall_seconds / self.audio_seconds if self.audio_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"real_time_factor": round(self.real_time_factor, 4)}


def remote_output(config: BatchConfig) -> bool:
    return config.output_dir is not None and "://" in str(config.output_dir)


def state_directory(config: BatchConfig) -> Path:
    """Where the state database and summary live: the output dir, else beside the first source.

    A remote output dir keeps them in the cache dir, in a folder named after a digest of its URI, so
    the same command finds them again.
    """
    if config.state_dir is not None:
        return config.state_dir
    if config.output_dir is not None and remote_output(config):
        from ..models import default_cache_dir

        digest = hashlib.sha256(str(config.output_dir).rstrip("/").encode()).hexdigest()[:16]
        return default_cache_dir() / "batch-state" / digest
    if config.output_dir is not None:
        return Path(config.output_dir)
    first = Path(config.specs[0]) if config.specs and "://" not in config.specs[0] else Path.cwd()
    folder = first if first.is_dir() else first.parent if first.exists() else Path.cwd()
    return folder / OUTPUT_SUBDIR


def options_key(model: str, options: TranscribeOptions, formats: list[str]) -> str:
    """A digest of everything that shapes the outputs: change it and files are redone."""
    described = json.dumps([model, repr(options), sorted(formats)], sort_keys=True)
    return hashlib.sha256(described.encode()).hexdigest()[:16]


class BatchRun:
    """One invocation of `dattavani-asr batch`."""

    def __init__(self, config: BatchConfig, transcriber: Transcriber, options: TranscribeOptions) -> None:
        if options.channels_as_speakers:
            raise InvalidOptionError(
                "batch runs do not split calls by channel yet: use `transcribe --channels-as-speakers`"
            )
        if options.speakers is not None:
            check_available()
        self.config = config
        self.transcriber = transcriber
        self.options = options
        self.summary = BatchSummary()
        self.state = RunState(state_directory(config) / STATE_FILENAME)
        self.on_progress: Callable[[FileJob | None, BatchSummary], None] = lambda job, summary: None
        self.on_unplanned: Callable[[str, DattavaniError], None] = lambda name, error: None
        self.on_resume: Callable[[FileJob], None] = lambda job: None  # a killed run had finished part of it
        self.chain: list[WindowDecoder] = []

    def plan(self) -> list[FileJob]:
        """Jobs for the items not done yet; items that cannot be read or written are counted as failed."""
        key = options_key(self.transcriber.model_name, self.options, self.config.formats)
        language = self.options.decoding.language
        found = list(expand_all(self.config.specs, self.config.pattern, on_error=self._unreadable))
        sources = {item.uri: source for item, source in found}
        jobs: list[FileJob] = []
        for destination in self._destinations(found):
            self.summary.files += 1
            decision = self.state.decide(
                destination.item, key, retry_failed=self.config.retry_failed, max_attempts=self.config.max_attempts
            )
            if decision == "skip":
                self.summary.skipped += 1
                continue
            source = sources[destination.item.uri]
            job = FileJob(len(jobs), destination.item, source, destination.sink, destination.base, language)
            if self.options.speakers is not None:  # clustered over the whole file: it starts again from 0
                job.speakers = SpeakerTrack(self.options.speakers, speaker_device(self.transcriber.device))
            else:
                job.resume(Checkpointer(self.state.windows, job.item.uri), self.options.start or 0.0)
            if job.resume_from is not None:
                log.info("%s: resumes at %.1f s", job.item.uri, job.resume_from)
                self.on_resume(job)
            jobs.append(job)
        return jobs

    def _destinations(self, found: list[tuple[SourceItem, Source]]) -> list[Destination]:
        """Each item's sink and output name (mirrored under --output-dir), unique by construction."""
        pairs: list[tuple[SourceItem, Sink]] = []
        if self.config.output_dir is not None:
            sink = output_sink(str(self.config.output_dir))
            pairs = [(item, sink) for item in mirror([item for item, _ in found])]
        for item, source in found if self.config.output_dir is None else ():
            try:
                pairs.append((item, source.default_sink()))
            except DattavaniError as exc:
                self._unplanned(item.uri, exc)
        planned, refused = plan_destinations(pairs, self.config.formats, self.state.outputs_taken())
        for item, error in refused:
            self._unplanned(item.uri, error)
        return planned

    def _unreadable(self, spec: str, exc: DattavaniError) -> None:
        """A source that named nothing (missing path, dead URL): a failed item; the run goes on."""
        self._unplanned(spec, exc)

    def _unplanned(self, name: str, exc: DattavaniError) -> None:
        self.summary.files += 1
        self.summary.failed += 1
        self.summary.failures.append({"file": name, "error": type(exc).__name__, "message": str(exc)})
        self.on_unplanned(name, exc)

    def run(self) -> BatchSummary:
        started = time.monotonic()
        jobs = self.plan()
        self.on_progress(None, self.summary)
        if jobs:
            engine = self._engine()
            try:
                options = self._prepare(engine)
                for job in jobs:
                    self.state.started(job.item.uri)
                run_pipeline(
                    jobs,
                    engine,
                    options,
                    Handlers(self.keep, self.finish),
                    workers=self.config.workers,
                    file_timeout=self.config.file_timeout,
                    pack=self.config.pack,
                )
            finally:
                if self.config.ray_address is not None:
                    engine.shutdown()
        self.summary.wall_seconds = round(time.monotonic() - started, 3)
        if jobs or self.summary.failed or not self.summary_path.exists():
            self._write_summary()  # a re-run with nothing to do keeps the summary of the run that did the work
        self.state.close()
        return self.summary

    def _prepare(self, engine: Any) -> TranscribeOptions:
        """The model chain (fallbacks load here, on this machine), checked; the options the engine decodes with."""
        fallbacks = [EngineDecoder(self.transcriber.engine(name)) for name in self.options.fallback_models]
        self.chain = [EngineDecoder(engine), *fallbacks]
        run = TranscriptRun(self.chain, self.options)
        run.check()
        decoding = decoding_for(self.chain[0], self.options.decoding, self.options.decoding.language)
        if self.options.speakers is not None:  # speakers are decided per word
            decoding = replace(decoding, word_timestamps=True)
        return replace(self.options, decoding=decoding, vad=run.vad())

    def _engine(self) -> Any:
        """The local engine, or engine replicas on the Ray cluster given by --ray."""
        routes = parse_routes(self.transcriber.model_name)
        if routes is not None:
            if self.config.ray_address is not None:
                raise InvalidOptionError("a model per language (lang=model,…) runs locally only, not with --ray")
            engines = {name: self.transcriber.engine(name) for name in routes.models}
            return RoutedEngine(routes, engines, self.options.decoding)
        if self.config.ray_address is None:
            return self.transcriber.engine()
        from .ray_engine import RayEngine

        return RayEngine(self.transcriber, self.config.ray_address, replicas=self.config.ray_replicas)

    def keep(self, job: FileJob, result: WindowResult) -> None:
        """One finished window of a file, down the fallback chain, kept without its audio (and stored,
        once the file is long, so that a killed run resumes after it)."""
        run = TranscriptRun(self.chain, self.options)
        run.adopt(job.language, job.language_probability)
        [final] = run.improve([result])
        job.results.append(final.released())
        if job.checkpoint is not None:
            job.checkpoint.add(job.results[-1], job.language_probability)

    def finish(self, job: FileJob) -> None:
        """Write one file's outputs, then record it done (or record why it failed)."""
        try:
            if job.error is not None:
                raise job.error
            check_not_empty(job.stats, job.item.uri)
            transcript = self._transcript(job)
            if job.speakers is not None:
                transcript = job.speakers.label(transcript).without_words(self.options.decoding.word_timestamps)
            outputs = []
            for fmt in self.config.formats:
                filename = f"{job.base}.{fmt}"
                job.sink.write(job.item, filename, render(transcript, fmt))
                outputs.append(job.sink.target(job.item, filename))
        except Exception as exc:
            self._failed(job, exc)
        else:
            self.state.finished(job.item.uri, job.stats.duration, job.elapsed(), outputs)
            if job.checkpoint is not None:
                job.checkpoint.finished()
            self.summary.done += 1
            self.summary.audio_seconds = round(self.summary.audio_seconds + job.stats.duration, 3)
        finally:
            if job.speakers is not None:
                job.speakers.close()
        self.on_progress(job, self.summary)

    def _failed(self, job: FileJob, exc: BaseException) -> None:
        if not isinstance(exc, DattavaniError):
            log.warning("unexpected error on %s", job.item.uri, exc_info=exc)
        self.state.failed(job.item.uri, exc, job.elapsed())
        self.summary.failed += 1
        self.summary.failures.append({"file": job.item.uri, "error": type(exc).__name__, "message": str(exc)})

    def _transcript(self, job: FileJob) -> Transcript:
        """The file's kept windows, in the language its first window settled."""
        run = TranscriptRun(self.chain, self.options)
        run.adopt(job.language, job.language_probability)
        return run.transcript(job.results, job.stats.duration, job.item.uri, Timings(total=round(job.elapsed(), 3)))

    @property
    def summary_path(self) -> Path:
        return state_directory(self.config) / SUMMARY_FILENAME

    def _write_summary(self) -> None:
        path = self.summary_path
        if path.parent.is_dir():  # the temp file of a run killed while writing its summary
            for stale in path.parent.glob(f".{path.name}.*.part"):
                stale.unlink(missing_ok=True)
        write_text_atomic(json.dumps(self.summary.to_dict(), indent=2) + "\n", path)
