"""Gates: what must be true before a capability enters a phase, checked with evidence.

A gate is a check that returns pass or fail *with the numbers that decided it*, so an operator
sees why, not just a tick. The checks read the live system through its APIs (the proxy's
admin API, each side's sync API) and the files the CLI keeps; the thresholds are plain data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from strangler.coupling import find_couplings, load_table_ownership
from strangler.phases import Phase
from strangler.runbook import MIN_CANARY_READS, MIN_SHADOW_READS
from strangler.sync.client import SyncApiError, SyncClient
from strangler.sync.reconcile import reconcile, remember_verdict

__all__ = ["Check", "GateContext", "GateResult", "Thresholds", "gates_for"]


@dataclass(frozen=True)
class GateResult:
    """A gate's verdict, the numbers that decided it, and (when it failed) what to do."""

    name: str
    passed: bool
    evidence: str
    todo: str = ""


@dataclass(frozen=True)
class Thresholds:
    min_shadow_sample: int = MIN_SHADOW_READS
    min_canary_requests: int = MIN_CANARY_READS
    max_mismatch_rate: float = 0.001
    max_relay_pending: int = 100
    max_relay_age_seconds: float = 5.0
    max_error_rate_increase: float = 0.01


@dataclass
class GateContext:
    """Everything a gate may look at. Clients are built by the caller (tests pass their own)."""

    capability: str
    proxy_status: dict[str, Any]
    monolith: SyncClient
    service: SyncClient
    service_url: str
    metrics_text: str
    source_root: Path
    boundaries_file: Path
    backfill_checkpoint: Path
    reconcile_record: Path
    thresholds: Thresholds


Check = Callable[[GateContext], GateResult]


def no_coupling(ctx: GateContext) -> GateResult:
    """Gate 0: nothing outside the capability holds a foreign key into, joins or writes its
    tables (the import contracts are held by lint-imports in CI)."""
    ownership = load_table_ownership(ctx.boundaries_file)
    found = find_couplings(ctx.source_root, ownership)
    mine = {
        t
        for cap, ts in ownership.tables_by_capability.items()
        if cap.rsplit(".", 1)[-1] == ctx.capability
        for t in ts
    }
    relevant = [c for c in found if c.table in mine or c.capability.endswith(ctx.capability)]
    if not relevant:
        return GateResult(
            "no data coupling", True, f"0 foreign keys, joins or statements into {sorted(mine)}"
        )
    listed = "; ".join(c.describe() for c in relevant[:5])
    return GateResult(
        "no data coupling",
        False,
        f"{len(relevant)} found: {listed}",
        "remove each coupling listed (`strangler coupling` lists them all), then check again",
    )


def service_ready(ctx: GateContext) -> GateResult:
    try:
        response = httpx.get(f"{ctx.service_url.rstrip('/')}/ready", timeout=3)
    except httpx.TransportError as exc:
        return GateResult(
            "service ready",
            False,
            f"{ctx.service_url} unreachable: {exc}",
            "start the service (STRANGLER_SERVICE_URL says where it is expected)",
        )
    elapsed = response.elapsed.total_seconds() * 1000
    return GateResult(
        "service ready",
        response.status_code == 200,
        f"/ready answered {response.status_code} in {elapsed:.0f} ms",
        "read the service's log: /ready fails while its database is unreachable",
    )


def service_sync_api(ctx: GateContext) -> GateResult:
    try:
        bounds = ctx.service.bounds()
    except SyncApiError as exc:
        return GateResult(
            "service sync API",
            False,
            str(exc),
            "give the service the same sync token as the CLI (its SYNC_TOKEN setting)",
        )
    return GateResult(
        "service sync API", True, f"answers with the sync token; {bounds['count']} rows"
    )


def backfill_finished(ctx: GateContext) -> GateResult:
    try:
        state = json.loads(ctx.backfill_checkpoint.read_text())
    except FileNotFoundError:
        return GateResult(
            "backfill finished",
            False,
            f"no backfill has run ({ctx.backfill_checkpoint} missing)",
            f"run `strangler backfill {ctx.capability}`",
        )
    ok = bool(state.get("finished")) and state.get("rejected", 0) == 0
    todo = f"run `strangler backfill {ctx.capability}` to finish it (it resumes)"
    if state.get("rejected", 0):
        todo = (
            "the target refused rows (the backfill printed them): fix the cause, then "
            f"`strangler backfill {ctx.capability} --restart`"
        )
    return GateResult(
        "backfill finished",
        ok,
        f"{state.get('rows', 0)} rows, {state.get('rejected', 0)} rejected, "
        f"finished={state.get('finished')}",
        todo,
    )


def _relay_lag(side: SyncClient, name: str, capability: str, t: Thresholds) -> GateResult:
    todo = (
        f"wait for the relay to deliver (is `strangler relay {capability}` running? "
        "`strangler status` shows pending and dead letters), then check again"
    )
    try:
        lag = side.lag()
    except SyncApiError as exc:
        return GateResult(name, False, str(exc), "is that side running, with the sync token?")
    age = lag["oldest_age_seconds"] or 0.0
    ok = lag["pending"] <= t.max_relay_pending and age <= t.max_relay_age_seconds
    return GateResult(
        name,
        ok,
        f"{lag['pending']} pending (max {t.max_relay_pending}), oldest "
        f"{age:.2f} s (max {t.max_relay_age_seconds:g} s), "
        f"{lag['dead_letters']} dead letters",
        todo,
    )


