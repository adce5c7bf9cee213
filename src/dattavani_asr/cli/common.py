"""What every command shares: the consoles, the --config option, settings loading, one-line failures."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ..config import Settings, load_settings

if TYPE_CHECKING:
    from ..core.options import TranscribeOptions
    from ..pipeline.transcriber import Transcriber

console = Console(stderr=True, soft_wrap=True)
report = Console(soft_wrap=True)  # tables meant to be read or piped go to stdout

ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML config file (default: ./dattavani-asr.toml)")]


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def settings_for(config: Path | None, **overrides: Any) -> Settings:
    settings = load_settings(config, **overrides)
    configure_logging(settings.log_level)
    return settings


def say_error(message: object) -> None:
    """One red line on stderr; the message is printed as it is (`[base]` in a hint is not markup)."""
    console.print(f"[red]error:[/red] {escape(str(message))}", highlight=False)


def fail(message: str, code: int = 1) -> None:
    say_error(message)
    raise typer.Exit(code)


def transcriber_from(settings: Settings) -> Transcriber:
    """The model (and engine settings) the settings name; nothing loads until first use."""
    from ..pipeline.transcriber import Transcriber

    return Transcriber(
        settings.model,
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        device_index=settings.device_index,
        cache_dir=settings.cache_dir,
    )


def options_from(settings: Settings, **per_call: Any) -> TranscribeOptions:
    """The transcription options the settings hold, plus those of one call (a clip range, a channel)."""
    from ..pipeline.transcriber import make_options

    return make_options(
        language=settings.language,
        task=settings.task,
        beam_size=settings.beam_size,
        word_timestamps=settings.word_timestamps,
        vad=settings.vad,
        initial_prompt=settings.initial_prompt,
        hotwords=settings.hotwords,
        batch_size=settings.batch_size,
        fallback_model=settings.fallback_model,
        min_confidence=settings.min_confidence,
        trim_encoder=settings.trim_encoder,
        diarize=settings.diarize,
        num_speakers=settings.num_speakers,
        min_speakers=settings.min_speakers,
        max_speakers=settings.max_speakers,
        channels_as_speakers=settings.channels_as_speakers,
        **per_call,
    )
