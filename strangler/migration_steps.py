"""One step of a capability's migration, forward or back: what the CLI and the dashboard share.

`strangler advance` / `strangler rollback` and the proxy's dashboard take the same steps: find
the current phase, decide the target, check the target's gates (strangler.gates) with their
evidence, and change the phase through the proxy's admin API, behind the write fence when
writes move sides (strangler.write_switch). Keeping that here, without any printing, means the
two cannot drift apart: a gate added for the CLI is checked by the dashboard too, and the
dashboard cannot move writes in a way the CLI would not. Callers turn `StepRefused` into their
own kind of error (the CLI's message and hint, the dashboard's problem+json); `GatesUnchecked`,
a kind of it, says a gate could not even be run (an unreadable boundaries file, a corrupt
record), which is a setup problem to fix, not a gate that failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from strangler.admin_client import AdminApiError, AdminClient
from strangler.coupling import OwnershipConfigError
from strangler.gates import (
    Check,
    GateContext,
    GateResult,
    Thresholds,
    canary_healthy,
    gates_for,
)
from strangler.phases import PHASES, Phase
from strangler.settings import CliSettings
from strangler.sync.client import SyncClient
from strangler.write_switch import SwitchFailed, SwitchReport, moves_writes, switch_writes

__all__ = [
    "DEFAULT_CANARY_PERCENT",
    "GatesUnchecked",
    "StepOutcome",
    "StepPlan",
    "StepRefused",
    "advance_changes",
    "apply_step",
    "check_gates",
    "gate_context",
    "plan_advance",
    "plan_rollback",
    "read_metrics",
    "read_phase",
    "rollback_changes",
]

DEFAULT_CANARY_PERCENT = 10.0
"""The rollout a capability enters canary with when no percentage is given."""


class StepRefused(Exception):
    """The step cannot be taken (or could not be completed); the message says why, the hint
    what to do. Nothing changed unless the message says so."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class GatesUnchecked(StepRefused):
    """A gate could not be run at all (its input is missing or unreadable): nothing was
    decided and nothing changed; the hint says what to fix."""


@dataclass(frozen=True)
class StepPlan:
    """Where a step goes and what must hold first.

    `raising` is a step inside canary that only raises the rollout to `percent`; it is
    gated by the canary's health instead of the next phase's gates.
    """

    capability: str
    current: Phase
    target: Phase
    checks: tuple[Check, ...]
    percent: float | None = None
    raising: bool = False

    @property
    def title(self) -> str:
        at = f" at {self.percent:g} %" if self.raising and self.percent is not None else ""
        return f"{self.capability}: {self.current.value} -> {self.target.value}{at}"


@dataclass(frozen=True)
class StepOutcome:
    """What the proxy answered to the change, and the write switch's cost when writes moved."""

    changed: dict[str, Any]
    switch: SwitchReport | None


def read_phase(admin: AdminClient, capability: str) -> tuple[dict[str, Any], Phase]:
    """The proxy's status and the capability's current phase, as the admin API reports them."""
    try:
        proxy = admin.status()
    except AdminApiError as exc:
        raise StepRefused(str(exc), exc.hint) from exc
    capabilities: dict[str, dict[str, Any]] = proxy["capabilities"]
    if capability not in capabilities:
        raise StepRefused(
            f"the proxy knows no capability {capability!r}",
            f"known: {', '.join(capabilities) or 'none'}",
        )
    return proxy, Phase(str(capabilities[capability]["phase"]))


def plan_advance(capability: str, current: Phase, percent: float | None = None) -> StepPlan:
    """The next phase and its gates; in canary with a percentage, a raise of the rollout."""
    if current is Phase.CANARY and percent is not None:
        return StepPlan(capability, current, Phase.CANARY, (canary_healthy,), percent, True)
    if current is PHASES[-1]:
        raise StepRefused(f"{capability} is already {current.value}", "nothing left to advance")
    target = PHASES[current.position + 1]
    return StepPlan(capability, current, target, gates_for(target), percent)


def plan_rollback(capability: str, current: Phase) -> StepPlan:
    """The phase before; no gates, because the way back must always be open."""
    if current is PHASES[0]:
        raise StepRefused(f"{capability} is in {current.value}", "there is no phase before it")
    return StepPlan(capability, current, PHASES[current.position - 1], ())


def read_metrics(proxy_url: str) -> str:
    """The proxy's Prometheus text, which the canary gate reads error rates from."""
    try:
        return httpx.get(f"{proxy_url.rstrip('/')}/_strangler/metrics", timeout=5).text
    except httpx.TransportError as exc:
        raise StepRefused(
            f"cannot read the proxy's metrics: {exc}", "is the proxy running?"
        ) from exc


