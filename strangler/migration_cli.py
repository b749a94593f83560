"""`strangler status | runbook | advance | rollback`: walking a capability through its phases.

`advance` checks the gates of the next phase (strangler.gates) and prints each with the
numbers that decided it; it changes the phase through the proxy's admin API only when all
pass, or with --force and a reason that goes to the audit log. `rollback` is always allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from strangler.admin_client import AdminApiError, AdminClient, admin_or_fail
from strangler.console import console, errors, fail
from strangler.gates import Check, GateContext, Thresholds, canary_healthy, gates_for
from strangler.phases import PHASES, Phase, PhaseFile, SyncDirection, routing_of
from strangler.runbook import STEPS, next_command
from strangler.runbook import render as render_runbook
from strangler.settings import CliSettings
from strangler.sync.client import SyncApiError, SyncClient
from strangler.sync.reconcile import last_verdict
from strangler.write_switch import SwitchFailed, moves_writes, switch_writes

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


def _gate_context(capability: str, proxy: dict[str, object]) -> GateContext:
    settings = CliSettings()
    token = settings.sync_token_value()
    if token is None:
        raise fail(
            "no sync token",
            "set STRANGLER_SYNC_TOKEN, or run where `strangler up` "
            f"wrote {settings.sync_token_file}",
        )
    try:
        metrics = httpx.get(f"{settings.proxy_url.rstrip('/')}/_strangler/metrics", timeout=5).text
    except httpx.TransportError as exc:
        raise fail(f"cannot read the proxy's metrics: {exc}", "is the proxy running?") from exc
    return GateContext(
        capability=capability,
        proxy_status=proxy,
        monolith=SyncClient(settings.monolith_url, token, capability),
        service=SyncClient(settings.service_url, token, capability),
        service_url=settings.service_url,
        metrics_text=metrics,
        source_root=Path("."),
        boundaries_file=Path("boundaries.toml"),
        backfill_checkpoint=settings.state_dir / f"backfill-{capability}.json",
        reconcile_record=settings.state_dir / f"reconcile-{capability}.json",
        thresholds=Thresholds(),
    )


def _current_phase(admin: AdminClient, capability: str) -> tuple[dict[str, object], Phase]:
    try:
        proxy = admin.status()
    except AdminApiError as exc:
        raise fail(str(exc), exc.hint) from exc
    capabilities: dict[str, dict[str, object]] = proxy["capabilities"]
    if capability not in capabilities:
        raise fail(
            f"the proxy knows no capability {capability!r}",
            f"known: {', '.join(capabilities) or 'none'}",
        )
    return proxy, Phase(str(capabilities[capability]["phase"]))


_DRAIN = typer.Option(
    min=0.5,
    max=60,
    help="When writes move sides: how long the relay may take to drain while writes are held",
)


def _change(
    admin: AdminClient,
    capability: str,
    current: Phase,
    target: Phase,
    changes: dict[str, object],
    drain_seconds: float,
) -> dict[str, object]:
    """Apply a phase change; one that moves writes goes behind the write fence."""
    if not moves_writes(current, target):
        try:
            return admin.change(capability, changes)
        except AdminApiError as exc:
            raise fail(str(exc), exc.hint) from exc
    console.print(
        f"moving {capability}'s writes from {routing_of(current).writes.value} to "
        f"{routing_of(target).writes.value}: holding writes, draining the relay"
    )
    try:
        report = switch_writes(
            admin, CliSettings(), capability, current, changes, drain_seconds=drain_seconds
        )
    except SwitchFailed as exc:
        raise fail(str(exc), exc.hint) from exc
    console.print(
        f"writes paused {report.paused_ms:.0f} ms ({report.held_requests} request(s) held); "
        f"the relay delivered the last {report.drained_events} event(s) first"
    )
    return report.changed


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
    proxy, current = _current_phase(admin, capability)
    raising = current is Phase.CANARY and percent is not None
    checks: tuple[Check, ...]
    if raising:
        target, checks = Phase.CANARY, (canary_healthy,)
    elif current is PHASES[-1]:
        raise fail(f"{capability} is already {current.value}", "nothing left to advance")
    else:
        target = PHASES[current.position + 1]
        checks = gates_for(target)
    ctx = _gate_context(capability, proxy)
    try:
        results = [check(ctx) for check in checks]
    finally:
        ctx.monolith.close()
        ctx.service.close()
    table = Table(
        "gate",
        "result",
        "evidence",
        title=f"{capability}: {current.value} -> "
        f"{target.value}" + (f" at {percent:g} %" if raising else ""),
    )
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
    changes: dict[str, object] = {"phase": target.value}
    if target is Phase.CANARY:
        changes["canary_percent"] = percent if percent is not None else 10.0
    elif percent is not None:
        changes["canary_percent"] = percent
    note = reason or "gates passed"
    if failed:
        note = f"FORCED past failing gates ({', '.join(failed)}): {reason}"
    changes["reason"] = note
    changed = _change(admin, capability, current, target, changes, drain_seconds)
    console.print(
        f"{capability}: {current.value} -> [bold]{target.value}[/]"
        f" (config version {changed['config_version']})"
    )
    following = next_command(capability, target)
    if following:
        console.print(f"next: {following}")


def rollback(
    capability: Annotated[str, typer.Argument(help="Capability name, e.g. products")],
    reason: Annotated[str | None, typer.Option(help="Why, for the audit log")] = None,
    drain_seconds: Annotated[float, _DRAIN] = 20.0,
) -> None:
    """Go back one phase, at any time (no gates: the way back must always be open)."""
    admin = admin_or_fail()
    _, current = _current_phase(admin, capability)
    if current is PHASES[0]:
        raise fail(f"{capability} is in {current.value}", "there is no phase before it")
    target = PHASES[current.position - 1]
    changes: dict[str, object] = {"phase": target.value, "reason": reason or "rollback"}
    _change(admin, capability, current, target, changes, drain_seconds)
    console.print(f"{capability}: {current.value} -> [bold]{target.value}[/] (rolled back)")
    console.print(f"how to check: {STEPS[target].rollback}")


def register(app: typer.Typer) -> None:
    for command in (status, runbook, advance, rollback):
        app.command()(command)
