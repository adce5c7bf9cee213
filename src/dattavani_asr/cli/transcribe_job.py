"""What `dattavani-asr transcribe` does for each file or URL."""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from ..audio.decode import probe
from ..config import Settings
from ..core.errors import DattavaniError, InvalidOptionError
from ..core.transcript import Transcript
from ..io.writers import output_path, parse_formats, write_atomic, write_stdout
from .common import console, options_from, say_error, transcriber_from

PROGRESS_MIN_SECONDS = 60.0
URL_SCHEMES = ("http://", "https://")


@dataclass(frozen=True)
class Input:
    """One command-line input: `spec` as given; `path` names its transcripts (a URL's file name, in .)."""

    spec: str
    path: Path
    is_url: bool


def parse_inputs(specs: list[str]) -> list[Input]:
    """Local paths and http(s) URLs, in order, each once."""
    inputs: dict[str, Input] = {}
    for spec in specs:
        if spec.lower().startswith(URL_SCHEMES):
            from ..io.sources.http import url_name  # httpx is imported only when a URL is given

            inputs.setdefault(spec, Input(spec, Path(url_name(spec)), is_url=True))
        else:
            inputs.setdefault(os.path.abspath(spec), Input(spec, Path(spec), is_url=False))
    return list(inputs.values())


def _same_file_key(path: Path) -> str:
    # Case-insensitive: on macOS and Windows disks Talk.txt and talk.txt are one file.
    return os.path.abspath(path).casefold()


def transcript_names(inputs: list[Input], output_dir: Path | None) -> list[bool]:
    """Per input, whether its transcripts keep its extension (`<name>.<ext>.txt`) to stay apart from another's.

    Raises InvalidOptionError when two inputs would still write the same file.
    """

    def target(item: Input, keep_suffix: bool) -> Path:
        return output_path(item.path, "txt", output_dir, keep_suffix=keep_suffix)

    counts = Counter(_same_file_key(target(item, False)) for item in inputs)
    keep = [counts[_same_file_key(target(item, False))] > 1 for item in inputs]
    writers: dict[str, Input] = {}
    for item, keep_suffix in zip(inputs, keep):
        path = target(item, keep_suffix)
        other = writers.setdefault(_same_file_key(path), item)
        if other is not item:
            raise InvalidOptionError(
                f"{other.spec} and {item.spec} would both be transcribed to {path.with_suffix('')}.<format>; "
                "rename one, or transcribe them into different --output-dir folders"
            )
    return keep


def local_output_dir(output_dir: Path | str | None) -> Path | None:
    if isinstance(output_dir, str):
        raise InvalidOptionError(
            f"--output-dir {output_dir}: transcribe writes local files; batch writes to remote storage"
        )
    return output_dir


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
        self.output_dir = local_output_dir(settings.output_dir)
        self.quiet = quiet
        self.transcriber = transcriber_from(settings)
        self.options = options_from(settings, start=start, end=end, channel=channel)

    def run(self, specs: list[str]) -> list[DattavaniError]:
        """Transcribe each input; failures are reported and returned, and never stop the others."""
        inputs = parse_inputs(specs)
        keep = [False] * len(inputs) if self.to_stdout else transcript_names(inputs, self.output_dir)
        failures: list[DattavaniError] = []
        for item, keep_suffix in zip(inputs, keep):
            try:
                self._one(item, keep_suffix=keep_suffix)
            except DattavaniError as exc:
                say_error(exc)
                failures.append(exc)
        return failures

    def _one(self, item: Input, *, keep_suffix: bool) -> None:
        transcript = self._transcribe_url(item.spec) if item.is_url else self._transcribe(item.path, item.path.name)
        for warning in transcript.warnings:  # on stderr, whatever the output
            console.print(f"[yellow]warning:[/yellow] {escape(item.spec)}: {escape(warning)}", highlight=False)
        if self.to_stdout:
            write_stdout(transcript, self.formats[0])
            return
        for fmt in self.formats:
            target = output_path(item.path, fmt, self.output_dir, keep_suffix=keep_suffix)
            written = write_atomic(transcript, fmt, target)
            console.print(f"[dim]wrote {escape(str(written))}[/dim]", highlight=False)
        if not self.quiet:
            sys.stdout.write(transcript.text + "\n")
            sys.stdout.flush()

    def _transcribe_url(self, url: str) -> Transcript:
        """Read in byte ranges where the server allows, else downloaded to an anonymous temp file."""
        from ..io.sources.http import HttpSource

        source = HttpSource(max_download=self.settings.max_download_mb << 20)
        [item] = list(source.expand(url, None))
        with source.open(item) as stream:
            return self._transcribe(stream, item.name)

    def _transcribe(self, source: Path | IO[bytes], label: str) -> Transcript:
        span = self._expected_seconds(source)
        if span is None or span < PROGRESS_MIN_SECONDS:
            return self.transcriber.transcribe(source, self.options)
        start = self.options.start or 0.0
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"))
        with Progress(*columns, TimeRemainingColumn(), console=console, transient=True) as bar:
            task = bar.add_task(label, total=span)
            transcript = self.transcriber.transcribe(
                source, self.options, progress=lambda position: bar.update(task, completed=position - start)
            )
            bar.update(task, completed=span)
        return transcript

    def _expected_seconds(self, source: Path | IO[bytes]) -> float | None:
        duration = probe(source).duration
        if not isinstance(source, Path):
            source.seek(0)  # probing read the start of the stream
        if duration is None:
            return None
        end = min(self.options.end, duration) if self.options.end is not None else duration
        return max(0.0, end - (self.options.start or 0.0))
