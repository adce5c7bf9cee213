"""`formats`, `health-check` and `config show|init`."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..config import CONFIG_FILENAME, Settings, dump, template
from ..core.errors import DattavaniError
from .common import ConfigOption, console, fail, report, settings_for

config_app = typer.Typer(help="Show or create the configuration file.", no_args_is_help=True)
MIN_FREE_BYTES = 1 << 30


def formats() -> None:
    """Encode a tone in common formats and decode it back: what really decodes here."""
    import av

    from ..audio.formats import check_formats

    table = Table("format", "container", "codec", "video", "decodes", "detail")
    results = check_formats()
    for item in results:
        case = item.case
        mark = "[green]yes[/green]" if item.ok else "[red]no[/red]"
        table.add_row(case.name, case.container, case.codec, case.video or "", mark, escape(item.detail))
    report.print(table)
    report.print(
        f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}): {len(av.formats_available)} containers, "
        f"{len(av.codecs_available)} codecs; any of them is accepted as input.",
        highlight=False,
    )
    if not all(item.ok for item in results):
        raise typer.Exit(1)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _check_model(settings: Settings) -> tuple[Check, Check]:
    from ..engine import load_model

    try:
        started = time.perf_counter()
        loaded = load_model(
            settings.model, device=settings.device, compute_type=settings.compute_type, cache_dir=settings.cache_dir
        )
        took = time.perf_counter() - started
        model = Check("model", True, f"{settings.model} loaded in {took:.2f} s from {loaded.path}")
        device = Check("device", True, f"{loaded.device}, compute type {loaded.compute_type}")
    except DattavaniError as exc:
        model, device = Check("model", False, str(exc)), Check("device", False, "model did not load")
    return model, device


def _check_decode_and_inference(settings: Settings) -> Check:
    import numpy as np

    from ..audio.decode import SAMPLE_RATE, decode_audio
    from ..audio.formats import COMMON_FORMATS, encode_audio
    from ..pipeline.transcriber import Transcriber, make_options

    tone = (0.2 * np.sin(2 * np.pi * 300 * np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)
    try:
        decoded = decode_audio(encode_audio(tone, SAMPLE_RATE, COMMON_FORMATS[3]))
        transcriber = Transcriber(
            settings.model, device=settings.device, compute_type=settings.compute_type, cache_dir=settings.cache_dir
        )
        started = time.perf_counter()
        transcriber.transcribe(decoded, make_options(vad=False, language="en"))
        took = time.perf_counter() - started
    except DattavaniError as exc:
        return Check("decode + inference", False, str(exc))
    return Check("decode + inference", True, f"mp3 decoded, 2 s of audio through the model in {took:.2f} s")


def _check_disk(path: Path) -> Check:
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    return Check(f"disk ({probe})", free >= MIN_FREE_BYTES, f"{free / 1e9:.1f} GB free")


def health_check(config: ConfigOption = None) -> None:
    """Load the model, decode and transcribe a test signal, check device and disk; non-zero on failure."""
    from ..models import default_cache_dir

    settings = settings_for(config)
    model, device = _check_model(settings)
    checks = [model, device]
    if model.ok:
        checks.append(_check_decode_and_inference(settings))
    checks += [_check_disk(settings.cache_dir or default_cache_dir()), _check_disk(Path.cwd())]
    table = Table("check", "status", "detail")
    for check in checks:
        table.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]FAIL[/red]", escape(check.detail))
    report.print(table)
    if not all(check.ok for check in checks):
        raise typer.Exit(1)


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the merged configuration (file + environment) as TOML."""
    sys.stdout.write(dump(settings_for(config)))


@config_app.command("init")
def config_init(
    path: Annotated[Path, typer.Argument(help="Where to write")] = Path(CONFIG_FILENAME),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file")] = False,
) -> None:
    """Write a commented config file with every key and its default."""
    if path.exists() and not force:
        fail(f"{path} exists; use --force to overwrite")
    from ..server.settings import template as server_template

    text = template() + "\n# Settings of `dattavani-asr serve` (DATTAVANI_SERVER_<KEY> overrides them).\n"
    path.write_text(text + server_template(), encoding="utf-8")
    console.print(f"wrote {escape(str(path))}", highlight=False)
