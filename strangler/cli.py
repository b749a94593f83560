"""The `strangler` command line.

It drives the apps as child processes (`python -m legacy_monolith ...`) instead of importing
them: the toolkit stays independent of the system it migrates.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from strangler.coupling import OwnershipConfigError, find_couplings, load_table_ownership

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Move a monolith to services one capability at a time.",
)
console = Console()
errors = Console(stderr=True)


def _fail(message: str, hint: str) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {escape(message)}\n[yellow]what to do:[/] {escape(hint)}")
    return typer.Exit(code=2)


def _monolith(*args: str) -> list[str]:
    return [sys.executable, "-m", "legacy_monolith", *args]


def _run_step(what: str, command: list[str]) -> None:
    console.print(f"[cyan]→[/] {what}")
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise _fail(
            f"{what} failed (exit {result.returncode}).",
            "read the output above; check MONOLITH_DATABASE_URL if the database is unreachable.",
        )


@app.command()
def seed(
    products: Annotated[int, typer.Option(min=0, help="How many demo products")] = 1000,
) -> None:
    """Migrate the monolith database and load demo data (idempotent)."""
    _run_step("migrating the monolith database", _monolith("migrate"))
    _run_step("seeding demo data", _monolith("seed", "--products", str(products)))


@app.command()
def up(
    products: Annotated[int, typer.Option(min=0, help="How many demo products")] = 1000,
    port: Annotated[int, typer.Option(help="Port of the monolith")] = 8001,
) -> None:
    """Migrate, seed and serve the system on loopback until Ctrl-C."""
    seed(products)
    console.print(f"[green]monolith:[/] http://127.0.0.1:{port}  (API docs at /docs)")
    child = subprocess.Popen(_monolith("serve", "--port", str(port)))
    try:
        code = child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=15)
        console.print("[cyan]stopped[/]")
        return
    if code != 0:
        raise _fail(f"the monolith exited with code {code}.", "read its log above.")


@app.command()
def coupling(
    config: Annotated[Path, typer.Option(help="The boundaries file")] = Path("boundaries.toml"),
    root: Annotated[Path, typer.Option(help="Directory that holds the packages")] = Path("."),
) -> None:
    """List every place a capability touches tables it does not own; exit 1 if there are any."""
    try:
        ownership = load_table_ownership(config)
    except OwnershipConfigError as exc:
        raise _fail(str(exc), f"fix {config} and run again.") from exc
    found = find_couplings(root, ownership)
    if not found:
        owned = sum(len(t) for t in ownership.tables_by_capability.values())
        caps = len(ownership.tables_by_capability)
        console.print(f"[green]no coupling:[/] {caps} capabilities keep to their {owned} tables")
        return
    table = Table("where", "capability", "what", "table", "owner", title="Data coupling")
    for c in found:
        cells = (f"{c.path}:{c.line}", c.capability, c.kind, c.table, c.owner or "(undeclared)")
        table.add_row(*(escape(cell) for cell in cells))
    console.print(table)
    console.print(f"[red]{len(found)} coupling(s) found[/]")
    raise typer.Exit(code=1)


def main() -> None:
    app()
