"""The migration dashboard's routes, on the proxy's admin app under /_strangler/dashboard.

The page itself carries no data and needs no token: it asks for the admin token, keeps it in
the tab's sessionStorage and sends it as a bearer token with every call, so everything it
shows comes from token-protected answers and nothing leaks to whoever merely reaches the port.
The token never travels in a URL or a cookie (no CSRF; `strangler up` may print it after a
`#`, which browsers never send).

Advance and rollback are the CLI's own steps (strangler.migration_steps), run in a worker
thread: the gates read the sides' sync APIs and a reconcile may take seconds, and a change
that moves writes goes through this same proxy's admin API over loopback HTTP, behind the
write fence, exactly as `strangler advance` does it. The audit log names the dashboard and
the operator who asked (`dashboard:<actor>@<peer>`). Whatever goes wrong in the toolkit comes
back as problem+json saying what and what to do, never as a bare 500.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from string import Template
from typing import TYPE_CHECKING, Annotated, TypeVar

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from proxy.admin_auth import Admin
from proxy.dashboard.render import render_live
from proxy.dashboard.state import DashboardState
from strangler.admin_client import AdminClient
from strangler.gates import GateResult
from strangler.migration_steps import (
    GatesUnchecked,
    StepOutcome,
    StepPlan,
    StepRefused,
    advance_changes,
    apply_step,
    check_gates,
    gate_context,
    plan_advance,
    plan_rollback,
    rollback_changes,
)
from strangler.phases import Phase
from strangler.problems import Problem
from strangler.runbook import STEPS
from strangler.settings import CliSettings

if TYPE_CHECKING:
    from proxy.app import ProxyRuntime

__all__ = ["StepRequest", "create_dashboard_router"]

log = logging.getLogger("strangler.proxy")

PREFIX = "/_strangler/dashboard"
POLL_MILLISECONDS = 1500
DRAIN_SECONDS = 20.0
"""How long the relay may take to drain while writes are held (the CLI's default)."""

_ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_PAGE_HEADERS = {
    # Scripts and styles only from these files: a value that slipped through unescaped still
    # could not run. No framing (a rollback button must not be clickjacked).
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_NO_STORE = {"Cache-Control": "no-store"}

T = TypeVar("T")


class StepRequest(BaseModel):
    """An advance or rollback asked from the page.

    `from_phase` is the phase the page showed when the operator confirmed: if someone else
    moved the capability meanwhile, the step is refused rather than taken from a phase the
    operator never saw.
    """

    model_config = ConfigDict(extra="forbid")

    from_phase: Phase | None = None
    reason: Annotated[str, Field(max_length=300)] | None = None
    percent: Annotated[float, Field(ge=0, le=100)] | None = None


def _asset(name: str) -> str:
    return (resources.files("proxy.dashboard") / "page" / name).read_text(encoding="utf-8")


def _gate_view(results: list[GateResult]) -> list[dict[str, object]]:
    return [{"name": r.name, "passed": r.passed, "evidence": r.evidence} for r in results]


def _own_origin(request: Request) -> str:
    """Where this proxy listens, as the connection that brought the request reached it: the
    step's admin API calls go back the same way (loopback for a local browser)."""
    server = request.scope.get("server")
    if not server or server[1] is None:
        raise Problem(503, "This server does not know its own address; use the CLI instead.")
    host, port = str(server[0]), int(server[1])
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _bearer(request: Request) -> str:
    """The caller's admin token (already checked by `Admin`), which the step's calls carry."""
    return request.headers["authorization"].partition(" ")[2]


def _actor(who: str) -> str:
    """The name the step's admin calls carry (X-Strangler-Actor), so the audit log says who
    stepped from the dashboard: `dashboard:<actor>@<peer>` as the operator's own call was
    seen. Kept to printable ASCII (a header value) and to the 100 characters the admin API
    keeps, cutting the operator's chosen name rather than their address."""
    clean = "".join(c for c in who if " " <= c <= "~")
    name, at, peer = clean.rpartition("@")
    room = 100 - len("dashboard:") - len(at) - len(peer)
    return f"dashboard:{name[: max(room, 0)]}{at}{peer}"[:100]


async def _toolkit(call: Callable[[], T], doing: str) -> T:
    """Run a step of the toolkit in a worker thread; whatever it raises becomes problem+json
    that says what was wrong and what to do (`doing` names the work, e.g. "checking the
    gates")."""
    try:
        return await anyio.to_thread.run_sync(call)
    except GatesUnchecked as exc:
        raise Problem(503, str(exc), title="The gates could not be checked", hint=exc.hint) from exc
    except StepRefused as exc:
        raise Problem(409, str(exc), hint=exc.hint) from exc
    except Exception as exc:
        log.exception("dashboard: %s failed", doing)
        raise Problem(
            500,
            f"{doing.capitalize()} failed: {type(exc).__name__}: {exc}",
            title="The migration toolkit failed",
            hint="the proxy's log has the details; look at the capability's phase on this "
            "page (or `strangler status`) before trying again, or take the step with "
            "`strangler advance`/`rollback`, which says more",
        ) from exc


def create_dashboard_router(runtime: ProxyRuntime) -> APIRouter:
    """The dashboard's page, its assets, its state (JSON and rendered) and its two actions."""
    router = APIRouter(prefix=PREFIX)
    state = DashboardState(runtime)
    page = Template(_asset("page.html")).substitute(prefix=PREFIX, poll=POLL_MILLISECONDS)
    assets = {name: _asset(name) for name in _ASSETS}
    stepping: set[str] = set()

    def settings_for(name: str, admin_token: str, proxy_url: str) -> CliSettings:
        """The CLI's settings as this proxy knows them: the capability's upstreams as the
        two sides, its own sync token and state directory, itself as the proxy."""
        route = runtime.state.current.capabilities[name]
        return CliSettings(
            proxy_url=proxy_url,
            admin_token=SecretStr(admin_token),
            monolith_url=route.monolith.config.origin,
            service_url=route.service.config.origin,
            sync_token=SecretStr(runtime.sync_token) if runtime.sync_token else None,
            state_dir=runtime.settings.state_dir,
        )

    def current_phase(name: str, expected: Phase | None) -> Phase:
        runtime.require_capability(name)
        current = runtime.state.current.capabilities[name].policy.phase
        if expected is not None and expected is not current:
            raise Problem(
                409,
                f"{name} is in {current.value} now, not {expected.value} as the page showed; "
                "nothing changed. Look again and retry.",
            )
        return current

    def plan(make: Callable[[], StepPlan]) -> StepPlan:
        try:
            return make()
        except StepRefused as exc:
            raise Problem(409, str(exc), hint=exc.hint) from exc

    async def gates(name: str, step: StepPlan, settings: CliSettings) -> list[GateResult]:
        if runtime.sync_token is None:
            raise Problem(
                503,
                "The proxy was started without PROXY_SYNC_TOKEN, so the gates, which read the "
                "sides' sync APIs, cannot be checked from here; use `strangler advance`.",
            )
        status = runtime.status()
        metrics = runtime.metrics.render().decode()
        source_root = runtime.settings.source_root
        boundaries = runtime.settings.boundaries_path()

        def run() -> list[GateResult]:
            context = gate_context(
                settings, name, status, metrics, source_root=source_root, boundaries_file=boundaries
            )
            return check_gates(step, context)

        return await _toolkit(run, "checking the gates")

    async def apply(
        step: StepPlan, changes: dict[str, object], settings: CliSettings, who: str
    ) -> dict[str, object]:
        def run() -> StepOutcome:
            admin = AdminClient(settings, actor=_actor(who))
            try:
                return apply_step(admin, settings, step, changes, drain_seconds=DRAIN_SECONDS)
            finally:
                admin.close()

        outcome = await _toolkit(run, f"taking the step {step.title}")
        switch = outcome.switch
        return {
            "capability": step.capability,
            "from": step.current.value,
            "to": step.target.value,
            "config_version": outcome.changed.get("config_version"),
            "write_switch": None
            if switch is None
            else {
                "paused_ms": switch.paused_ms,
                "held_requests": switch.held_requests,
                "drained_events": switch.drained_events,
            },
        }

    @asynccontextmanager
    async def one_step(name: str) -> AsyncIterator[None]:
        """One step or gate check per capability at a time: a second click while a
        reconcile runs is refused, not queued behind it (a gate check may run a reconcile and
        write its record, so a preview takes the same turn as a step)."""
        if name in stepping:
            raise Problem(
                409,
                f"A step or gate check of {name} is already running; wait for it and retry.",
                title="A step or gate check is already running",
            )
        stepping.add(name)
        try:
            yield
        finally:
            stepping.discard(name)

    @router.get("", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard_page() -> HTMLResponse:
        return HTMLResponse(page, headers=_PAGE_HEADERS)

    @router.get("/assets/{name}", include_in_schema=False)
    async def dashboard_asset(name: str) -> Response:
        if name not in assets:
            raise Problem(404, f"No dashboard asset {name!r}.")
        return Response(assets[name], media_type=_ASSETS[name], headers=_NO_STORE)

    @router.get("/state")
    async def dashboard_state(_who: Admin) -> Response:
        """Everything the page shows, as JSON (at most a second old)."""
        return JSONResponse(await state.snapshot(), headers=_NO_STORE)

    @router.get("/live", response_class=HTMLResponse)
    async def dashboard_live(_who: Admin) -> HTMLResponse:
        """The same state rendered as the page's live part, which the page swaps in."""
        return HTMLResponse(render_live(await state.snapshot()), headers=_NO_STORE)

    @router.get("/capabilities/{name}/gates")
    async def dashboard_gates(
        name: str, request: Request, _who: Admin, percent: float | None = None
    ) -> dict[str, object]:
        """The next step's gates, each with its evidence, without taking the step."""
        async with one_step(name):
            current = current_phase(name, None)
            step = plan(lambda: plan_advance(name, current, percent))
            # The gates read the sides and this proxy's state in process; they never call the
            # proxy back, so its own address is not needed here.
            settings = settings_for(name, _bearer(request), proxy_url="")
            results = await gates(name, step, settings)
        return {
            "capability": name,
            "title": step.title,
            "from": current.value,
            "to": step.target.value,
            "passed": all(r.passed for r in results),
            "gates": _gate_view(results),
        }

    @router.post("/capabilities/{name}/advance")
    async def dashboard_advance(
        name: str, body: StepRequest, request: Request, who: Admin
    ) -> dict[str, object]:
        """Check the next phase's gates and take the step only if all pass (no forcing from
        here: that stays a deliberate `strangler advance --force --reason`)."""
        async with one_step(name):
            current = current_phase(name, body.from_phase)
            step = plan(lambda: plan_advance(name, current, body.percent))
            settings = settings_for(name, _bearer(request), _own_origin(request))
            results = await gates(name, step, settings)
            failed = [r.name for r in results if not r.passed]
            if failed:
                raise Problem(
                    409,
                    f"Refused: {', '.join(failed)} failed; nothing changed.",
                    title="A gate failed",
                    gates=_gate_view(results),
                )
            reason = f"dashboard: {body.reason or 'gates passed'}"
            done = await apply(step, advance_changes(step, results, reason), settings, who)
        log.info("dashboard: %s advanced by %s", step.title, who)
        return {**done, "gates": _gate_view(results)}

    @router.post("/capabilities/{name}/rollback")
    async def dashboard_rollback(
        name: str, body: StepRequest, request: Request, who: Admin
    ) -> dict[str, object]:
        """Go back one phase; no gates (the way back is always open), but behind the write
        fence when writes move back."""
        async with one_step(name):
            current = current_phase(name, body.from_phase)
            step = plan(lambda: plan_rollback(name, current))
            settings = settings_for(name, _bearer(request), _own_origin(request))
            reason = f"dashboard: {body.reason or 'rollback'}"
            done = await apply(step, rollback_changes(step, reason), settings, who)
        log.info("dashboard: %s rolled back by %s", step.title, who)
        return {**done, "rollback": STEPS[step.current].rollback}

    return router