def forward_relay_caught_up(ctx: GateContext) -> GateResult:
    return _relay_lag(ctx.monolith, "relay caught up", ctx.capability, ctx.thresholds)


def reconcile_clean(ctx: GateContext) -> GateResult:
    try:
        report = reconcile(ctx.monolith, ctx.service, confirm_seconds=3.0)
    except SyncApiError as exc:
        return GateResult("reconcile: 0 differences", False, str(exc), "are both sides running?")
    remember_verdict(ctx.reconcile_record, report)
    return GateResult(
        "reconcile: 0 differences",
        report.agree,
        f"{len(report.differences)} differences over {report.rows_source} / "
        f"{report.rows_target} rows, {report.ranges_checked} ranges",
        f"`strangler reconcile {ctx.capability}` lists them (rows the service lacks: has "
        f"the backfill run?); `strangler reconcile {ctx.capability} --repair` re-sends them",
    )


def shadow_clean(ctx: GateContext) -> GateResult:
    cap = ctx.proxy_status["capabilities"][ctx.capability]
    shadow = cap.get("shadow") or {}
    compared, rate = shadow.get("compared", 0), shadow.get("mismatch_rate", 0.0)
    t = ctx.thresholds
    ok = compared >= t.min_shadow_sample and rate <= t.max_mismatch_rate
    if compared < t.min_shadow_sample:
        todo = (
            f"send at least {t.min_shadow_sample - compared} more reads to "
            f"{_prefix(cap)} through the proxy while in shadow, then check again"
        )
    else:
        todo = (
            "read the sample diffs (the dashboard, or /_strangler/capabilities/"
            f"{ctx.capability}/mismatches): fix the service, or leave volatile fields out "
            "with ignore_fields"
        )
    return GateResult(
        "shadow reads agree",
        ok,
        f"{compared} compared (min {t.min_shadow_sample}), mismatch rate "
        f"{rate:.4f} (max {t.max_mismatch_rate:g})",
        todo,
    )


def _prefix(cap: dict[str, Any]) -> str:
    prefixes = cap.get("prefixes") or ["/"]
    return str(prefixes[0])


def _error_rate(metrics_text: str, capability: str, upstream: str) -> tuple[float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    total = errors = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name != "strangler_proxy_requests_total":
                continue
            if sample.labels.get("capability") != capability:
                continue
            if sample.labels.get("upstream") != upstream:
                continue
            total += sample.value
            if sample.labels.get("status_class") == "5xx":
                errors += sample.value
    return total, (errors / total if total else 0.0)


def canary_healthy(ctx: GateContext) -> GateResult:
    cap = ctx.proxy_status["capabilities"][ctx.capability]
    served, service_rate = _error_rate(ctx.metrics_text, ctx.capability, cap["service"])
    _, monolith_rate = _error_rate(ctx.metrics_text, ctx.capability, cap["monolith"])
    t = ctx.thresholds
    enough = served >= t.min_canary_requests
    ok = enough and service_rate <= monolith_rate + t.max_error_rate_increase
    if not enough:
        todo = (
            f"send more reads to {_prefix(cap)} through the proxy: the service has answered "
            f"{served:.0f} of the {t.min_canary_requests} needed, and at "
            f"{cap.get('canary_percent', 0):g} % only about that share of users reaches it"
        )
    else:
        todo = (
            "the service answers 5xx more often than the monolith: read its log, fix it, "
            f"or lower the rollout (`strangler rollback {ctx.capability}`)"
        )
    return GateResult(
        "canary no worse than the monolith",
        ok,
        f"service 5xx rate {service_rate:.4f} over {served:.0f} requests "
        f"(min {t.min_canary_requests}), monolith {monolith_rate:.4f} "
        f"(allowed +{t.max_error_rate_increase:g})",
        todo,
    )


def reverse_relay_caught_up(ctx: GateContext) -> GateResult:
    return _relay_lag(ctx.service, "reverse relay caught up", ctx.capability, ctx.thresholds)


def monolith_copy_dropped(ctx: GateContext) -> GateResult:
    """The monolith no longer holds the capability's rows: its tables went in a migration."""
    try:
        bounds = ctx.monolith.bounds()
    except SyncApiError as exc:
        return GateResult("monolith copy dropped", True, f"the monolith serves no rows ({exc})")
    return GateResult(
        "monolith copy dropped",
        False,
        f"the monolith still holds {bounds['count']} rows",
        f"remove the monolith's callers of {ctx.capability} and drop its tables with a "
        "migration first",
    )


GATES: dict[Phase, tuple[Check, ...]] = {
    Phase.DUAL_WRITE: (no_coupling, service_ready, service_sync_api),
    Phase.BACKFILLED: (backfill_finished, forward_relay_caught_up),
    Phase.SHADOW: (reconcile_clean,),
    # The relay too: shadow answers about rows the copy has not caught up on are not
    # compared (stale), so a stopped relay must fail here rather than thin the sample.
    Phase.CANARY: (shadow_clean, forward_relay_caught_up),
    Phase.READS_CUTOVER: (canary_healthy,),
    Phase.WRITES_CUTOVER: (reconcile_clean, forward_relay_caught_up),
    Phase.DECOMMISSIONED: (reverse_relay_caught_up, monolith_copy_dropped),
}


def gates_for(phase: Phase) -> tuple[Check, ...]:
    return GATES.get(phase, ())
