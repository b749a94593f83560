"""`python -m proxy serve`: run the routing proxy with uvicorn.

uvicorn runs with the httptools parser (its protocol wrapped so that a response's writes go out
in one send: proxy/serving.py; the parser refuses Content-Length with Transfer-Encoding and
obsolete line folding; the proxy itself refuses a missing or repeated Host), without its
X-Forwarded-* middleware (which would trust any loopback peer) and without the access log.
"""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from proxy.config import ConfigError
from proxy.serving import CoalescingHttpToolsProtocol
from proxy.settings import ProxySettings
from strangler.observability.process import observe_process

cli = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
) -> None:
    """Serve the proxy in front of the upstreams named in routing.toml."""
    from proxy.app import create_app

    settings = ProxySettings()
    observe_process("proxy")
    try:
        app = create_app(settings)
    except FileNotFoundError as exc:
        typer.echo(
            f"error: no routing file at {settings.routing_file}\nwhat to do: copy the "
            f"template there (cp routing.toml {settings.routing_file}), or set "
            "PROXY_ROUTING_FILE to the file to serve, and start again",
            err=True,
        )
        raise typer.Exit(code=2) from exc
    except (ConfigError, OSError) as exc:
        typer.echo(
            f"error: {exc}\nwhat to do: fix {settings.routing_file} and start again", err=True
        )
        raise typer.Exit(code=2) from exc
    uvicorn.run(
        app,
        host=host if host is not None else settings.host,
        port=port if port is not None else settings.port,
        http=CoalescingHttpToolsProtocol,
        loop="uvloop",
        proxy_headers=False,
        server_header=False,
        date_header=False,
        access_log=False,
        log_level="info",
        log_config=None,  # the root logger, set by observe_process, takes uvicorn's lines
        timeout_keep_alive=30,
    )


@cli.command()
def check(
    path: Annotated[str, typer.Argument(help="routing file to validate")] = "routing.toml",
) -> None:
    """Validate a routing file without starting anything."""
    from pathlib import Path

    from proxy.config import load_config

    try:
        config = load_config(Path(path))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(
        f"{path} is valid: {len(config.upstreams)} upstreams, "
        f"{len(config.capabilities)} capabilities"
    )


if __name__ == "__main__":
    cli()
