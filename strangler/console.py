"""The CLI's consoles, its tables, its JSON output, and its one way of failing: say what was
wrong and what to do."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["JsonOption", "console", "errors", "fail", "print_json", "table"]

console = Console()
errors = Console(stderr=True)


def fail(message: str, hint: str) -> typer.Exit:
    """Print the error and the remedy to stderr; return the Exit (code 2) to raise."""
    errors.print(f"[bold red]error:[/] {escape(message)}\n[yellow]what to do:[/] {escape(hint)}")
    return typer.Exit(code=2)


def table(*headers: str, title: str | None = None) -> Table:
    """A table whose cells wrap (fold) rather than end in '…' when the terminal is narrow: a
    phase name or a timestamp cut short is a wrong answer, a wrapped one is not."""
    made = Table(title=title)
    for header in headers:
        made.add_column(header, overflow="fold")
    return made


def print_json(data: Any) -> None:
    """What a table command prints with --json: the whole record, for scripts and `jq`."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the full record as JSON instead of a table")
]
