"""The `strangler` command line.

It drives the apps as child processes (`python -m legacy_monolith ...`) instead of importing
them: the toolkit stays independent of the system it migrates.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from strangler import export_cli, migration_cli, sync_cli
from strangler.admin_client import AdminApiError, admin_or_fail, admin_token_for_up
from strangler.console import JsonOption, console, fail, print_json, table
from strangler.coupling import OwnershipConfigError, find_couplings, load_table_ownership
from strangler.reset import plan_reset, running_up, up_pid_file
from strangler.routing_file import ConfigError, parse_config
from strangler.settings import CliSettings, read_or_create_secret
from strangler.supervisor import ChildDied, ChildSpec, Supervisor

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Move a monolith to services one capability at a time.",
)


def _monolith(*args: str) -> list[str]:
    return [sys.executable, "-m", "legacy_monolith", *args]


def _service(*args: str) -> list[str]:
    return [sys.executable, "-m", "extracted.products_service", *args]


def _run_step(what: str, command: list[str]) -> None:
    """Run one setup step (migrate, seed) to its end. In a session of its own, so a Ctrl-C
    reaches only us: we end the step with SIGTERM, quietly, instead of a traceback from
    wherever the step was when the terminal's SIGINT landed."""
    console.print(f"[cyan]→[/] {what}")
    step = subprocess.Popen(command, start_new_session=True)
    try:
        returncode = step.wait()
    except KeyboardInterrupt:
        step.terminate()
        step.wait()
        console.print("[cyan]stopped[/]")
        raise typer.Exit(code=130) from None
    if returncode != 0:
        raise fail(
            f"{what} failed (exit {returncode}).",
            "read the output above; check MONOLITH_DATABASE_URL if the database is unreachable.",
        )


@app.command()
def seed(
    products: Annotated[int, typer.Option(min=0, help="How many demo products")] = 1000,
) -> None:
    """Migrate both databases and load the monolith's demo data (idempotent)."""
    _run_step("migrating the monolith database", _monolith("migrate"))
    _run_step("migrating the products service database", _service("migrate"))
    _run_step("seeding demo data", _monolith("seed", "--products", str(products)))


def _dashboard_url(proxy_url: str, admin_token: str, where: str, *, terminal: bool) -> str:
    """The dashboard's address as `up` prints it.

    With a token `up` keeps in a file (a developer's machine) and a person at the terminal,
    the token rides after '#', which a browser never sends, and the page moves it into the
    tab's sessionStorage: the printed link opens the dashboard in one click. When the output
    goes to a file or a pipe (a log, CI), the token would stay there: the plain URL is printed
    with where the token is. A token the operator set in the environment is theirs to paste;
    it is never echoed.
    """
    url = f"{proxy_url}/_strangler/dashboard"
    if where.startswith("STRANGLER_"):
        return f"{url}  (watch and step the migration; paste the token from ${where})"
    if not terminal:
        return f"{url}  (watch and step the migration; paste the token from {where})"
    return f"{url}#token={admin_token}  (watch and step the migration in a browser)"


def live_routing_file(live: Path, template: Path) -> Path:
    """The routing file the system runs on: `live`, made from `template` when missing.

    The template is the committed starting point; the live file is the migration state that
    advances, rollbacks and hand edits change. Keeping them apart leaves the repository clean
    and lets a restart carry on where the last run stopped (`strangler reset` starts over).
    """
    if live.exists():
        console.print(f"[cyan]→[/] routing state {live} (kept from the last run)")
        return live
    try:
        text = template.read_text()
    except OSError as exc:
        raise fail(
            f"no routing file at {live}, and its template {template} cannot be read: {exc}",
            "run from the repository root, or give --routing-template (or --routing-file).",
        ) from exc
    try:
        parse_config(text, str(template))
    except ConfigError as exc:
        raise fail(f"the routing template is refused: {exc}", f"fix {template}.") from exc
    live.parent.mkdir(parents=True, exist_ok=True)
    live.write_text(text)
    console.print(f"[cyan]→[/] routing state {live} (new, from the template {template})")
    return live