def gate_context(
    settings: CliSettings,
    capability: str,
    proxy_status: dict[str, Any],
    metrics_text: str,
    *,
    source_root: Path = Path("."),
    boundaries_file: Path | None = None,
    thresholds: Thresholds | None = None,
) -> GateContext:
    """Everything the gates look at: the sides' sync APIs (with the sync token), the proxy's
    status and metrics, the source tree (and its table ownership, `boundaries_file`, by
    default boundaries.toml at its root), and the backfill and reconcile records in the state
    directory. The caller closes the two sync clients (`check_gates` does)."""
    token = settings.sync_token_value()
    if token is None:
        raise StepRefused(
            "no sync token",
            "set STRANGLER_SYNC_TOKEN, or run where `strangler up` "
            f"wrote {settings.sync_token_file}",
        )
    return GateContext(
        capability=capability,
        proxy_status=proxy_status,
        monolith=SyncClient(settings.monolith_url, token, capability),
        service=SyncClient(settings.service_url, token, capability),
        service_url=settings.service_url,
        metrics_text=metrics_text,
        source_root=source_root,
        boundaries_file=boundaries_file or source_root / "boundaries.toml",
        backfill_checkpoint=settings.state_dir / f"backfill-{capability}.json",
        reconcile_record=settings.state_dir / f"reconcile-{capability}.json",
        thresholds=thresholds or Thresholds(),
    )


def check_gates(plan: StepPlan, ctx: GateContext) -> list[GateResult]:
    """Run the plan's gates in order (a reconcile may take seconds); closes ctx's clients.

    A gate that cannot be run (its file is missing or unreadable) raises GatesUnchecked
    naming the gate and the file, rather than an exception the caller would not expect.
    """
    try:
        return [_run_gate(check, ctx) for check in plan.checks]
    finally:
        ctx.monolith.close()
        ctx.service.close()


def _run_gate(check: Check, ctx: GateContext) -> GateResult:
    gate = check.__name__.replace("_", " ")
    try:
        return check(ctx)
    except OwnershipConfigError as exc:
        raise GatesUnchecked(
            f"the gate {gate!r} could not be checked: {exc}",
            f"fix {ctx.boundaries_file}, or point the checker at the source tree that holds "
            "it (run `strangler` from the repository root; the proxy's dashboard reads "
            "PROXY_SOURCE_ROOT and PROXY_BOUNDARIES_FILE)",
        ) from exc
    except (OSError, ValueError) as exc:
        raise GatesUnchecked(
            f"the gate {gate!r} could not be checked: {exc}",
            f"a file it reads is unreadable: fix or remove {ctx.backfill_checkpoint.name} or "
            f"{ctx.reconcile_record.name} in {ctx.reconcile_record.parent} (rerun the backfill "
            "or the reconcile to write it again), then check again",
        ) from exc


def advance_changes(
    plan: StepPlan, results: list[GateResult], reason: str | None = None
) -> dict[str, object]:
    """The admin API change for an advance whose gates gave `results`.

    A change made past failing gates says so in its reason, so the audit log shows it was
    forced and which gates failed.
    """
    changes: dict[str, object] = {"phase": plan.target.value}
    if plan.target is Phase.CANARY:
        changes["canary_percent"] = (
            plan.percent if plan.percent is not None else DEFAULT_CANARY_PERCENT
        )
    elif plan.percent is not None:
        changes["canary_percent"] = plan.percent
    failed = [r.name for r in results if not r.passed]
    note = reason or "gates passed"
    if failed:
        note = f"FORCED past failing gates ({', '.join(failed)}): {reason}"
    changes["reason"] = note
    changes["gates"] = "forced" if failed else "passed"
    return changes


def rollback_changes(plan: StepPlan, reason: str | None = None) -> dict[str, object]:
    return {"phase": plan.target.value, "reason": reason or "rollback"}


def apply_step(
    admin: AdminClient,
    settings: CliSettings,
    plan: StepPlan,
    changes: dict[str, object],
    *,
    drain_seconds: float,
) -> StepOutcome:
    """Apply the change; one that moves writes goes behind the write fence, after the relay
    drained the side that held them (see strangler.write_switch for the order and why)."""
    if not moves_writes(plan.current, plan.target):
        try:
            return StepOutcome(admin.change(plan.capability, changes), None)
        except AdminApiError as exc:
            raise StepRefused(str(exc), exc.hint) from exc
    try:
        report = switch_writes(
            admin, settings, plan.capability, plan.current, changes, drain_seconds=drain_seconds
        )
    except SwitchFailed as exc:
        raise StepRefused(str(exc), exc.hint) from exc
    return StepOutcome(report.changed, report)
