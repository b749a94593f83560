"""`strangler export nginx`: routing.toml as an nginx configuration, for a faster edge.

Writes `strangler.conf` (an http-context include) and `strangler.js` (the njs module that
computes the sticky key) into --output; with --standalone also a whole `nginx.conf` around
them and the `logs/` directory it writes to. The rendering is strangler.nginx_export's; this
module reads the file, writes the files, and says what went wrong and what to do.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from strangler.console import console, fail
from strangler.nginx_export import NJS_MODULE, render, render_standalone
from strangler.nginx_routing import RoutingFileError, load_routing
from strangler.settings import CliSettings

__all__ = ["register"]

CONF_NAME = "strangler.conf"
JS_NAME = "strangler.js"
STANDALONE_NAME = "nginx.conf"


def _write(path: Path, text: str) -> None:
    """Replace `path` whole (temporary file + rename): a reloading nginx never reads half."""
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(scratch, 0o644)
        os.replace(scratch, path)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def nginx(
    routing: Annotated[
        Path | None,
        typer.Option(
            help="The routing file (default: STRANGLER_ROUTING_FILE, else var/routing.toml)"
        ),
    ] = None,
    output: Annotated[Path, typer.Option(help="Directory to write the files into")] = Path(
        "var/nginx"
    ),
    listen: Annotated[
        str, typer.Option(help="The server's listen address, e.g. 127.0.0.1:8080 or 80")
    ] = "127.0.0.1:8080",
    standalone: Annotated[
        bool, typer.Option(help="Also write a whole nginx.conf that includes the export")
    ] = False,
    njs_module: Annotated[
        str, typer.Option(help="With --standalone: the njs module's path, for load_module")
    ] = NJS_MODULE,
) -> None:
    """Render routing.toml into an nginx configuration that routes as the proxy does.

    Each capability's phase becomes nginx routing: reads and writes by method, the canary's
    sticky split (the same users on the same side as through the proxy), shadow reads as
    mirror copies, the default upstream for everything else. What only the proxy does
    (shadow compare, fallback, breaker, read-your-writes, write fence, admin API) is listed
    at the top of strangler.conf; docs/scale-out.md says when to move the edge.
    """
    source = routing or CliSettings().routing_file
    try:
        config = load_routing(source)
    except RoutingFileError as exc:
        raise fail(
            str(exc),
            "point --routing at the proxy's routing file, or fix the field named above, "
            "and export again.",
        ) from exc
    if not listen or any(c in listen for c in ";{}\"' \t\n"):
        raise fail(
            f"--listen {listen!r} is not an nginx listen address",
            "give host:port, [ipv6]:port or a port, e.g. --listen 127.0.0.1:8080.",
        )
    try:
        output.mkdir(parents=True, exist_ok=True)
        target = output.resolve()
        export = render(
            config, listen=listen, js_path=str(target / JS_NAME), source=str(source.resolve())
        )
        _write(target / JS_NAME, export.js)
        _write(target / CONF_NAME, export.conf)
        written = [target / CONF_NAME, target / JS_NAME]
        if standalone:
            (target / "logs").mkdir(exist_ok=True)
            _write(
                target / STANDALONE_NAME,
                render_standalone(include=str(target / CONF_NAME), njs_module=njs_module),
            )
            written.append(target / STANDALONE_NAME)
    except OSError as exc:
        raise fail(
            f"cannot write the export into {output}: {exc.strerror or exc}",
            "choose a writable directory with --output.",
        ) from exc
    for path in written:
        console.print(f"[green]wrote[/] {escape(str(path))}", soft_wrap=True)
    for capability, settings in config.capabilities.items():
        console.print(f"  {capability}: phase {settings.phase.value}")
    where = f"-p {target} -c {target / STANDALONE_NAME}"
    if standalone:
        hint = f"check:  nginx -t {where}\nrun:    nginx {where}\nreload: nginx {where} -s reload"
    else:
        hint = (
            f"include {target / CONF_NAME} in your nginx's http block (with "
            f"`load_module {njs_module};` in its main context), then `nginx -t` and "
            "`nginx -s reload`"
        )
    # Commands to copy: never folded at the terminal's width, never read as markup.
    console.print(hint, soft_wrap=True, markup=False)


def register(app: typer.Typer) -> None:
    """Add `strangler export ...` to the CLI."""
    export_app = typer.Typer(
        no_args_is_help=True, help="Render the routing into other edges' configurations."
    )
    export_app.command("nginx")(nginx)
    app.add_typer(export_app, name="export")
