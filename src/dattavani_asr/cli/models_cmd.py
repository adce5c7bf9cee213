"""`dattavani-asr models list|install|verify|path`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .. import models
from ..imported import CATALOG, ModelCard, imported_models, locate_imported
from .common import ConfigOption, console, report, settings_for

app = typer.Typer(help="List, install, verify and locate models.", no_args_is_help=True)
NameArgument = Annotated[str, typer.Argument(help="Registry name (tiny.en, base), model dir or hub repo id")]


@app.command("list")
def list_models(config: ConfigOption = None) -> None:
    """Registry models, whether they are installed, and where."""
    cache = settings_for(config).cache_dir
    table = Table("name", "installed", "multilingual", "size", "source / path", title="Registry models")
    for name, spec in models.REGISTRY.items():
        state = models.status(name, cache)
        installed = "yes" if state.installed else ("installable" if state.available else "no")
        where = str(state.path) if state.path else spec.install_hint
        table.add_row(name, installed, "yes" if spec.multilingual else "no", f"{spec.size / 1e6:.0f} MB", escape(where))
    report.print(table)
    report.print(f"Hub names ({', '.join(models.HUB_ALIASES)}) download when online.", highlight=False)

    _list_imported(cache)


def _list_imported(cache: Path | None) -> None:
    root = cache or models.default_cache_dir()
    table = Table("name", "installed", "timestamps", "source", "published accuracy", title="Imported and recommended")
    imported = {card.name: card for card, _ in imported_models(root)}
    for card in imported.values():
        table.add_row(card.name, "yes", "yes" if card.timestamps else "no (per window)", escape(card.source), "")
    for entry in CATALOG.values():
        if entry.name not in imported:
            published = f"{entry.published} (published)" if entry.published else "none published"
            table.add_row(entry.name, "no", "", entry.repo_id, published)
    report.print(table)


@app.command()
def install(name: NameArgument, config: ConfigOption = None) -> None:
    """Assemble a registry model, or download a hub model or a recommended checkpoint, into the cache."""
    cache = settings_for(config).cache_dir
    if name in CATALOG:
        from ..importing import install_checkpoint

        path = install_checkpoint(name, cache or models.default_cache_dir())
        console.print(escape(f"model {name} ready at {path}"), highlight=False)
        return
    path = models.install(name, cache)
    if name in models.REGISTRY:
        models.verify(name, cache)
    console.print(escape(f"model {name} ready at {path}"), highlight=False)


@app.command("import")
def import_(
    source: Annotated[str, typer.Argument(help="A transformers Whisper folder, or a hub repo id (online)")],
    name: Annotated[str, typer.Option("--name", help="The name to use it by (--model NAME)")],
    quantization: Annotated[
        str, typer.Option(help="Weights as stored: float16, int8, int8_float16, float32…")
    ] = "float16",
    timestamps: Annotated[
        str, typer.Option(help="Whether it learned timestamp tokens: auto (probe, else no), yes or no")
    ] = "auto",
    probe_audio: Annotated[
        str | None, typer.Option(help="Speech in the model's language to check its timestamps on")
    ] = None,
    language: Annotated[str | None, typer.Option(help="Language of --probe-audio")] = None,
    force: Annotated[bool, typer.Option(help="Replace a model already imported under NAME")] = False,
    config: ConfigOption = None,
) -> None:
    """Convert a fine-tuned transformers Whisper checkpoint (needs the convert extra) and register it."""
    from ..importing import import_model

    cache = settings_for(config).cache_dir or models.default_cache_dir()
    path = import_model(
        source, name, cache=cache, quantization=quantization, timestamps=timestamps,
        probe_audio=probe_audio, language=language, force=force,
    )  # fmt: skip
    card = ModelCard.read(path)
    checked = card.timestamps_checked if card else ""
    console.print(escape(f"model {name} imported at {path} (timestamps: {checked})"), highlight=False)


@app.command()
def verify(name: NameArgument, config: ConfigOption = None) -> None:
    """Check a registry model's size and sha256, or that an imported model loads and decodes."""
    cache = settings_for(config).cache_dir
    imported = locate_imported(name, cache or models.default_cache_dir())
    if imported is not None:
        from ..importing import verify_decodes

        verify_decodes(imported)
        console.print(f"[green]ok[/green] {escape(f'{name}: loads and decodes ({imported})')}", highlight=False)
        return
    path = models.verify(name, cache)
    console.print(f"[green]ok[/green] {escape(f'{name}: size and sha256 match ({path})')}", highlight=False)


@app.command()
def path(name: NameArgument, config: ConfigOption = None) -> None:
    """Print the directory of a model (installing a registry model if needed)."""
    sys.stdout.write(f"{models.resolve(name, settings_for(config).cache_dir)}\n")
