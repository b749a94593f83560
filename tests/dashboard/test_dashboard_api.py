"""The dashboard's HTTP side, in process: who may see what, and what the state says.

The proxy is built by its own composition root (`create_app`) over a routing file whose
upstreams do not answer, and called through httpx's ASGI transport: no ports, no processes.
Taking steps needs the proxy's own admin API over loopback, so that is tested against a real
system (test_dashboard_steps.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from proxy.app import ProxyRuntime, create_app
from proxy.configfile import AuditEntry
from proxy.settings import ProxySettings
from strangler.gates import GateResult
from strangler.migration_steps import StepPlan
from tests.support.processes import free_port
from tests.support.waiting import eventually_async

TOKEN = "in-process-admin-token"
DASHBOARD = "/_strangler/dashboard"
PROTECTED = [
    ("GET", f"{DASHBOARD}/state"),
    ("GET", f"{DASHBOARD}/live"),
    ("GET", f"{DASHBOARD}/capabilities/products/gates"),
    ("POST", f"{DASHBOARD}/capabilities/products/advance"),
    ("POST", f"{DASHBOARD}/capabilities/products/rollback"),
]


def _proxy(
    tmp_path: Path, *, sync_token: str | None = "sync-token", **settings: Any
) -> ProxyRuntime:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: relay lag must say so, not hang
    routing = tmp_path / "routing.toml"
    root = Path(__file__).resolve().parents[2]
    routing.write_text(
        (root / "routing.toml")
        .read_text()
        .replace("127.0.0.1:8001", dead)
        .replace("127.0.0.1:8002", dead)
    )
    return create_app(
        ProxySettings(
            routing_file=routing,
            audit_log=tmp_path / "audit.jsonl",
            admin_token=SecretStr(TOKEN),
            sync_token=SecretStr(sync_token) if sync_token else None,
            state_dir=tmp_path / "state",
            **settings,
        )
    )


Session = Callable[[httpx.AsyncClient], Awaitable[None]]


def _talk(runtime: ProxyRuntime, session: Session) -> None:
    async def run() -> None:
        transport = httpx.ASGITransport(app=runtime, client=("203.0.113.9", 4711))
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
            await session(client)

    asyncio.run(run())


def _is_set(event: threading.Event) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        assert event.is_set()

    return check


def _admin(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_page_needs_no_token_and_carries_no_data(tmp_path: Path) -> None:
    async def session(client: httpx.AsyncClient) -> None:
        page = await client.get(DASHBOARD)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "products" not in page.text and "monolith" not in page.text
        for asset, kind in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
            served = await client.get(f"{DASHBOARD}/assets/{asset}")
            assert served.status_code == 200 and served.headers["content-type"].startswith(kind)
        missing = await client.get(f"{DASHBOARD}/assets/..%2Fadmin.py")
        assert missing.status_code == 404

    _talk(_proxy(tmp_path), session)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer forged-token", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", "Bearer "],
    ids=["missing", "forged", "wrong-scheme", "no-scheme", "longer", "empty"],
)
def test_every_data_and_action_endpoint_refuses_a_missing_or_forged_token(
    tmp_path: Path, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}

    async def session(client: httpx.AsyncClient) -> None:
        for method, path in PROTECTED:
            body: dict[str, object] | None = {} if method == "POST" else None
            answer = await client.request(method, path, headers=headers, json=body)
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["www-authenticate"] == "Bearer"
            problem = answer.json()
            assert problem["status"] == 401 and "admin token" in problem["detail"]
            assert set(problem) == {"type", "title", "status", "detail", "instance"}
            assert "monolith" not in answer.text  # nothing about the migration leaks

    runtime = _proxy(tmp_path)
    _talk(runtime, session)
    assert runtime.routing_file.audit_tail(10) == []  # and nothing changed


def test_the_state_shows_phase_ladder_sides_records_and_audit(tmp_path: Path) -> None:
    runtime = _proxy(tmp_path)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (state_dir / "reconcile-products.json").write_text(
        json.dumps({"at": at, "agree": True, "differences": 0})
    )
    (state_dir / "backfill-products.json").write_text(
        json.dumps({"source": "m", "target": "s", "rows": 40, "rejected": 0, "finished": True})
    )
    seen: dict[str, Any] = {}

    async def session(client: httpx.AsyncClient) -> None:
        for phase in ("dual_write", "backfilled"):
            changed = await client.patch(
                "/_strangler/capabilities/products",
                headers={**_admin(), "X-Strangler-Actor": "tester"},
                json={"phase": phase, "reason": f"to {phase}", "gates": "forced"},
            )
            assert changed.status_code == 200, changed.text
        first = await client.get(f"{DASHBOARD}/state", headers=_admin())
        assert first.status_code == 200, first.text
        assert first.headers["cache-control"] == "no-store"
        seen["first"] = first.json()
        for _ in range(30):
            runtime.metrics.observe("products", "monolith", 200, 0.001)
        runtime.metrics.observe("products", "products_service", 502, 0.001)

        async def traffic_seen() -> dict[str, Any]:
            state: dict[str, Any] = (
                await client.get(f"{DASHBOARD}/state", headers=_admin())
            ).json()
            sides = state["capabilities"]["products"]["requests"]["sides"]
            assert sides["monolith"]["per_second"] > 0, sides
            assert sides["service"]["errors_per_second"] > 0, sides
            return state

        # the sampler reads the counters every couple of seconds, on its own timer
        seen["second"] = await eventually_async(
            traffic_seen, "the traffic in requests per second", timeout=15
        )

    _talk(runtime, session)
    products = seen["first"]["capabilities"]["products"]
    assert products["phase"] == "backfilled"
    ladder = {step["phase"]: step["state"] for step in products["ladder"]}
    assert ladder["monolith"] == ladder["dual_write"] == "done"
    assert ladder["backfilled"] == "current" and ladder["shadow"] == "todo"
    assert (products["next_phase"], products["previous_phase"]) == ("shadow", "dual_write")
    # The first look already has figures (since the proxy started), never a placeholder.
    first_requests = products["requests"]
    assert "measuring" not in first_requests and first_requests["window_seconds"] > 0
    assert first_requests["sides"]["monolith"]["per_second"] == 0.0
    assert [p["requests"] for p in products["trend"]["points"]] == [
        {"monolith": 0.0, "service": 0.0}
    ]
    assert products["trend"]["window_seconds"] == 300
    assert products["relay"]["monolith_to_service"]["active"] is True
    assert products["relay"]["service_to_monolith"]["active"] is False
    assert products["relay"]["monolith_to_service"]["error"] == "unreachable"
    assert products["reconcile"] == {"at": at, "agree": True, "differences": 0}
    assert products["backfill"] == {"rows": 40, "rejected": 0, "finished": True}
    assert products["breakers"]["service"] == {
        "upstream": "products_service",
        "state": "closed",
        "consecutive_failures": 0,
        "times_opened": 0,
    }
    audit = seen["first"]["audit"]
    assert [e["new"]["phase"] for e in audit] == ["backfilled", "dual_write"]  # newest first
    assert audit[0]["who"] == "tester@203.0.113.9"

    second = seen["second"]["capabilities"]["products"]
    sides = second["requests"]["sides"]
    assert sides["monolith"]["per_second"] > 0 and sides["monolith"]["errors_per_second"] == 0
    assert sides["service"]["errors_per_second"] > 0
    assert sides["service"]["upstream"] == "products_service"
    points = second["trend"]["points"]
    assert any(p["requests"]["monolith"] > 0 for p in points)  # and the chart has it
    assert all(p["mismatch_rate"] is None for p in points)  # nothing compared: no figure
    assert all(
        p["relay"] == {"monolith_to_service": None, "service_to_monolith": None} for p in points
    )
    assert [p["age_seconds"] for p in points] == sorted(
        (p["age_seconds"] for p in points), reverse=True
    )  # oldest first


def test_the_live_part_is_the_same_state_rendered(tmp_path: Path) -> None:
    async def session(client: httpx.AsyncClient) -> None:
        live = await client.get(f"{DASHBOARD}/live", headers=_admin())
        assert live.status_code == 200 and live.headers["content-type"].startswith("text/html")
        assert 'data-capability="products"' in live.text
        assert '<span class="phase-badge" data-testid="phase">monolith</span>' in live.text
        assert 'data-action="rollback"' in live.text and "Nothing to roll back" in live.text
        assert "measuring" not in live.text and "no reading yet" not in live.text
        for chart in ("requests", "mismatch-rate", "relay-lag"):
            assert f'<figure class="chart" data-chart="{chart}">' in live.text
        assert 'role="img" aria-label="requests / s over the last 5 min' in live.text

    _talk(_proxy(tmp_path), session)


def test_steps_refuse_what_cannot_be_done_with_a_problem(tmp_path: Path) -> None:
    async def session(client: httpx.AsyncClient) -> None:
        first = await client.post(
            f"{DASHBOARD}/capabilities/products/rollback", headers=_admin(), json={}
        )
        assert first.status_code == 409
        assert first.headers["content-type"] == "application/problem+json"
        assert first.json()["detail"] == "products is in monolith"
        assert first.json()["hint"] == "there is no phase before it"
        moved = await client.post(
            f"{DASHBOARD}/capabilities/products/advance",
            headers=_admin(),
            json={"from_phase": "shadow"},
        )
        assert moved.status_code == 409
        assert "in monolith now, not shadow as the page showed" in moved.json()["detail"]
        unknown = await client.post(
            f"{DASHBOARD}/capabilities/nothing/rollback", headers=_admin(), json={}
        )
        assert unknown.status_code == 404
        bad = await client.post(
            f"{DASHBOARD}/capabilities/products/advance",
            headers=_admin(),
            json={"percent": 120, "force": True},
        )
        assert bad.status_code == 422
        fields = {e["field"] for e in bad.json()["errors"]}
        assert fields == {"percent", "force"}  # and forcing is not a thing the page can ask

    runtime = _proxy(tmp_path)
    _talk(runtime, session)
    assert runtime.routing_file.audit_tail(10) == []


def test_gates_cannot_be_checked_by_a_proxy_without_the_sync_token(tmp_path: Path) -> None:
    async def session(client: httpx.AsyncClient) -> None:
        gates = await client.get(f"{DASHBOARD}/capabilities/products/gates", headers=_admin())
        assert gates.status_code == 503
        assert "PROXY_SYNC_TOKEN" in gates.json()["detail"]
        state = (await client.get(f"{DASHBOARD}/state", headers=_admin())).json()
        assert state["relay_known"] is False
        lag = state["capabilities"]["products"]["relay"]["monolith_to_service"]
        assert lag["error"] == "not asked"

    _talk(_proxy(tmp_path, sync_token=None), session)


@pytest.mark.parametrize("where", ["source_root", "boundaries_file"])
def test_gates_that_cannot_run_are_a_problem_naming_what_to_fix(tmp_path: Path, where: str) -> None:
    """The coupling gate reads boundaries.toml from PROXY_SOURCE_ROOT (or the file
    PROXY_BOUNDARIES_FILE names); a proxy started elsewhere answers a problem naming the
    missing file and the settings that fix it, not a bare 500."""
    elsewhere = tmp_path / "not-the-repository"
    missing = elsewhere / "boundaries.toml"
    placed: dict[str, Any] = {where: missing if where == "boundaries_file" else elsewhere}
    runtime = _proxy(tmp_path, **placed)

    async def session(client: httpx.AsyncClient) -> None:
        for method, path, body in (
            ("GET", "gates", None),
            ("POST", "advance", {"from_phase": "monolith"}),
        ):
            answer = await client.request(
                method,
                # a port, so that the advance knows its own address (the ASGI scope's server)
                f"http://proxy:8000{DASHBOARD}/capabilities/products/{path}",
                headers=_admin(),
                json=body,
            )
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            problem = answer.json()
            assert problem["title"] == "The gates could not be checked"
            assert str(missing) in problem["detail"] and "no coupling" in problem["detail"]
            assert "PROXY_SOURCE_ROOT" in problem["hint"]

    _talk(runtime, session)
    assert runtime.routing_file.audit_tail(10) == []  # nothing changed


def test_an_unexpected_toolkit_error_is_a_problem_that_says_what_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(step: StepPlan, context: object) -> list[GateResult]:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr("proxy.dashboard.routes.check_gates", broken)

    async def session(client: httpx.AsyncClient) -> None:
        answer = await client.get(f"{DASHBOARD}/capabilities/products/gates", headers=_admin())
        assert answer.status_code == 500
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["detail"] == ("Checking the gates failed: RuntimeError: the disk is on fire")
        assert "strangler status" in problem["hint"]

    _talk(_proxy(tmp_path), session)


def test_a_gate_check_takes_the_capabilitys_turn_like_a_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A preview may run a reconcile (which writes its record): while one runs, a second
    preview and a step of the same capability are refused, not run beside it."""
    entered, release = threading.Event(), threading.Event()

    def slow(step: StepPlan, context: object) -> list[GateResult]:
        entered.set()
        assert release.wait(10)
        return [GateResult("slow gate", True, "waited")]

    monkeypatch.setattr("proxy.dashboard.routes.check_gates", slow)
    url = f"{DASHBOARD}/capabilities/products"

    async def session(client: httpx.AsyncClient) -> None:
        first = asyncio.create_task(client.get(f"{url}/gates", headers=_admin()))
        await eventually_async(_is_set(entered), "the first gate check to start", timeout=10)
        try:
            for second in (
                await client.get(f"{url}/gates", headers=_admin()),
                await client.post(f"{url}/advance", headers=_admin(), json={}),
                await client.post(f"{url}/rollback", headers=_admin(), json={}),
            ):
                assert second.status_code == 409, second.text
                assert second.json()["title"] == "A step or gate check is already running"
        finally:
            release.set()
        done = await first
        assert done.status_code == 200 and done.json()["gates"][0]["evidence"] == "waited"
        again = await client.get(f"{url}/gates", headers=_admin())  # the turn was given back
        assert again.status_code == 200

    _talk(_proxy(tmp_path), session)


def test_a_half_written_audit_line_does_not_break_the_state_or_the_page(tmp_path: Path) -> None:
    runtime = _proxy(tmp_path)
    for phase in ("dual_write", "backfilled"):
        runtime.routing_file.audit(
            AuditEntry("tester@here", "admin_change", "products", {}, {"phase": phase})
        )
    with runtime.routing_file.audit_log.open("a") as log:
        log.write('{"at": "2026-01-01T00:00:00Z", "who": "half')  # an append in progress

    async def session(client: httpx.AsyncClient) -> None:
        state = await client.get(f"{DASHBOARD}/state", headers=_admin())
        assert state.status_code == 200, state.text
        assert [e["new"]["phase"] for e in state.json()["audit"]] == ["backfilled", "dual_write"]
        live = await client.get(f"{DASHBOARD}/live", headers=_admin())
        assert live.status_code == 200 and "tester@here" in live.text
        audit = await client.get("/_strangler/audit", headers=_admin())
        assert audit.status_code == 200 and len(audit.json()["entries"]) == 2

    _talk(runtime, session)
