"""`python -m extracted.products_service migrate|serve|makemigration`."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from extracted.products_service.settings import ProductsServiceSettings
from strangler.observability.process import observe_process

cli = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@cli.command()
def migrate() -> None:
    """Bring the service database to the newest migration."""
    from extracted.products_service.migrate import upgrade_to_head

    upgrade_to_head(ProductsServiceSettings().database_url)
    typer.echo("products service database is at the newest migration")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
) -> None:
    """Serve the products service with uvicorn."""
    settings = ProductsServiceSettings()
    observe_process("products_service")
    uvicorn.run(
        "extracted.products_service.app:create_app",
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
    from extracted.products_service.migrate import new_revision

    new_revision(ProductsServiceSettings().database_url, message)


if __name__ == "__main__":
    cli()
