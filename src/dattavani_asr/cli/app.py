"""The typer application and its `transcribe` command."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ..config import Settings, load_settings
from ..errors import DattavaniError, InvalidOptionError

console = Console(stderr=True, soft_wrap=True)
report = Console(soft_wrap=True)  # tables meant to be read or piped go to stdout
app = typer.Typer(
    name="dattavani-asr",
    help="Fast, robust speech-to-text with Whisper on CTranslate2 (offline, embedded default model).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML config file (default: ./dattavani-asr.toml)")]


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
def transcribe(
    # Strings, not Paths: typer's Path would turn http://host into http:/host.
    inputs: Annotated[list[str], typer.Argument(help="Audio or video files, or http(s) URLs", show_default=False)],
    model: Annotated[str | None, typer.Option("--model", "-m", help="tiny.en, base, a model dir or hub id")] = None,
    language: Annotated[str | None, typer.Option("--language", "-l", help="ISO code; default: detect")] = None,
    task: Annotated[str | None, typer.Option(help="transcribe or translate (to English)")] = None,
    output_format: Annotated[str | None, typer.Option("--format", "-f", help="txt,srt,vtt,json,tsv or all")] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-d", help="Default: <input dir>/gen-transcript (./gen-transcript for URLs)"),
    ] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="'-' writes the first format to stdout")] = None,
    word_timestamps: Annotated[bool | None, typer.Option("--word-timestamps/--no-word-timestamps")] = None,
    beam_size: Annotated[int | None, typer.Option(min=1, max=16)] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda")] = None,
    compute_type: Annotated[str | None, typer.Option(help="auto, int8, int8_float32, float16, float32")] = None,
    vad: Annotated[bool | None, typer.Option("--vad/--no-vad", help="Silero VAD speech chunking")] = None,
    start: Annotated[float | None, typer.Option(min=0.0, help="Start of the clip range (s)")] = None,
    end: Annotated[float | None, typer.Option(min=0.0, help="End of the clip range (s)")] = None,
    channel: Annotated[int | None, typer.Option(min=0, help="Transcribe one channel (0 = left)")] = None,
    initial_prompt: Annotated[str | None, typer.Option(help="Text that primes vocabulary and style")] = None,
    hotwords: Annotated[str | None, typer.Option(help="Words or names to favour")] = None,
    fallback_model: Annotated[str | None, typer.Option(help="Re-run low-confidence windows on this model")] = None,
    min_confidence: Annotated[float | None, typer.Option(min=0.0, max=1.0)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, max=64)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print transcripts")] = False,
    config: ConfigOption = None,
) -> None:
    """Transcribe files or URLs; write <input dir>/gen-transcript/<name>.<ext> and print the text.

    A URL's transcript goes to ./gen-transcript/<name>.<ext> in the current directory.
    """
    settings = load_settings(
        config,
        model=model,
        language=language,
        task=task,
        formats=output_format,
        output_dir=output_dir,
        word_timestamps=word_timestamps,
        beam_size=beam_size,
        device=device,
        compute_type=compute_type,
        vad=vad,
        initial_prompt=initial_prompt,
        hotwords=hotwords,
        fallback_model=fallback_model,
        min_confidence=min_confidence,
        batch_size=batch_size,
    )
    configure_logging(settings.log_level)
    from .transcribe_cmd import TranscribeJob

    job = TranscribeJob(settings, output=output, quiet=quiet, start=start, end=end, channel=channel)
    failures = job.run(inputs)
    if failures:
        raise typer.Exit(failures[0].exit_code)


def settings_for(config: Path | None, **overrides: Any) -> Settings:
    settings = load_settings(config, **overrides)
    configure_logging(settings.log_level)
    return settings


def fail(message: str, code: int = 1) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _register_subcommands() -> None:
    from . import batch_cmd, info_cmd, models_cmd, serve_cmd, stream_cmd

    app.add_typer(models_cmd.app, name="models")
    app.add_typer(info_cmd.config_app, name="config")
    app.command("batch")(batch_cmd.batch)
    app.command("serve")(serve_cmd.serve)
    app.command("stream")(stream_cmd.stream)
    app.command("formats")(info_cmd.formats)
    app.command("health-check")(info_cmd.health_check)


_register_subcommands()

__all__ = ["DattavaniError", "InvalidOptionError", "app", "console", "report"]
