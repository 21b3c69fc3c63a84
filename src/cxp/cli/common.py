"""What every `cxp` command module shares: the console, the process settings, a clean failure exit."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from cxp.core.config import Settings, get_settings
from cxp.core.logs import configure_logging

# Piped output (CI logs, `| less`) gets a fixed width instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 150)


def load_settings() -> Settings:
    """The process settings, with logging configured from them."""
    settings = get_settings()
    configure_logging(settings.log_level)
    return settings


def fail(message: str) -> None:
    """Print an error and exit 1."""
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)
