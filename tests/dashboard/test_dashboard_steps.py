"""Taking steps from the dashboard against a real system: the CLI's gates and the CLI's write
switch, reached through the page's two endpoints, with the audit log naming the dashboard
and the operator who used it."""

from __future__ import annotations

from typing import Any

import httpx

from strangler.phases import Phase
from tests.dashboard.conftest import ADMIN_TOKEN, CAPABILITY, System


def _step(system: System, action: str, actor: str | None = None, **body: Any) -> httpx.Response:
    named = {"X-Strangler-Actor": actor} if actor else {}
    return httpx.post(
        f"{system.dashboard_url}/capabilities/{CAPABILITY}/{action}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", **named},
        json=body,
        timeout=60,
    )


def test_advance_checks_the_gates_with_evidence_and_refuses_when_one_fails(
    system: System,
) -> None:
    system.set_phase(Phase.MONOLITH)
    preview = httpx.get(
        f"{system.dashboard_url}/capabilities/{CAPABILITY}/gates",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=60,
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["to"] == "dual_write" and preview.json()["passed"] is True
    assert system.phase() is Phase.MONOLITH  # a preview changes nothing

    advanced = _step(system, "advance", actor="alice", from_phase="monolith")
    assert advanced.status_code == 200, advanced.text
    done = advanced.json()
    assert (done["from"], done["to"], done["write_switch"]) == ("monolith", "dual_write", None)
    evidence = {gate["name"]: gate["evidence"] for gate in done["gates"]}
    assert set(evidence) == {"no data coupling", "service ready", "service sync API"}
    assert "/ready answered 200" in evidence["service ready"]
    assert system.phase() is Phase.DUAL_WRITE
    entry = system.audit()[-1]
    assert entry["reason"] == "dashboard: gates passed"
    # who asked the dashboard (as its admin check saw them), then how the dashboard's own
    # call reached the admin API (loopback)
    assert entry["who"] == "dashboard:alice@127.0.0.1@127.0.0.1"

    refused = _step(system, "advance", from_phase="dual_write", reason="try it")
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["detail"] == "Refused: backfill finished failed; nothing changed."
    failing = [gate for gate in problem["gates"] if not gate["passed"]]
    assert [gate["name"] for gate in failing] == ["backfill finished"]
    assert "no backfill has run" in failing[0]["evidence"]
    assert system.phase() is Phase.DUAL_WRITE


def test_a_rollback_that_moves_writes_goes_behind_the_write_fence(system: System) -> None:
    system.set_phase(Phase.WRITES_CUTOVER)
    stale = _step(system, "rollback", from_phase="reads_cutover")
    assert stale.status_code == 409 and "not reads_cutover" in stale.json()["detail"]

    rolled = _step(system, "rollback", from_phase="writes_cutover", reason="writes back")
    assert rolled.status_code == 200, rolled.text
    done = rolled.json()
    assert (done["from"], done["to"]) == ("writes_cutover", "reads_cutover")
    switch = done["write_switch"]
    assert switch is not None
    # Nothing wrote while the fence was closed, and the relay had nothing left to deliver.
    assert (switch["held_requests"], switch["drained_events"]) == (0, 0)
    assert switch["paused_ms"] > 0  # the writes were paused: the fence was closed
    assert "Behind the same fence" in done["rollback"]  # the runbook's words for this step
    assert system.phase() is Phase.READS_CUTOVER
    entry = system.audit()[-1]
    assert entry["new"] == {"phase": "reads_cutover"}
    assert entry["reason"] == "dashboard: writes back"
    assert entry["who"].startswith("dashboard:admin-api@127.0.0.1@")
    fence = system.admin("GET", "/status").json()["capabilities"][CAPABILITY]["fence"]
    # The pause reported is the proxy's record of this fence, which the switch opened (its
    # lease did not run out) with nothing held.
    assert fence["closed"] is False
    assert fence["last_pause_ms"] == switch["paused_ms"]
    assert (fence["last_held_requests"], fence["last_expired"]) == (0, False)
    system.set_phase(Phase.MONOLITH)
