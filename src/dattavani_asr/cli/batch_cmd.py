"""`dattavani-asr batch`: transcribe folders, globs, manifests and URLs, resumably."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..batch import BatchConfig, BatchRun, BatchSummary
from ..batch.jobs import FileJob
from ..io.writers import parse_formats
from .common import ConfigOption, console, options_from, report, settings_for, transcriber_from
from .options import (
    BatchSizeOption,
    BeamSizeOption,
    ComputeTypeOption,
    CpuThreadsOption,
    DeviceIndexOption,
    DeviceOption,
    DiarizeOption,
    FallbackModelOption,
    HotwordsOption,
    InitialPromptOption,
    LanguageOption,
    MaxSpeakersOption,
    MinConfidenceOption,
    MinSpeakersOption,
    ModelOption,
    NumSpeakersOption,
    TaskOption,
    TrimEncoderOption,
    VadOption,
    WordTimestampsOption,
)

OutputDirOption = Annotated[
    str | None,
    typer.Option("--output-dir", "-d", help="Mirror sources under DIR (a folder, s3://bucket/prefix, gs://…, Drive)"),
]


def batch(
    sources: Annotated[list[str], typer.Argument(help="Folders, globs, manifests (.txt/.csv/.jsonl) or URLs")],
    output_dir: OutputDirOption = None,
    output_format: Annotated[str | None, typer.Option("--format", "-f", help="txt,srt,vtt,json,tsv or all")] = None,
    model: ModelOption = None,
    language: LanguageOption = None,
    task: TaskOption = None,
    word_timestamps: WordTimestampsOption = None,
    pattern: Annotated[str | None, typer.Option(help="Only file names matching this glob, e.g. '*.mp3'")] = None,
    workers: Annotated[int, typer.Option(min=1, max=32, help="Decoder threads")] = 2,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Retry files that failed before")] = False,
    max_attempts: Annotated[int, typer.Option(min=1, help="Give up on a file after this many attempts")] = 3,
    file_timeout: Annotated[float | None, typer.Option(min=1.0, help="Seconds before a file is given up")] = None,
    batch_size: BatchSizeOption = None,
    beam_size: BeamSizeOption = None,
    initial_prompt: InitialPromptOption = None,
    hotwords: HotwordsOption = None,
    vad: VadOption = None,
    fallback_model: FallbackModelOption = None,
    min_confidence: MinConfidenceOption = None,
    device: DeviceOption = None,
    compute_type: ComputeTypeOption = None,
    cpu_threads: CpuThreadsOption = None,
    device_index: DeviceIndexOption = None,
    pack: Annotated[
        bool, typer.Option("--pack/--no-pack", help="Let short files share Whisper's 30-s windows (faster)")
    ] = True,
    trim_encoder: TrimEncoderOption = None,
    diarize: DiarizeOption = None,
    num_speakers: NumSpeakersOption = None,
    min_speakers: MinSpeakersOption = None,
    max_speakers: MaxSpeakersOption = None,
    ray: Annotated[str | None, typer.Option("--ray", metavar="ADDRESS", help="local, auto or ray://host:10001")] = None,
    ray_replicas: Annotated[int | None, typer.Option(min=1, help="Engine replicas on the Ray cluster")] = None,
    config: ConfigOption = None,
) -> None:
    """Transcribe many files; re-running the same command redoes nothing that is done."""
    settings = settings_for(
        config, model=model, language=language, task=task, word_timestamps=word_timestamps, formats=output_format,
        output_dir=output_dir, batch_size=batch_size, beam_size=beam_size, initial_prompt=initial_prompt,
        hotwords=hotwords, vad=vad, fallback_model=fallback_model, min_confidence=min_confidence, device=device,
        compute_type=compute_type, cpu_threads=cpu_threads, device_index=device_index, trim_encoder=trim_encoder,
        diarize=diarize, num_speakers=num_speakers, min_speakers=min_speakers, max_speakers=max_speakers,
    )  # fmt: skip
    run_config = BatchConfig(
        specs=sources, formats=parse_formats(settings.formats), output_dir=settings.output_dir, pattern=pattern,
        workers=workers, retry_failed=retry_failed, max_attempts=max_attempts, file_timeout=file_timeout, pack=pack,
        ray_address=ray, ray_replicas=ray_replicas,
    )  # fmt: skip
    run = BatchRun(run_config, transcriber_from(settings), options_from(settings))
    summary = _run_with_progress(run)
    _print_summary(summary)
    report.print(f"[dim]summary: {escape(str(run.summary_path))}[/dim]", highlight=False)
    if summary.failed:
        raise typer.Exit(1)


def _run_with_progress(run: BatchRun) -> BatchSummary:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[audio]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("files", total=None, audio="")

        started = time.monotonic()

        def update(job: FileJob | None, summary: BatchSummary) -> None:
            total = summary.files - summary.skipped
            elapsed = time.monotonic() - started
            rtf = elapsed / summary.audio_seconds if summary.audio_seconds else 0.0
            speed = f"{summary.audio_seconds / 3600:.2f} h audio, RTF {rtf:.3f}"
            bar.update(task, total=total, completed=summary.done + summary.failed, audio=speed)
            if job is not None and job.error is not None:
                console.print(f"[red]failed[/red] {escape(f'{job.item.uri}: {job.error}')}", highlight=False)

        run.on_progress = update
        run.on_unplanned = lambda name, error: console.print(f"[red]failed[/red] {escape(f'{name}: {error}')}")
        run.on_resume = _say_resumed
        return run.run()


def _say_resumed(job: FileJob) -> None:
    at = time.strftime("%H:%M:%S", time.gmtime(job.resume_from or 0.0))
    console.print(f"resuming {escape(job.item.uri)} at {at} ({job.preloaded} windows were done)", highlight=False)


def _print_summary(summary: BatchSummary) -> None:
    table = Table("files", "done", "skipped", "failed", "audio s", "wall s", "RTF", title="batch summary")
    table.add_row(
        str(summary.files),
        str(summary.done),
        str(summary.skipped),
        str(summary.failed),
        f"{summary.audio_seconds:.1f}",
        f"{summary.wall_seconds:.1f}",
        f"{summary.real_time_factor:.3f}",
    )
    report.print(table)
    for failure in summary.failures:
        report.print(escape(f"failed: {failure['file']}: {failure['error']}: {failure['message']}"), highlight=False)
