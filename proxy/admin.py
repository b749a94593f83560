"""The proxy's admin API under /_strangler: status, metrics, and changing a capability.

Changes go through the same path as a hand edit of routing.toml (full validation, then the
phase-transition rule), are written to the file atomically and appended to the audit log. Every
endpoint but health and metrics needs `Authorization: Bearer <PROXY_ADMIN_TOKEN>`, compared in
constant time (proxy/admin_auth.py). The migration dashboard (proxy/dashboard/) is served here
too, under /_strangler/dashboard.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from proxy.admin_auth import Admin
from proxy.config import CapabilityConfig, ConfigError, validate_transition
from proxy.dashboard import create_dashboard_router
from strangler.phases import Phase, gated_step, routing_of
from strangler.problems import Problem, install_problem_handlers

if TYPE_CHECKING:
    from proxy.app import ProxyRuntime

__all__ = ["CapabilityChange", "FenceRequest", "create_admin_app"]

log = logging.getLogger("strangler.proxy")


class CapabilityChange(BaseModel):
    """What an operator may change about a capability at run time."""

    model_config = ConfigDict(extra="forbid")

    phase: Phase | None = None
    canary_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    shadow_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    shadow_during_canary: bool | None = None
    reason: Annotated[str, Field(max_length=500)] | None = None
    # A step the runbook gates (a phase forward, a canary raise) says how its gates were
    # met: "passed" (the caller checked them: `strangler advance`, the dashboard) or "forced"
    # (with a reason). The API trusts the admin token's holder on this; its point is that no
    # gate is skipped by accident, and that the audit log tells forced steps apart.
    gates: Literal["passed", "forced"] | None = None
    # The closed write fence a phase change that moves writes must name (see proxy/fence.py).
    fence: Annotated[str, Field(max_length=64)] | None = None

    def changes(self) -> dict[str, Any]:
        values = self.model_dump(exclude_none=True, exclude={"reason", "fence", "gates"})
        if "phase" in values:
            values["phase"] = values["phase"].value
        return values


class FenceRequest(BaseModel):
    """How long held writes may wait, how long the fence lives unattended, and how long to
    wait for the writes already in flight."""

    model_config = ConfigDict(extra="forbid")

    hold_seconds: Annotated[float, Field(gt=0, le=60)] | None = None
    lease_seconds: Annotated[float, Field(gt=0, le=300)] = 30.0
    drain_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0


def _require_gates(
    name: str, body: CapabilityChange, before: CapabilityConfig, after: CapabilityConfig
) -> None:
    """Refuse a gated step whose caller neither checked the gates nor forced it with a reason."""
    step = gated_step(before.phase, after.phase, before.canary_percent, after.canary_percent)
    if step is None:
        return
    if body.gates is None:
        raise Problem(
            409,
            f"{name}: {step} is a step the runbook gates, and this change does not say its "
            f"gates were met. Run `strangler advance {name}` (or the dashboard's Advance), "
            "which checks them; or force it with a reason: `strangler proxy set ... --force "
            '--reason "..."`, or "gates": "forced" with a "reason" in this PATCH (the audit '
            "log records it as forced).",
        )
    if body.gates == "forced" and not (body.reason and body.reason.strip()):
        raise Problem(422, f"Forcing {step} past its gates needs a reason for the audit log.")


def create_admin_app(runtime: ProxyRuntime) -> FastAPI:
    app = FastAPI(title="strangler proxy admin", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    install_problem_handlers(app)
    app.include_router(create_dashboard_router(runtime))
    lock = asyncio.Lock()

    @app.get("/_strangler/health")
    async def health() -> dict[str, object]:
        return {"status": "ok", "config_version": runtime.state.current.version}

    @app.get("/_strangler/metrics")
    async def metrics() -> Response:
        return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/_strangler/status")
    async def status(_who: Admin) -> dict[str, object]:
        return runtime.status()

    @app.get("/_strangler/capabilities/{name}/mismatches")
    async def mismatches(name: str, _who: Admin) -> dict[str, object]:
        runtime.require_capability(name)
        stats = runtime.shadow.stats.get(name)
        return {
            "capability": name,
            **(stats.snapshot() if stats else {}),
            "samples": list(stats.samples) if stats else [],
        }

    @app.get("/_strangler/audit")
    async def audit(_who: Admin, limit: int = 50) -> dict[str, object]:
        return {"entries": runtime.routing_file.audit_tail(max(1, min(limit, 1000)))}

    @app.post("/_strangler/capabilities/{name}/fence")
    async def close_fence(
        name: str, body: FenceRequest, who: Admin, request: Request
    ) -> dict[str, object]:
        """Hold the capability's writes and wait until none is in flight."""
        runtime.require_capability(name)
        if body.lease_seconds <= body.drain_seconds:
            raise Problem(
                422,
                f"lease_seconds ({body.lease_seconds:g}) must exceed drain_seconds "
                f"({body.drain_seconds:g}): the fence would open before it is used.",
            )
        fence = runtime.fences.of(name)
        hold = body.hold_seconds or runtime.state.current.config.proxy.write_hold_seconds
        try:
            fence_id = await fence.close(hold, body.lease_seconds, body.drain_seconds)
        except RuntimeError as exc:
            raise Problem(409, f"The write fence of {name} is {exc}; open it first.") from exc
        except TimeoutError as exc:
            raise Problem(
                409,
                f"{fence.in_flight} write(s) to {name} were still in flight after "
                f"{body.drain_seconds:g} s; the fence was opened again and nothing changed.",
            ) from exc
        if await request.is_disconnected():
            fence.open()  # whoever asked is gone and will never open it
            raise Problem(409, "The caller went away while writes drained; the fence is open.")
        log.info("write fence %s of %s closed by %s", fence_id, name, who)
        return {"capability": name, "fence_id": fence_id, **fence.snapshot()}

    @app.delete("/_strangler/capabilities/{name}/fence/{fence_id}")
    async def open_fence(name: str, fence_id: str, who: Admin) -> dict[str, object]:
        """Release the held writes; report how long writes paused."""
        runtime.require_capability(name)
        fence = runtime.fences.of(name)
        report = fence.open() if fence.holds(fence_id) else None
        if report is None:
            last = fence.last
            if last is None or last.fence_id != fence_id:
                raise Problem(404, f"No write fence {fence_id!r} on {name}.")
            report = last
        log.info(
            "write fence %s of %s opened by %s after %.1f ms (%d held)",
            fence_id,
            name,
            who,
            report.paused_seconds * 1000,
            report.held_requests,
        )
        return {
            "capability": name,
            "fence_id": fence_id,
            "paused_ms": round(report.paused_seconds * 1000, 1),
            "held_requests": report.held_requests,
            "expired": report.expired,
        }

    @app.patch("/_strangler/capabilities/{name}")
    async def change(name: str, body: CapabilityChange, who: Admin) -> dict[str, object]:
        runtime.require_capability(name)
        changes = body.changes()
        if not changes:
            raise Problem(
                422,
                "Nothing to change: give phase, canary_percent, shadow_percent "
                "or shadow_during_canary.",
            )
        async with lock:
            current = runtime.state.current
            before = current.config.capabilities[name]
            try:
                text, config = runtime.routing_file.render_change(name, changes)
                validate_transition(current.config, config)
            except ConfigError as exc:
                raise Problem(422, str(exc)) from exc
            after = config.capabilities[name]
            _require_gates(name, body, before, after)
            old_writes = routing_of(before.phase).writes
            new_writes = routing_of(after.phase).writes
            if old_writes is not new_writes and not (
                body.fence and runtime.fences.of(name).holds(body.fence)
            ):
                stale = " The fence named is not closed (its lease ran out?)."
                raise Problem(
                    409,
                    f"Moving {name}'s writes from {old_writes.value} to {new_writes.value} needs "
                    "the write fence: close it (POST .../fence), wait until the relay drained, "
                    "then change the phase naming the fence. `strangler advance` and "
                    "`strangler rollback` do all of this." + (stale if body.fence else ""),
                )
            runtime.routing_file.write(text)
            gated = gated_step(
                before.phase, after.phase, before.canary_percent, after.canary_percent
            )
            runtime.apply(
                config,
                who=who,
                reason=body.reason,
                audit_what="admin_change",
                gates=body.gates if gated else None,
            )
        after = runtime.state.current.config.capabilities[name]
        return {
            "capability": name,
            "old": before.model_dump(mode="json", include=set(changes)),
            "new": after.model_dump(mode="json", include=set(changes)),
            "config_version": runtime.state.current.version,
        }

    return app
