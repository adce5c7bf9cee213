"""Command line interface: `dattavani-asr`."""

from __future__ import annotations

import sys

from rich.markup import escape

from ..core.errors import DattavaniError


def main() -> None:
    """Entry point: run the typer app; turn any failure into a one-line message and exit code."""
    from .app import app
    from .common import console, say_error

    try:
        code = app(standalone_mode=False)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        sys.exit(130)
    except DattavaniError as exc:
        say_error(exc)
        sys.exit(exc.exit_code)
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.Abort) or type(exc).__name__ == "Abort":
            sys.exit(130)
        # typer ≥ 0.20 raises its own copy of click's exceptions (typer._click): a usage error either way
        if isinstance(exc, click.ClickException) or (hasattr(exc, "show") and hasattr(exc, "exit_code")):
            exc.show()
            sys.exit(exc.exit_code)
        console.print(
            f"[red]internal error:[/red] {escape(f'{type(exc).__name__}: {exc}')} (set DATTAVANI_LOG_LEVEL=debug)"
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
