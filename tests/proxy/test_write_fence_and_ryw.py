"""The write fence and read-your-writes pins, on a real proxy in front of two echo upstreams.

The full path (a real relay draining, pins released by the outbox position) runs in
tests/e2e; here each guard is planted and shown to hold on its own.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import jwt

from tests.proxy.conftest import Proxy, ProxyFactory, routing_document
from tests.support.metrics import metric_value
from tests.support.problems import assert_problem
from tests.support.processes import RunningApp
from tests.support.waiting import eventually, wait_until

FORCED = {"gates": "forced", "reason": "fence tests: the runbook gates are not under test"}


def _auth(subject: str) -> dict[str, str]:
    token = jwt.encode({"sub": subject}, "signature unchecked by the proxy", algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def _fenced_proxy(
    factory: ProxyFactory, monolith: RunningApp, service: RunningApp, **proxy: Any
) -> Proxy:
    document = routing_document(
        monolith.base_url,
        service.base_url,
        capability={"related_write_prefixes": ["/_echo"]},
        proxy=proxy,
    )
    made = factory(document)
    made.walk_to("reads_cutover")
    return made


def _close(proxy: Proxy, **body: Any) -> httpx.Response:
    return proxy.admin("POST", "/capabilities/products/fence", json=body)


def _fence(proxy: Proxy) -> dict[str, Any]:
    fence: dict[str, Any] = proxy.status()["capabilities"]["products"]["fence"]
    return fence


def _read_side(proxy: Proxy, user: dict[str, str]) -> str:
    """Which side answered this user's read of product 1."""
    return str(proxy.client.get("/products/1", headers=user).headers["x-strangler-upstream"])


def test_a_held_write_waits_for_the_flip_and_goes_to_the_new_side(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    proxy = _fenced_proxy(proxy_factory, echo_monolith, echo_service)
    closed = _close(proxy)
    assert closed.status_code == 200, closed.text
    fence_id = closed.json()["fence_id"]
    answers: list[httpx.Response] = []
    writer = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{proxy.base_url}/products/7", json={"n": 1}, timeout=10)
        )
    )
    writer.start()
    wait_until(lambda: _fence(proxy)["held"] == 1, "the write to be held at the fence", timeout=5)
    assert answers == []  # still waiting at the fence
    assert proxy.client.get("/products/7").status_code == 200  # reads are never held

    unfenced = proxy.admin(
        "PATCH",
        "/capabilities/products",
        json={**FORCED, "phase": "writes_cutover", "fence": "nope"},
    )
    assert_problem(unfenced, 409)
    assert "needs the write fence" in unfenced.json()["detail"]
    flipped = proxy.admin(
        "PATCH",
        "/capabilities/products",
        json={**FORCED, "phase": "writes_cutover", "fence": fence_id},
    )
    assert flipped.status_code == 200, flipped.text
    opened = proxy.admin("DELETE", f"/capabilities/products/fence/{fence_id}")
    assert opened.status_code == 200, opened.text
    writer.join(timeout=10)
    assert answers[0].status_code == 200
    assert answers[0].headers["x-strangler-upstream"] == "service"  # the new side took it
    report = opened.json()
    assert report["held_requests"] == 1 and report["paused_ms"] > 0 and not report["expired"]


