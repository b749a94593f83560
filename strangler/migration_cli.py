"""`strangler status | runbook | advance | rollback`: walking a capability through its phases.

`advance` checks the gates of the next phase (strangler.gates) and prints each with the
numbers that decided it; it changes the phase through the proxy's admin API only when all
pass, or with --force and a reason that goes to the audit log. `rollback` is always allowed.
The steps themselves are strangler.migration_steps, shared with the proxy's dashboard; this
module only prints them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from strangler.admin_client import AdminApiError, AdminClient, admin_or_fail
from strangler.console import console, errors, fail
from strangler.migration_steps import (
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
from strangler.phases import Phase, PhaseFile, SyncDirection, routing_of
from strangler.runbook import STEPS, next_command
from strangler.runbook import render as render_runbook
from strangler.settings import CliSettings
from strangler.sync.client import SyncApiError, SyncClient
from strangler.sync.reconcile import last_verdict
from strangler.write_switch import moves_writes

__all__ = ["register"]


def status() -> None:
    """Per capability: phase, where reads and writes go, rollout, shadow results, relay lag,
    dead letters and breakers. Reads the proxy's admin API and each source side's sync API."""
    settings = CliSettings()
    try:
        proxy = admin_or_fail().status()
    except AdminApiError as exc:
        raise fail(str(exc), exc.hint) from exc
    token = settings.sync_token_value()
    table = Table(
        "capability",
        "phase",
        "reads",
        "writes",
        "canary %",
        "shadow compares",
        "mismatch rate",
        "sync",
        "pending",
        "oldest",
        "dead letters",
        "last reconcile",
    )
    for name, cap in proxy["capabilities"].items():
        shadow = cap.get("shadow") or {}
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
        oldest = lag.get("oldest_age_seconds")
        table.add_row(
            name,
            cap["phase"],
            cap["reads"],
            cap["writes"],
            f"{cap['canary_percent']:g}",
            str(shadow.get("compared", 0)),
            f"{shadow.get('mismatch_rate', 0):.4f}",
            direction.value if direction else "none",
            str(lag.get("pending", "-")),
            f"{oldest:.2f} s" if isinstance(oldest, float) else "-",
            str(lag.get("dead_letters", "-")),
            last_verdict(settings.state_dir / f"reconcile-{name}.json"),
        )
    console.print(table)
    breakers = ", ".join(f"{n}: {u['breaker']['state']}" for n, u in proxy["upstreams"].items())
    console.print(f"config version {proxy['config_version']}; breakers: {breakers}")
    if proxy.get("last_reload_error"):
        console.print(f"[red]last refused edit:[/] {escape(proxy['last_reload_error'])}")


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
    current = PhaseFile(CliSettings().routing_file, capability).current()
    from rich.markdown import Markdown  # markdown-it: only this command needs it

    console.print(Markdown(render_runbook(capability, current)))
    following = next_command(capability, current)
    console.print(f"[bold]next:[/] {following}" if following else "[bold]done:[/] nothing left")


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
) -> dict[str, object]:
    """Apply a phase change, saying so first when it moves writes behind the write fence."""
    if moves_writes(plan.current, plan.target):
        console.print(
            f"moving {plan.capability}'s writes from {routing_of(plan.current).writes.value} "
            f"to {routing_of(plan.target).writes.value}: holding writes, draining the relay"
        )
    try:
        outcome = apply_step(admin, CliSettings(), plan, changes, drain_seconds=drain_seconds)
    except StepRefused as exc:
        raise _refused(exc) from exc
    report = outcome.switch
    if report is not None:
        console.print(
            f"writes paused {report.paused_ms:.0f} ms ({report.held_requests} request(s) "
            f"held); the relay delivered the last {report.drained_events} event(s) first"
        )
    return outcome.changed


def advance(
    capability: Annotated[str, typer.Argument(help="Capability name, e.g. products")],
    percent: Annotated[float | None, typer.Option(min=0, max=100, help="Canary percentage")] = None,
    force: Annotated[bool, typer.Option(help="Advance even if a gate fails")] = False,
    reason: Annotated[str | None, typer.Option(help="Why (required with --force)")] = None,
    drain_seconds: Annotated[float, _DRAIN] = 20.0,
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
    table = Table("gate", "result", "evidence", title=plan.title)
    for result in results:
        verdict = "[green]pass[/]" if result.passed else "[red]FAIL[/]"
        table.add_row(escape(result.name), verdict, escape(result.evidence))
    console.print(table)
    failed = [r.name for r in results if not r.passed]
    if failed and not force:
        errors.print(
            f"[red]refused:[/] {', '.join(failed)} failed; fix it and run again, or "
            '--force --reason "..." (recorded in the audit log)'
        )
        raise typer.Exit(code=1)
    changed = _change(admin, plan, advance_changes(plan, results, reason), drain_seconds)
    console.print(
        f"{capability}: {current.value} -> [bold]{plan.target.value}[/]"
        f" (config version {changed['config_version']})"
    )
    following = next_command(capability, plan.target)
    if following:
        console.print(f"next: {following}")


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
    console.print(f"how to check: {STEPS[plan.target].rollback}")


def register(app: typer.Typer) -> None:
    for command in (status, runbook, advance, rollback):
        app.command()(command)
