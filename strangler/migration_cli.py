"""`strangler status | runbook | advance | rollback`: walking a capability through its phases.

`advance` checks the gates of the next phase (strangler.gates) and prints each with the
numbers that decided it; it changes the phase through the proxy's admin API only when all
pass, or with --force and a reason that goes to the audit log. `rollback` is always allowed.
The steps themselves are strangler.migration_steps, shared with the proxy's dashboard; this
module only prints them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from strangler.admin_client import AdminApiError, AdminClient, admin_or_fail
from strangler.console import JsonOption, console, errors, fail, print_json, table
from strangler.migration_steps import (
    DEFAULT_CANARY_PERCENT,
    StepPlan,
    StepRefused,
    advance_changes,
    apply_step,
    check_gates,
    gate_context,
    plan_advance,
    plan_rollback,
    read_metrics,
    read_phase,
    rollback_changes,
)
from strangler.phases import Phase, PhaseFile, Side, SyncDirection, routing_of
from strangler.routing_file import ConfigError, load_config
from strangler.runbook import STEPS, next_step
from strangler.runbook import render as render_runbook
from strangler.settings import CliSettings
from strangler.sync.client import SyncApiError, SyncClient
from strangler.sync.reconcile import last_verdict
from strangler.write_switch import SwitchReport, moves_writes

__all__ = ["register"]


def status(as_json: JsonOption = False) -> None:
    """Per capability: phase, where reads and writes go, rollout, shadow results, relay lag,
    dead letters and breakers. Reads the proxy's admin API and each source side's sync API."""
    settings = CliSettings()
    try:
        proxy = admin_or_fail().status()
    except AdminApiError as exc:
        raise fail(str(exc), exc.hint) from exc
    token = settings.sync_token_value()
    records = {}
    for name, cap in proxy["capabilities"].items():
        direction = routing_of(Phase(cap["phase"])).sync
        lag: dict[str, object] = {}
        if direction is not None and token:
            source = (
                settings.monolith_url
                if direction is SyncDirection.FORWARD
                else settings.service_url
            )
            client = SyncClient(source, token, name, timeout=5)
            try:
                lag = client.lag()
            except SyncApiError:
                lag = {"pending": "unreachable"}
            finally:
                client.close()
        records[name] = {
            **cap,
            "sync": direction.value if direction else None,
            "relay": lag,
            "last_reconcile": last_verdict(settings.state_dir / f"reconcile-{name}.json"),
        }
    if as_json:
        print_json(
            {
                "config_version": proxy["config_version"],
                "last_reload_error": proxy.get("last_reload_error"),
                "capabilities": records,
                "upstreams": proxy["upstreams"],
            }
        )
        return
    for name, record in records.items():
        console.print(_status_table(name, record))
    breakers = ", ".join(f"{n}: {u['breaker']['state']}" for n, u in proxy["upstreams"].items())
    console.print(f"config version {proxy['config_version']}; breakers: {breakers}")
    if proxy.get("last_reload_error"):
        console.print(f"[red]last refused edit:[/] {escape(proxy['last_reload_error'])}")


def _status_table(name: str, record: dict[str, Any]) -> Table:
    """One capability as rows of (what, value): fits a narrow terminal however many things
    there are to say, where one wide row per capability was cut at 140 columns."""
    shadow = record.get("shadow") or {}
    lag = record["relay"]
    oldest = lag.get("oldest_age_seconds")
    rows = {
        "phase": record["phase"],
        "reads": f"{record['reads']} (canary {record['canary_percent']:g} %)"
        if record["reads"] == "split"
        else record["reads"],
        "writes": record["writes"],
        "shadow": f"{shadow.get('compared', 0)} compared, mismatch rate "
        f"{shadow.get('mismatch_rate', 0):.4f}",
        "sync": record["sync"] or "none",
        "relay": "nothing to relay in this phase"
        if record["sync"] is None
        else f"{lag.get('pending', '-')} pending, oldest "
        + (f"{oldest:.2f} s" if isinstance(oldest, float) else "none")
        + f", {lag.get('dead_letters', '-')} dead letters",
        "last reconcile": record["last_reconcile"],
    }
    listing = table(name, "")
    for key, value in rows.items():
        listing.add_row(key, escape(str(value)))
    return listing


def runbook(
    capability: Annotated[str, typer.Argument(help="Capability name, e.g. products")],
    write: Annotated[bool, typer.Option(help="Write runbooks/<capability>.md")] = False,
) -> None:
    """Print the migration runbook with the current step marked and the next command."""
    if write:
        target = Path("runbooks") / f"{capability}.md"
        target.parent.mkdir(exist_ok=True)
        target.write_text(render_runbook(capability))
        console.print(f"wrote {target}")
        return
    routing_file = CliSettings().routing_file
    current = PhaseFile(routing_file, capability).current()
    from rich.markdown import Markdown  # markdown-it: only this command needs it

    console.print(Markdown(render_runbook(capability, current)))
    try:
        cap = load_config(routing_file).capabilities[capability]
        percent, prefix = cap.canary_percent, cap.prefixes[0]
    except (ConfigError, KeyError, IndexError):  # the phase read as monolith: no step uses them
        percent, prefix = 0.0, "/"
    following = next_step(capability, current, percent, prefix)
    console.print(
        f"[bold]next:[/] {escape(str(following))}" if following else "[bold]done:[/] nothing left",
        soft_wrap=True,
    )


def _refused(exc: StepRefused) -> typer.Exit:
    return fail(str(exc), exc.hint)


_DRAIN = typer.Option(
    min=0.5,
    max=60,
    help="When writes move sides: how long the relay may take to drain while writes are held",
)


def _change(
    admin: AdminClient,
    plan: StepPlan,
    changes: dict[str, object],
    drain_seconds: float,
    say: Console = console,
) -> tuple[dict[str, object], SwitchReport | None]:
    """Apply a phase change, saying so first when it moves writes behind the write fence."""
    if moves_writes(plan.current, plan.target):
        say.print(
            f"moving {plan.capability}'s writes from {routing_of(plan.current).writes.value} "
            f"to {routing_of(plan.target).writes.value}: holding writes, draining the relay"
        )
    try:
        outcome = apply_step(admin, CliSettings(), plan, changes, drain_seconds=drain_seconds)
    except StepRefused as exc:
        raise _refused(exc) from exc
    report = outcome.switch
    if report is not None:
        say.print(
            f"writes paused {report.paused_ms:.0f} ms ({report.held_requests} request(s) "
            f"held); the relay delivered the last {report.drained_events} event(s) first"
        )
    return outcome.changed, report


def advance(
    capability: Annotated[str, typer.Argument(help="Capability name, e.g. products")],
    percent: Annotated[float | None, typer.Option(min=0, max=100, help="Canary percentage")] = None,
    force: Annotated[bool, typer.Option(help="Advance even if a gate fails")] = False,
    reason: Annotated[str | None, typer.Option(help="Why (required with --force)")] = None,
    drain_seconds: Annotated[float, _DRAIN] = 20.0,
    as_json: JsonOption = False,
) -> None:
    """Check the gates of the next phase, print each with its evidence, and advance if all
    pass (exit 1 if one fails). In canary, --percent raises the rollout instead."""
    if force and not reason:
        raise fail("--force needs --reason", 'say why, e.g. --reason "gate flaky, checked by hand"')
    admin = admin_or_fail()
    settings = CliSettings()
    try:
        proxy, current = read_phase(admin, capability)
        plan = plan_advance(capability, current, percent)
        ctx = gate_context(settings, capability, proxy, read_metrics(settings.proxy_url))
        results = check_gates(plan, ctx)  # a gate that cannot run is refused, named
    except StepRefused as exc:
        raise _refused(exc) from exc
    say = _QUIET if as_json else console
    record: dict[str, Any] = {
        "capability": capability,
        "from": current.value,
        "to": plan.target.value,
        "gates": [dataclasses.asdict(r) for r in results],
    }
    listing = table("gate", "result", "evidence", title=plan.title)
    for result in results:
        verdict = "[green]pass[/]" if result.passed else "[red]FAIL[/]"
        listing.add_row(escape(result.name), verdict, escape(result.evidence))
    say.print(listing)
    failed = [r for r in results if not r.passed]
    if failed and not force:
        if as_json:
            print_json({**record, "changed": False})
        for result in failed:
            errors.print(f"[bold]{escape(result.name)}:[/] {escape(result.todo)}")
        errors.print(
            f"[red]refused:[/] {', '.join(r.name for r in failed)} failed; do the above and "
            'run again, or --force --reason "..." (recorded in the audit log)'
        )
        raise typer.Exit(code=1)
    changes = advance_changes(plan, results, reason)
    changed, switch = _change(admin, plan, changes, drain_seconds, say)
    cap = proxy["capabilities"][capability]
    percent = float(plan.percent if plan.percent is not None else cap["canary_percent"])
    if plan.target is Phase.CANARY and plan.percent is None and current is not Phase.CANARY:
        percent = DEFAULT_CANARY_PERCENT
    if plan.raising:
        moved = f"canary {cap['canary_percent']:g} % -> [bold]{percent:g} %[/]"
    else:
        at = f" at {percent:g} %" if plan.target is Phase.CANARY else ""
        moved = f"{current.value} -> [bold]{plan.target.value}{at}[/]"
    say.print(f"{capability}: {moved} (config version {changed['config_version']})")
    prefixes = cap.get("prefixes") or ["/"]
    following = next_step(capability, plan.target, percent, str(prefixes[0]))
    if following:
        say.print(f"[bold]next:[/] {escape(str(following))}", soft_wrap=True)
    if as_json:
        print_json(
            {
                **record,
                "changed": True,
                "forced": bool(failed),
                "canary_percent": percent if plan.target is Phase.CANARY else None,
                "config_version": changed["config_version"],
                "write_switch": dataclasses.asdict(switch) if switch else None,
                "next": str(following) if following else None,
            }
        )


_QUIET = Console(quiet=True)


def rollback(
    capability: Annotated[str, typer.Argument(help="Capability name, e.g. products")],
    reason: Annotated[str | None, typer.Option(help="Why, for the audit log")] = None,
    drain_seconds: Annotated[float, _DRAIN] = 20.0,
) -> None:
    """Go back one phase, at any time (no gates: the way back must always be open)."""
    admin = admin_or_fail()
    try:
        _, current = read_phase(admin, capability)
        plan = plan_rollback(capability, current)
    except StepRefused as exc:
        raise _refused(exc) from exc
    _change(admin, plan, rollback_changes(plan, reason), drain_seconds)
    console.print(f"{capability}: {current.value} -> [bold]{plan.target.value}[/] (rolled back)")
    step = STEPS[plan.current]  # the step rolled back out of says what that did
    console.print(f"what it did: {escape(step.rollback)}", soft_wrap=True)
    check = step.after_rollback.replace("<capability>", capability)
    console.print(f"how to check: {escape(check)}", soft_wrap=True)


def barrier(
    capability: Annotated[str, typer.Argument(help="Capability name, e.g. products")],
    writes_to: Annotated[
        Side | None,
        typer.Option(help="Close the other side's barrier, then open this side's"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show each side's write barrier (whether its database lets the capability's writes
    commit), or set them: the escape hatch after a hand edit of the phase moved writes
    without `strangler advance`/`rollback`, which set the barriers themselves."""
    settings = CliSettings()
    token = settings.sync_token_value()
    if token is None:
        raise fail("no sync token", "set STRANGLER_SYNC_TOKEN, or run where `up` wrote it")
    urls = {Side.MONOLITH: settings.monolith_url, Side.SERVICE: settings.service_url}
    clients = {side: SyncClient(url, token, capability, timeout=15) for side, url in urls.items()}
    try:
        if writes_to is not None:
            other = Side.SERVICE if writes_to is Side.MONOLITH else Side.MONOLITH
            clients[other].set_writes(False)  # first: at no moment both sides take writes
            clients[writes_to].set_writes(True)
        states = {side.value: client.writes() for side, client in clients.items()}
    except SyncApiError as exc:
        raise fail(str(exc), "are both sides running, with the sync token?") from exc
    finally:
        for client in clients.values():
            client.close()
    if as_json:
        print_json({"capability": capability, "writes_here": states})
        return
    words = {True: "takes writes", False: "refuses writes", None: "follows the phase"}
    for side, here in states.items():
        console.print(f"{side}: {words[here]}")


def register(app: typer.Typer) -> None:
    for command in (status, runbook, advance, rollback, barrier):
        app.command()(command)
