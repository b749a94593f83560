"""The proxy's admin API under /_strangler: status, metrics, and changing a capability.

Changes go through the same path as a hand edit of routing.toml (full validation, then the
phase-transition rule), are written to the file atomically and appended to the audit log. Every
endpoint but health and metrics needs `Authorization: Bearer <PROXY_ADMIN_TOKEN>`, compared in
constant time.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from proxy.config import ConfigError, validate_transition
from strangler.phases import Phase
from strangler.problems import Problem, install_problem_handlers

if TYPE_CHECKING:
    from proxy.app import ProxyRuntime

__all__ = ["CapabilityChange", "create_admin_app"]


class CapabilityChange(BaseModel):
    """What an operator may change about a capability at run time."""

    model_config = ConfigDict(extra="forbid")

    phase: Phase | None = None
    canary_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    shadow_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    shadow_during_canary: bool | None = None
    reason: Annotated[str, Field(max_length=500)] | None = None

    def changes(self) -> dict[str, Any]:
        values = self.model_dump(exclude_none=True, exclude={"reason"})
        if "phase" in values:
            values["phase"] = values["phase"].value
        return values


def _runtime(request: Request) -> ProxyRuntime:
    runtime: ProxyRuntime = request.app.state.runtime
    return runtime


def _require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    runtime = _runtime(request)
    expected = runtime.admin_token
    if expected is None:
        raise Problem(401, "The admin API is disabled: start the proxy with PROXY_ADMIN_TOKEN set.")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Problem(
            401,
            "The admin API needs 'Authorization: Bearer <admin token>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    peer = request.client.host if request.client else "unknown"
    actor = request.headers.get("x-strangler-actor", "").strip()[:100]
    return f"{actor or 'admin-api'}@{peer}"


Admin = Annotated[str, Depends(_require_admin)]


def create_admin_app(runtime: ProxyRuntime) -> FastAPI:
    app = FastAPI(title="strangler proxy admin", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    install_problem_handlers(app)
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
            runtime.routing_file.write(text)
            runtime.apply(config, who=who, reason=body.reason, audit_what="admin_change")
        after = runtime.state.current.config.capabilities[name]
        return {
            "capability": name,
            "old": before.model_dump(mode="json", include=set(changes)),
            "new": after.model_dump(mode="json", include=set(changes)),
            "config_version": runtime.state.current.version,
        }

    return app