def test_moving_writes_without_the_fence_is_refused_and_changes_nothing(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    proxy = _fenced_proxy(proxy_factory, echo_monolith, echo_service)
    version = proxy.status()["config_version"]
    refused = proxy.admin(
        "PATCH", "/capabilities/products", json={**FORCED, "phase": "writes_cutover"}
    )
    assert_problem(refused, 409)
    assert "from monolith to service needs the write fence" in refused.json()["detail"]
    status = proxy.status()
    assert status["config_version"] == version
    assert status["capabilities"]["products"]["phase"] == "reads_cutover"
    assert 'phase = "reads_cutover"' in proxy.routing_file.read_text()


def test_a_write_held_past_the_bound_gets_503_with_retry_after(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    proxy = _fenced_proxy(proxy_factory, echo_monolith, echo_service, write_hold_seconds=0.3)
    fence_id = _close(proxy).json()["fence_id"]
    held = proxy.client.post("/products/7", json={})
    assert_problem(held, 503)
    assert held.headers["retry-after"] == "1"
    assert _fence(proxy)["held"] == 1  # it waited at the fence before it was refused
    orders = proxy.client.post("/_echo/status/201")  # a related prefix is held too
    assert_problem(orders, 503)
    assert _fence(proxy)["held"] == 2
    unrelated = proxy.client.post("/users/1", json={})  # nothing else is
    assert unrelated.status_code == 200
    metrics = proxy.client.get("/_strangler/metrics").text
    assert metric_value(metrics, "strangler_proxy_fence_refusals_total", capability="products") == 2
    proxy.admin("DELETE", f"/capabilities/products/fence/{fence_id}")
    assert proxy.client.post("/products/7", json={}).status_code == 200


def test_closing_waits_for_writes_in_flight_and_gives_up_without_changing_anything(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    proxy = _fenced_proxy(proxy_factory, echo_monolith, echo_service)
    answers: list[httpx.Response] = []
    slow = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{proxy.base_url}/_echo/slow?seconds=3", timeout=20)
        )
    )
    slow.start()
    wait_until(lambda: _fence(proxy)["in_flight_writes"] == 1, "the slow write in flight")
    # drain_seconds=0.3 against a 3 s write: the bound running out is what this close tests
    gave_up = _close(proxy, drain_seconds=0.3)
    assert_problem(gave_up, 409)
    assert "1 write(s) to products were still in flight" in gave_up.json()["detail"]
    assert proxy.client.post("/products/1", json={}).status_code == 200  # fence open again
    waited = _close(proxy, drain_seconds=10)
    assert waited.status_code == 200, waited.text
    # The close answered only once the write it found in flight was done, and let it finish.
    assert waited.json()["in_flight_writes"] == 0
    slow.join(timeout=10)
    assert [a.status_code for a in answers] == [200]
    proxy.admin("DELETE", f"/capabilities/products/fence/{waited.json()['fence_id']}")


def test_an_abandoned_fence_opens_by_itself_and_cannot_be_used_to_flip(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    proxy = _fenced_proxy(proxy_factory, echo_monolith, echo_service)
    useless = _close(proxy, lease_seconds=0.3, drain_seconds=1)
    assert_problem(useless, 422)  # it would open before it could be used
    fence_id = _close(proxy, lease_seconds=0.3, drain_seconds=0.2).json()["fence_id"]
    wait_until(lambda: not _fence(proxy)["closed"], "the fence's lease to run out", timeout=5)
    assert _fence(proxy)["last_expired"] is True
    assert proxy.client.post("/products/1", json={}).status_code == 200
    late = proxy.admin(
        "PATCH",
        "/capabilities/products",
        json={**FORCED, "phase": "writes_cutover", "fence": fence_id},
    )
    assert_problem(late, 409)
    assert "lease ran out" in late.json()["detail"]
    report = proxy.admin("DELETE", f"/capabilities/products/fence/{fence_id}").json()
    assert report["expired"] is True


def test_a_user_reads_the_side_that_took_their_write_until_the_pin_ends(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    # No sync token here, so nothing tells the proxy the write was carried over: the pin
    # lasts ryw_max_pin_seconds. (tests/e2e shows pins released by the real outbox.)
    proxy = _fenced_proxy(proxy_factory, echo_monolith, echo_service, ryw_max_pin_seconds=2.0)
    writer, other = _auth("writer"), _auth("other")
    assert _read_side(proxy, writer) == "service"
    wrote = proxy.client.patch("/products/1", headers=writer, json={"name": "new"})
    assert wrote.headers["x-strangler-upstream"] == "monolith"
    # Each of the writer's reads with whether the pin had ended by then (the proxy counts a
    # pin as expired when its user next reads): the split is by that state, not by a clock.
    reads: list[tuple[str, bool]] = []

    def writer_reads(side: str) -> None:
        reads.append((_read_side(proxy, writer), proxy.status()["read_your_writes"]["expired"] > 0))
        assert reads[-1][0] == side

    for _ in range(3):
        writer_reads("monolith")
        assert _read_side(proxy, other) == "service"  # nobody else is pinned
    failed_write = proxy.client.post("/_echo/status/409", headers=_auth("loser"))
    assert failed_write.status_code == 409
    assert _read_side(proxy, _auth("loser")) == "service"  # a refused write pins nothing
    eventually(lambda: writer_reads("service"), "the writer's pin to end", timeout=10)
    assert {side for side, ended in reads if not ended} == {"monolith"}
    assert {side for side, ended in reads if ended} == {"service"}
    metrics = proxy.client.get("/_strangler/metrics").text
    pinned = metric_value(
        metrics, "strangler_proxy_pinned_reads_total", capability="products", side="monolith"
    )
    assert pinned is not None and pinned >= 3
