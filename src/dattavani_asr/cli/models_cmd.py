"""`dattavani-asr models list|install|verify|path`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .. import models
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


@app.command()
def install(name: NameArgument, config: ConfigOption = None) -> None:
    """Assemble a registry model (or download a hub model) into the cache and verify it."""
    cache = settings_for(config).cache_dir
    path = models.install(name, cache)
    if name in models.REGISTRY:
        models.verify(name, cache)
    console.print(escape(f"model {name} ready at {path}"), highlight=False)


@app.command()
def verify(name: NameArgument, config: ConfigOption = None) -> None:
    """Check a registry model's size and sha256."""
    path = models.verify(name, settings_for(config).cache_dir)
    console.print(f"[green]ok[/green] {escape(f'{name}: size and sha256 match ({path})')}", highlight=False)


@app.command()
def path(name: NameArgument, config: ConfigOption = None) -> None:
    """Print the directory of a model (installing a registry model if needed)."""
    sys.stdout.write(f"{models.resolve(name, settings_for(config).cache_dir)}\n")
