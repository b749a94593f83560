"""Changing routing.toml by hand and through the admin API: atomic, validated, audited."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomlkit

from tests.proxy.conftest import ADMIN_TOKEN, Proxy, ProxyFactory, routing_document, run_proxy
from tests.support.metrics import metric_value
from tests.support.problems import assert_problem
from tests.support.processes import RunningApp
from tests.support.waiting import eventually, wait_until


def _wait_for_error(proxy: Proxy, fragment: str) -> str:
    def the_error() -> str:
        error = proxy.status()["last_reload_error"]
        assert error and fragment in error, f"last_reload_error: {error!r}"
        return str(error)

    return eventually(the_error, f"a reload error mentioning {fragment!r}", timeout=5)


@pytest.fixture
def document(echo_monolith: RunningApp, echo_service: RunningApp) -> dict[str, Any]:
    return routing_document(echo_monolith.base_url, echo_service.base_url)


def test_hand_edits_apply_under_steady_traffic_without_a_failed_request(
    proxy_factory: ProxyFactory, document: dict[str, Any]
) -> None:
    proxy = proxy_factory(document)
    stop = threading.Event()
    results: list[int | str] = []

    def traffic() -> None:
        with httpx.Client(base_url=proxy.base_url, timeout=10) as client:
            while not stop.is_set():
                for path in ("/products/1", "/orders"):
                    try:
                        results.append(client.get(path).status_code)
                    except httpx.HTTPError as exc:
                        results.append(repr(exc))

    workers = [threading.Thread(target=traffic) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        version = proxy.status()["config_version"]
        edits = [
            "dual_write",
            "backfilled",
            "shadow",
            "canary",
            "reads_cutover",
            "writes_cutover",
            "reads_cutover",
            "canary",
            "shadow",
            "monolith",
        ]
        for phase in edits:
            edited = copy.deepcopy(document)
            edited["capabilities"]["products"].update(phase=phase, canary_percent=50)
            proxy.write_routing(edited)
            version += 1
            proxy.wait_for_version(version)
            wait_until(_grown(results, by=6), f"requests served in {phase}")
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert len(results) > 100
    assert set(results) == {200}, [r for r in results if r != 200][:5]
    audit = [json.loads(line) for line in proxy.audit_log.read_text().splitlines()]
    assert [entry["new"]["phase"] for entry in audit if "phase" in entry["new"]] == edits
    assert {entry["who"] for entry in audit} == {"routing.toml"}


def _grown(results: list[int | str], *, by: int) -> Callable[[], bool]:
    """True once `by` more results than now have come in."""
    wanted = len(results) + by
    return lambda: len(results) >= wanted


BAD_EDITS = {
    "not TOML": ("[capabilities.products\nphase=", "not valid TOML"),
    "unknown upstream": ({"service": "nowhere"}, "capabilities.products.service: unknown upstream"),
    "percentage over 100": ({"canary_percent": 150}, "capabilities.products.canary_percent"),
    "unknown phase": ({"phase": "halfway"}, "capabilities.products.phase"),
    "skipped phase": ({"phase": "canary"}, "skips dual_write, backfilled, shadow"),
    "prefix that is not a path": ({"prefixes": ["products"]}, "capabilities.products.prefixes"),
}


@pytest.mark.parametrize("edit", BAD_EDITS.values(), ids=list(BAD_EDITS))
def test_a_bad_hand_edit_is_refused_naming_the_field_and_the_old_config_keeps_serving(
    proxy_factory: ProxyFactory, document: dict[str, Any], edit: tuple[Any, str]
) -> None:
    proxy = proxy_factory(document)
    version = proxy.status()["config_version"]
    change, message = edit
    if isinstance(change, str):
        proxy.routing_file.write_text(change)
    else:
        broken = copy.deepcopy(document)
        broken["capabilities"]["products"].update(change)
        proxy.write_routing(broken)
    _wait_for_error(proxy, message)
    status = proxy.status()
    assert status["config_version"] == version
    assert status["capabilities"]["products"]["phase"] == "monolith"
    assert proxy.client.get("/products/1").headers["x-strangler-upstream"] == "monolith"
    metrics = proxy.client.get("/_strangler/metrics").text
    assert metric_value(metrics, "strangler_proxy_config_reload_failures_total") == 1
    proxy.write_routing(document)
    proxy.wait_for_version(version + 1)
    assert proxy.status()["last_reload_error"] is None


def test_overlapping_prefixes_are_refused(
    proxy_factory: ProxyFactory, document: dict[str, Any]
) -> None:
    proxy = proxy_factory(document)
    broken = copy.deepcopy(document)
    broken["capabilities"]["catalogue"] = {"prefixes": ["/products/"], "service": "service"}
    proxy.write_routing(broken)
    _wait_for_error(proxy, "overlaps the same prefix of capabilities.products")


def test_the_proxy_refuses_to_start_on_a_bad_file(tmp_path: Any, document: dict[str, Any]) -> None:
    document["upstreams"]["monolith"]["url"] = "http://127.0.0.1:8001/some/path"
    routing = tmp_path / "routing.toml"
    routing.write_text(tomlkit.dumps(document))
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--port", "1"],
        env={"PROXY_ROUTING_FILE": str(routing), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "upstreams.monolith.url" in result.stderr
    assert "what to do" in result.stderr


def test_the_admin_api_changes_the_phase_writes_the_file_and_audits(
    proxy_factory: ProxyFactory, document: dict[str, Any]
) -> None:
    proxy = proxy_factory(document)
    proxy.routing_file.write_text("# kept: operators' notes\n" + proxy.routing_file.read_text())
    proxy.routing_file.chmod(0o640)  # the apps' group reads it: a rewrite must keep that
    proxy.wait_for_version(2)
    response = proxy.admin(
        "PATCH",
        "/capabilities/products",
        json={"phase": "dual_write", "reason": "go", "gates": "passed"},
        headers={"X-Strangler-Actor": "ops-alice"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["old"] == {"phase": "monolith"}
    assert response.json()["new"] == {"phase": "dual_write"}
    text = proxy.routing_file.read_text()
    assert text.startswith("# kept: operators' notes\n")
    assert proxy.routing_file.stat().st_mode & 0o777 == 0o640
    assert tomlkit.parse(text)["capabilities"]["products"]["phase"] == "dual_write"  # type: ignore[index]
    [entry] = proxy.admin("GET", "/audit").json()["entries"]
    assert entry["who"] == "ops-alice@127.0.0.1"
    assert (entry["old"], entry["new"], entry["reason"], entry["gates"]) == (
        {"phase": "monolith"},
        {"phase": "dual_write"},
        "go",
        "passed",
    )
    assert entry["what"] == "admin_change" and entry["at"].endswith("Z")
    assert entry["config_version"] == 3
    # The watcher sees the file the admin API wrote and must not apply it again: a later hand
    # edit is applied as the very next version, with nothing in between.
    edited = tomlkit.parse(proxy.routing_file.read_text())
    edited["capabilities"]["products"]["phase"] = "backfilled"
    proxy.routing_file.write_text(tomlkit.dumps(edited))
    status = eventually(lambda: _phase_is(proxy, "backfilled"), "the hand edit to be applied")
    assert status["config_version"] == 4
    admin_change, hand_edit = proxy.admin("GET", "/audit").json()["entries"]
    assert (admin_change["what"], admin_change["config_version"]) == ("admin_change", 3)
    assert (hand_edit["who"], hand_edit["new"], hand_edit["config_version"]) == (
        "routing.toml",
        {"phase": "backfilled"},
        4,
    )


def _phase_is(proxy: Proxy, phase: str) -> dict[str, Any]:
    status = proxy.status()
    assert status["capabilities"]["products"]["phase"] == phase, status
    return status


def test_the_admin_api_refuses_bad_changes_and_leaves_the_file_alone(
    proxy_factory: ProxyFactory, document: dict[str, Any]
) -> None:
    proxy = proxy_factory(document)
    before = proxy.routing_file.read_bytes()
    skip = proxy.admin("PATCH", "/capabilities/products", json={"phase": "canary"})
    assert_problem(skip, 422, "skips dual_write")
    assert_problem(
        proxy.admin("PATCH", "/capabilities/products", json={"canary_percent": 101}), 422
    )
    assert_problem(
        proxy.admin("PATCH", "/capabilities/products", json={}), 422, "Nothing to change"
    )
    assert_problem(
        proxy.admin("PATCH", "/capabilities/nope", json={"phase": "dual_write"}), 404, "nope"
    )
    assert proxy.routing_file.read_bytes() == before
    assert not proxy.audit_log.exists()


def test_a_gated_step_needs_its_gates_met_or_forced_with_a_reason(
    proxy_factory: ProxyFactory, document: dict[str, Any]
) -> None:
    proxy = proxy_factory(document)
    before = proxy.routing_file.read_bytes()
    unchecked = proxy.admin("PATCH", "/capabilities/products", json={"phase": "dual_write"})
    assert_problem(unchecked, 409, "strangler advance products")
    no_reason = {"phase": "dual_write", "gates": "forced"}
    assert_problem(proxy.admin("PATCH", "/capabilities/products", json=no_reason), 422, "reason")
    assert proxy.routing_file.read_bytes() == before and not proxy.audit_log.exists()

    forced = {"phase": "dual_write", "gates": "forced", "reason": "checked by hand"}
    assert proxy.admin("PATCH", "/capabilities/products", json=forced).status_code == 200
    back = proxy.admin("PATCH", "/capabilities/products", json={"phase": "monolith"})
    assert back.status_code == 200, back.text  # the way back needs no gates
    entries = proxy.admin("GET", "/audit").json()["entries"]
    assert [(e["new"], e.get("gates")) for e in entries] == [
        ({"phase": "dual_write"}, "forced"),
        ({"phase": "monolith"}, None),
    ]


def test_raising_the_canary_is_gated_and_lowering_it_is_not(
    proxy_factory: ProxyFactory, document: dict[str, Any]
) -> None:
    document["capabilities"]["products"].update(phase="canary", canary_percent=10)
    proxy = proxy_factory(document)
    raised = proxy.admin("PATCH", "/capabilities/products", json={"canary_percent": 50})
    assert_problem(raised, 409, "raising the canary from 10 % to 50 %")
    lowered = proxy.admin("PATCH", "/capabilities/products", json={"canary_percent": 5})
    assert lowered.status_code == 200, lowered.text


def test_a_hand_edit_that_takes_a_gated_step_is_audited_as_unchecked(
    proxy_factory: ProxyFactory, document: dict[str, Any]
) -> None:
    proxy = proxy_factory(document)
    document["capabilities"]["products"]["phase"] = "dual_write"
    proxy.write_routing(document)
    proxy.wait_for_version(2)
    [entry] = proxy.admin("GET", "/audit").json()["entries"]
    assert (entry["what"], entry["gates"], entry["new"]) == (
        "file_edit",
        "unchecked",
        {"phase": "dual_write"},
    )


def test_the_config_version_goes_on_across_a_restart(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    with run_proxy(tmp_path, document) as proxy:
        proxy.set(phase="dual_write")
        reached = proxy.status()["config_version"]
    assert reached == 2
    with run_proxy(tmp_path, document) as again:  # the same directory: the same state
        assert again.status()["config_version"] == reached + 1


def test_the_admin_api_needs_the_token(
    proxy_factory: ProxyFactory, document: dict[str, Any]
) -> None:
    proxy = proxy_factory(document)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
        assert_problem(proxy.client.get("/_strangler/status", headers=headers), 401)
        assert_problem(
            proxy.client.patch(
                "/_strangler/capabilities/products", headers=headers, json={"phase": "dual_write"}
            ),
            401,
        )
    assert proxy.client.get("/_strangler/health").status_code == 200


def test_metrics_count_requests_by_capability_upstream_and_status(
    proxy_factory: ProxyFactory, document: dict[str, Any]
) -> None:
    proxy = proxy_factory(document)
    proxy.client.get("/products/1")
    proxy.client.get("/_echo/status/404")
    text = proxy.client.get("/_strangler/metrics").text
    requests = "strangler_proxy_requests_total"
    assert (
        metric_value(text, requests, capability="products", status_class="2xx", upstream="monolith")
        == 1
    )
    assert (
        metric_value(
            text, requests, capability="(default)", status_class="4xx", upstream="monolith"
        )
        == 1
    )
    assert (
        metric_value(
            text,
            "strangler_proxy_request_seconds_count",
            capability="products",
            upstream="monolith",
        )
        == 1
    )
    assert "strangler_proxy_config_version 1.0" in text
