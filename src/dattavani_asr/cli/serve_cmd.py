"""`dattavani-asr serve`: the HTTP service under uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import ConfigOption
from .options import BatchSizeOption, ModelOption


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port (default 8000)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Job database, uploads and results")] = None,
    model: ModelOption = None,  # the default model: what 'whisper-1' means
    preload: Annotated[str | None, typer.Option(help="Comma list of models to load at start-up")] = None,
    api_key: Annotated[list[str] | None, typer.Option("--api-key", help="Accepted Bearer key (repeatable)")] = None,
    job_workers: Annotated[int | None, typer.Option(min=1, help="Jobs transcribed at the same time")] = None,
    batch_size: BatchSizeOption = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error")] = None,
    config: ConfigOption = None,
) -> None:
    """Serve the OpenAI-compatible API, jobs, metrics and health on HOST:PORT (settings: DATTAVANI_SERVER_*)."""
    import uvicorn

    from ..server import create_app, load_server_settings
    from ..server.observability import configure_logging

    settings = load_server_settings(
        config,
        host=host,
        port=port,
        data_dir=data_dir,
        default_model=model,
        preload=preload,
        api_keys=api_key or None,
        job_workers=job_workers,
        batch_size=batch_size,
        log_level=log_level,
    )
    configure_logging(settings.log_level, settings.log_json)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or None,
    )
