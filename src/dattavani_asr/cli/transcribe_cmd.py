"""What `dattavani-asr transcribe` does for each file."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from ..audio import probe
from ..config import Settings
from ..errors import DattavaniError, InvalidOptionError
from ..transcriber import Transcriber, make_options
from ..transcript import Transcript
from ..writers import output_path, parse_formats, write_atomic, write_stdout
from .app import console

PROGRESS_MIN_SECONDS = 60.0


class TranscribeJob:
    """Transcribes files one after another; one failing file never stops the others."""

    def __init__(
        self,
        settings: Settings,
        *,
        output: str | None,
        quiet: bool,
        start: float | None,
        end: float | None,
        channel: int | None,
    ) -> None:
        self.settings = settings
        self.formats = parse_formats(settings.formats)
        if output not in (None, "-"):
            raise InvalidOptionError("--output/-o only accepts '-' (stdout); use --output-dir for files")
        self.to_stdout = output == "-"
        self.quiet = quiet
        self.transcriber = Transcriber(
            settings.model,
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            cache_dir=settings.cache_dir,
        )
        self.options = make_options(
            language=settings.language,
            task=settings.task,
            beam_size=settings.beam_size,
            word_timestamps=settings.word_timestamps,
            vad=settings.vad,
            initial_prompt=settings.initial_prompt,
            hotwords=settings.hotwords,
            start=start,
            end=end,
            channel=channel,
            batch_size=settings.batch_size,
            fallback_model=settings.fallback_model,
            min_confidence=settings.min_confidence,
            trim_encoder=bool(settings.trim_encoder),
        )

    def run(self, files: list[Path]) -> list[DattavaniError]:
        failures: list[DattavaniError] = []
        targets = Counter(output_path(path, "txt", self.settings.output_dir) for path in files)
        for path in files:
            try:
                self._one(path, keep_suffix=targets[output_path(path, "txt", self.settings.output_dir)] > 1)
            except DattavaniError as exc:
                console.print(f"[red]error:[/red] {exc}", highlight=False)
                failures.append(exc)
        return failures

    def _one(self, path: Path, *, keep_suffix: bool) -> None:
        transcript = self._transcribe_with_progress(path)
        if self.to_stdout:
            write_stdout(transcript, self.formats[0])
            return
        for fmt in self.formats:
            target = output_path(path, fmt, self.settings.output_dir, keep_suffix=keep_suffix)
            written = write_atomic(transcript, fmt, target)
            console.print(f"[dim]wrote {written}[/dim]", highlight=False)
        if not self.quiet:
            sys.stdout.write(transcript.text + "\n")
            sys.stdout.flush()

    def _transcribe_with_progress(self, path: Path) -> Transcript:
        span = self._expected_seconds(path)
        if span is None or span < PROGRESS_MIN_SECONDS:
            return self.transcriber.transcribe(path, self.options)
        start = self.options.start or 0.0
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
        with Progress(*columns, TimeRemainingColumn(), console=console, transient=True) as bar:
            task = bar.add_task(path.name, total=span)
            transcript = self.transcriber.transcribe(
                path, self.options, progress=lambda position: bar.update(task, completed=position - start)
            )
            bar.update(task, completed=span)
        return transcript

    def _expected_seconds(self, path: Path) -> float | None:
        duration = probe(path).duration
        if duration is None:
            return None
        end = min(self.options.end, duration) if self.options.end is not None else duration
        return max(0.0, end - (self.options.start or 0.0))
