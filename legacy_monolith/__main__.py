"""`python -m legacy_monolith migrate|seed|serve|makemigration`: run the monolith alone.

The `strangler` CLI starts the monolith through these commands as a child process, so the
toolkit never has to import the app it is migrating.
"""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from legacy_monolith.platform.settings import MonolithSettings
from strangler.observability.process import observe_process

cli = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@cli.command()
def migrate() -> None:
    """Bring the database schema to the newest migration."""
    from legacy_monolith.migrate import upgrade_to_head

    upgrade_to_head(MonolithSettings().database_url)
    typer.echo("monolith database is at the newest migration")


@cli.command()
def seed(
    products: Annotated[int, typer.Option(min=0, help="How many demo products")] = 1000,
) -> None:
    """Load demo users and products; re-running adds only what is missing."""
    from legacy_monolith.seed import DEMO_PASSWORD, DEMO_USERS, seed
    from strangler.db import Sessions, create_db_engine

    engine = create_db_engine(MonolithSettings().database_url)
    try:
        report = seed(Sessions(engine), product_count=products)
    finally:
        engine.dispose()
    login = f"demo login: {DEMO_USERS[0][0]} / {DEMO_PASSWORD}"
    if report.users_added or report.products_added:
        added = f"{report.users_added} users and {report.products_added} products"
        typer.echo(f"seeded {added} ({login})")
    else:  # a restart: say the data is there, not "seeded 0", which reads like a failure
        typer.echo(f"demo data already there, nothing to add ({login})")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
) -> None:
    """Serve the monolith with uvicorn."""
    settings = MonolithSettings()
    observe_process("monolith")
    uvicorn.run(
        "legacy_monolith.app:create_app",
        factory=True,
        host=host if host is not None else settings.host,
        port=port if port is not None else settings.port,
        log_level="info",
        log_config=None,  # the root logger, set by observe_process, takes uvicorn's lines
        access_log=False,  # strangler.access logs each request, with its ids
    )


@cli.command()
def makemigration(message: Annotated[str, typer.Argument(help="What the change is")]) -> None:
    """Autogenerate a migration from the models (review it before committing)."""
    from legacy_monolith.migrate import new_revision

    new_revision(MonolithSettings().database_url, message)


if __name__ == "__main__":
    cli()
