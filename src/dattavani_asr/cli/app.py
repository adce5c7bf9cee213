"""The typer application: every command is registered here (no command module imports this one)."""

from __future__ import annotations

import typer

from . import batch_cmd, info_cmd, models_cmd, serve_cmd, stream_cmd, transcribe_cmd
from .common import console, report

app = typer.Typer(
    name="dattavani-asr",
    help="Fast, robust speech-to-text with Whisper on CTranslate2 (offline, embedded default model).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("transcribe")(transcribe_cmd.transcribe)
app.add_typer(models_cmd.app, name="models")
app.add_typer(info_cmd.config_app, name="config")
app.command("batch")(batch_cmd.batch)
app.command("serve")(serve_cmd.serve)
app.command("stream")(stream_cmd.stream)
app.command("formats")(info_cmd.formats)
app.command("health-check")(info_cmd.health_check)

__all__ = ["app", "console", "report"]