def _claim_state_dir(settings: CliSettings) -> None:
    """Record this `up` in the state directory (`strangler reset` refuses while it runs), or
    refuse to start a second one over the same state."""
    running = running_up(settings)
    if running is not None and running != os.getpid():
        raise fail(
            f"strangler up is already running from {settings.state_dir} (pid {running})",
            f"use that one, or stop it first (Ctrl-C in its terminal, or kill -TERM {running})",
        )
    pid_file = up_pid_file(settings)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")
    atexit.register(_release_state_dir, pid_file, os.getpid())


def _release_state_dir(pid_file: Path, pid: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        if int(pid_file.read_text().strip()) == pid:
            pid_file.unlink()


@app.command()
def reset(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before removing")] = False,
) -> None:
    """Start the demo over: remove the live routing state, the audit log, the backfill and
    reconcile records and the SQLite databases (tokens and keys stay)."""
    settings = CliSettings()
    running = running_up(settings)
    if running is not None:
        raise fail(
            f"strangler up is running from {settings.state_dir} (pid {running}); a reset now "
            "would pull its files from under it",
            f"stop it first (Ctrl-C in its terminal, or kill -TERM {running}), then reset",
        )
    plan = plan_reset(settings)
    if not plan.files and not plan.databases_left:
        console.print("nothing to reset: no demo state here")
        return
    for path in plan.files:
        console.print(f"  {escape(str(path))}")
    if not yes and not typer.confirm(f"remove these {len(plan.files)} file(s)?"):
        raise typer.Exit(code=1)
    for path in plan.files:
        path.unlink(missing_ok=True)
    console.print(
        f"removed {len(plan.files)} file(s); `strangler up` starts from {settings.routing_template}"
    )
    for url in plan.databases_left:
        console.print(
            f"[yellow]not touched:[/] {escape(url)}: not a SQLite file; drop and create it "
            "yourself (e.g. dropdb/createdb) to start its data over"
        )


@app.command()
def up(
    products: Annotated[int, typer.Option(min=0, help="How many demo products")] = 1000,
    monolith_port: Annotated[int, typer.Option(help="Port of the monolith")] = 8001,
    service_port: Annotated[int, typer.Option(help="Port of the products service")] = 8002,
    proxy_port: Annotated[int, typer.Option(help="Port of the proxy")] = 8000,
    routing_file: Annotated[
        Path | None,
        typer.Option(
            help="The live routing state (default: STRANGLER_ROUTING_FILE, else "
            "var/routing.toml); made from --routing-template when missing"
        ),
    ] = None,
    routing_template: Annotated[
        Path | None,
        typer.Option(
            help="The starting routing file, copied to the live one on first start "
            "(default: STRANGLER_ROUTING_TEMPLATE, else routing.toml)"
        ),
    ] = None,
) -> None:
    """Migrate, seed, and run monolith, products service, proxy and relay until Ctrl-C or
    SIGTERM, which stop them all."""
    settings = CliSettings()
    _claim_state_dir(settings)
    routing_file = live_routing_file(
        routing_file or settings.routing_file, routing_template or settings.routing_template
    )
    seed(products)
    admin_token, where = admin_token_for_up(settings)
    sync_token = settings.sync_token_value() or read_or_create_secret(settings.sync_token_file)
    python = sys.executable
    monolith_url = f"http://127.0.0.1:{monolith_port}"
    service_url = f"http://127.0.0.1:{service_port}"
    routing = str(routing_file)
    supervisor = Supervisor(console)
    first = ChildSpec(
        "monolith",
        [*_monolith("serve", "--port", str(monolith_port))],
        f"{monolith_url}/ready",
        env={
            "MONOLITH_SYNC_TOKEN": sync_token,
            "MONOLITH_ROUTING_FILE": routing,
            "MONOLITH_PRODUCTS_SERVICE_URL": service_url,  # the orders adapter after cutover
        },
    )
    after_monolith = [  # the service needs the token public key the monolith publishes
        ChildSpec(
            "service",
            [*_service("serve", "--port", str(service_port))],
            f"{service_url}/ready",
            env={
                "PRODUCTS_SERVICE_SYNC_TOKEN": sync_token,
                "PRODUCTS_SERVICE_ROUTING_FILE": routing,
            },
        ),
        ChildSpec(
            "proxy",
            [python, "-m", "proxy", "serve", "--port", str(proxy_port)],
            f"http://127.0.0.1:{proxy_port}/_strangler/health",
            env={
                "PROXY_ADMIN_TOKEN": admin_token,
                "PROXY_SYNC_TOKEN": sync_token,
                "PROXY_ROUTING_FILE": routing,
                # the dashboard shows the CLI's backfill and reconcile records, and its
                # gates read them as `strangler advance` does, over this source tree (the
                # "no data coupling" gate scans it and reads its boundaries.toml)
                "PROXY_STATE_DIR": str(settings.state_dir),
                "PROXY_SOURCE_ROOT": str(Path.cwd()),
            },
        ),
        ChildSpec(
            "relay",
            [python, "-c", "from strangler.cli import main; main()", "relay", "products"],
            None,
            env={
                "STRANGLER_SYNC_TOKEN": sync_token,
                "STRANGLER_MONOLITH_URL": monolith_url,
                "STRANGLER_SERVICE_URL": service_url,
                "STRANGLER_ROUTING_FILE": routing,
            },
        ),
    ]
    try:
        supervisor.stop_on_signals()  # SIGTERM stops like Ctrl-C: in order, then exit 0
        supervisor.start(first)
        supervisor.wait_ready()
        for child in after_monolith:
            supervisor.start(child)
        supervisor.wait_ready()
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        dashboard = _dashboard_url(proxy_url, admin_token, where, terminal=sys.stdout.isatty())
        console.print(
            f"[bold green]ready[/]  proxy     {proxy_url}  (send traffic here)\n"
            f"       dashboard {dashboard}\n"
            f"       monolith  {monolith_url}  (API docs at /docs)\n"
            f"       service   {service_url}  (API docs at /docs)\n"
            f"       admin     {proxy_url}/_strangler/status  (token in {where})\n"
            f"       relay     follows the phase in {routing}\n"
            "       Ctrl-C stops everything",
            soft_wrap=True,  # a wrapped URL could not be clicked or copied whole
        )
        supervisor.watch()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM raised as StopRequested
        console.print("[cyan]stopping[/]")
    except ChildDied as exc:
        supervisor.stop_all()
        raise fail(
            f"{exc.name} exited with code {exc.code}; everything was stopped.",
            f"read the lines prefixed '{exc.name}' above.",
        ) from exc
    except TimeoutError as exc:
        supervisor.stop_all()
        raise fail(str(exc), "read the logs above; is a port already in use?") from exc
    supervisor.stop_all()


@app.command()
def coupling(
    config: Annotated[Path, typer.Option(help="The boundaries file")] = Path("boundaries.toml"),
    root: Annotated[Path, typer.Option(help="Directory that holds the packages")] = Path("."),
    as_json: JsonOption = False,
) -> None:
    """List every place a capability touches tables it does not own; exit 1 if there are any."""
    try:
        ownership = load_table_ownership(config)
    except OwnershipConfigError as exc:
        raise fail(str(exc), f"fix {config} and run again.") from exc
    found = find_couplings(root, ownership)
    if as_json:
        print_json(
            {
                "couplings": [
                    {
                        "path": str(c.path),
                        "line": c.line,
                        "capability": c.capability,
                        "kind": c.kind,
                        "table": c.table,
                        "owner": c.owner,
                    }
                    for c in found
                ]
            }
        )
        if found:
            raise typer.Exit(code=1)
        return
    if not found:
        owned = sum(len(t) for t in ownership.tables_by_capability.values())
        caps = len(ownership.tables_by_capability)
        console.print(f"[green]no coupling:[/] {caps} capabilities keep to their {owned} tables")
        return
    listing = table("where", "capability", "what", "table", "owner", title="Data coupling")
    for c in found:
        cells = (f"{c.path}:{c.line}", c.capability, c.kind, c.table, c.owner or "(undeclared)")
        listing.add_row(*(escape(cell) for cell in cells))
    console.print(listing)
    console.print(f"[red]{len(found)} coupling(s) found[/]")
    raise typer.Exit(code=1)


proxy_app = typer.Typer(no_args_is_help=True, help="Read and change the proxy's routing.")
app.add_typer(proxy_app, name="proxy")


@proxy_app.command("status")
def proxy_status(as_json: JsonOption = False) -> None:
    """Show each capability's phase, targets, rollout, shadow results and breakers."""
    try:
        status = admin_or_fail().status()
    except AdminApiError as exc:
        raise fail(str(exc), exc.hint) from exc
    if as_json:
        print_json(status)
        return
    listing = table("capability", "phase", "reads", "writes", "canary %", "shadow", "mismatches")
    for name, cap in status["capabilities"].items():
        shadow = cap.get("shadow") or {}
        listing.add_row(
            name,
            cap["phase"],
            cap["reads"],
            cap["writes"],
            f"{cap['canary_percent']:g}",
            f"{shadow.get('compared', 0)} compared",
            f"{shadow.get('mismatch_rate', 0):.4f}",
        )
    console.print(listing)
    breakers = ", ".join(
        f"{name}: {u['breaker']['state']}" for name, u in status["upstreams"].items()
    )
    console.print(f"config version {status['config_version']}; breakers: {breakers}")
    if status.get("last_reload_error"):
        console.print(f"[red]last refused edit:[/] {escape(status['last_reload_error'])}")


@proxy_app.command("set")
def proxy_set(
    capability: Annotated[str, typer.Argument(help="Capability name, e.g. products")],
    phase: Annotated[str | None, typer.Option(help="Move to this phase (one step forward)")] = None,
    canary_percent: Annotated[float | None, typer.Option(min=0, max=100)] = None,
    shadow_percent: Annotated[float | None, typer.Option(min=0, max=100)] = None,
    reason: Annotated[str | None, typer.Option(help="Why, for the audit log")] = None,
    force: Annotated[
        bool,
        typer.Option(help="Take a gated step (a phase forward, a canary raise) unchecked"),
    ] = False,
) -> None:
    """Change a capability's phase or percentages through the proxy's admin API.

    A step the runbook gates (a phase forward, raising the canary) is refused here: `strangler
    advance` checks its gates. --force with --reason takes it anyway, recorded in the audit
    log as forced. Going back (a phase or a percentage) needs neither.
    """
    if force and not (reason and reason.strip()):
        raise fail("--force needs --reason", 'say why, e.g. --reason "gates checked by hand"')
    changes: dict[str, object] = {
        key: value
        for key, value in {
            "phase": phase,
            "canary_percent": canary_percent,
            "shadow_percent": shadow_percent,
            "reason": reason,
        }.items()
        if value is not None
    }
    if force:
        changes["gates"] = "forced"
    try:
        result = admin_or_fail().change(capability, changes)
    except AdminApiError as exc:
        raise fail(str(exc), exc.hint) from exc
    for key, new in result["new"].items():
        console.print(f"{capability}.{key}: {result['old'].get(key)} -> [bold]{new}[/]")


sync_cli.register(app)


migration_cli.register(app)


export_cli.register(app)


def main() -> None:
    app()
