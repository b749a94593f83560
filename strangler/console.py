"""The CLI's consoles and its one way of failing: say what was wrong and what to do."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["console", "errors", "fail"]

console = Console()
errors = Console(stderr=True)


def fail(message: str, hint: str) -> typer.Exit:
    """Print the error and the remedy to stderr; return the Exit (code 2) to raise."""
    errors.print(f"[bold red]error:[/] {escape(message)}\n[yellow]what to do:[/] {escape(hint)}")
    return typer.Exit(code=2)
