"""Routing by phase, sticky canary, fallback, the breaker: real proxy, real upstreams."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import jwt
import pytest

from tests.proxy.conftest import Proxy, ProxyFactory, routing_document
from tests.support.metrics import metric_value
from tests.support.problems import assert_problem
from tests.support.processes import RunningApp, unanswered_port
from tests.support.waiting import eventually

EXPECTED = {  # phase -> (reads, writes)
    "monolith": ("monolith", "monolith"),
    "dual_write": ("monolith", "monolith"),
    "backfilled": ("monolith", "monolith"),
    "shadow": ("monolith", "monolith"),
    "reads_cutover": ("service", "monolith"),
    "writes_cutover": ("service", "service"),
    "decommissioned": ("service", "service"),
}


def _who(response: httpx.Response) -> str:
    return response.headers["x-strangler-upstream"]


def test_each_phase_routes_reads_and_writes_as_defined(echo_proxy: Proxy) -> None:
    for phase in [
        "monolith",
        "dual_write",
        "backfilled",
        "shadow",
        "canary",
        "reads_cutover",
        "writes_cutover",
        "decommissioned",
    ]:
        echo_proxy.walk_to(phase)
        if phase == "canary":
            continue
        reads, writes = EXPECTED[phase]
        echo_proxy.client.cookies.clear()  # a new user: the last one is pinned by its writes
        for method in ("GET", "HEAD", "OPTIONS"):
            assert _who(echo_proxy.client.request(method, "/products/1")) == reads, (phase, method)
        for method in ("POST", "PATCH", "PUT", "DELETE"):
            assert _who(echo_proxy.client.request(method, "/products/1")) == writes, (phase, method)
        assert _who(echo_proxy.client.get("/orders")) == "monolith"


def _token(subject: str) -> str:
    return jwt.encode({"sub": subject}, "the proxy never checks this signature", algorithm="HS256")


def test_canary_keeps_each_user_on_one_side_and_growing_only_moves_users_to_the_service(
    echo_proxy: Proxy,
) -> None:
    echo_proxy.walk_to("canary", canary_percent=30)
    users = [f"user-{n}" for n in range(200)]

    def sides() -> dict[str, str]:
        placed = {}
        for user in users:
            headers = {"Authorization": f"Bearer {_token(user)}"}
            first = _who(echo_proxy.client.get("/products/1", headers=headers))
            again = _who(echo_proxy.client.get("/products/2", headers=headers))
            assert first == again, user
            placed[user] = first
        return placed

    at_30 = sides()
    share = sum(side == "service" for side in at_30.values()) / len(users)
    assert 0.2 <= share <= 0.4, share
    echo_proxy.set(canary_percent=60)
    at_60 = sides()
    assert all(at_60[u] == "service" for u, side in at_30.items() if side == "service")
    assert sum(side == "service" for side in at_60.values()) > sum(
        side == "service" for side in at_30.values()
    )
    writes = {
        _who(echo_proxy.client.post("/products", headers={"Authorization": f"Bearer {_token(u)}"}))
        for u in users[:20]
    }
    assert writes == {"monolith"}


def test_an_anonymous_user_gets_a_sticky_cookie_in_canary(echo_proxy: Proxy) -> None:
    echo_proxy.walk_to("canary", canary_percent=50)
    with httpx.Client(base_url=echo_proxy.base_url) as browser:
        first = browser.get("/products/1")
        cookie = first.cookies.get("strangler_sticky")
        assert cookie
        assert "HttpOnly" in first.headers["set-cookie"]
        sides = {_who(browser.get(f"/products/{n}")) for n in range(20)}
        assert sides == {_who(first)}
        assert "set-cookie" not in browser.get("/products/1").headers


@pytest.fixture
def dead_service_port() -> Iterator[int]:
    with unanswered_port() as port:
        yield port


@pytest.fixture
def dead_service_proxy(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, dead_service_port: int
) -> Proxy:
    """Products' service upstream points at a port nobody listens on."""
    proxy = proxy_factory(
        routing_document(
            echo_monolith.base_url,
            f"http://127.0.0.1:{dead_service_port}",
            breaker={"failure_threshold": 3, "cooldown_seconds": 1.0},
        )
    )
    proxy.walk_to("reads_cutover")
    return proxy


def test_reads_fall_back_to_the_monolith_when_the_service_is_down(
    dead_service_proxy: Proxy,
) -> None:
    response = dead_service_proxy.client.get("/products/1")
    assert response.status_code == 200
    assert _who(response) == "monolith"
    assert response.headers["x-strangler-fallback"] == "connect_error"
    assert response.json()["who"] == "monolith"


def test_a_write_to_a_dead_service_is_502_and_not_retried(
    dead_service_proxy: Proxy, echo_monolith: RunningApp
) -> None:
    dead_service_proxy.set(phase="writes_cutover")
    before = httpx.get(f"{echo_monolith.base_url}/_echo/stats").json()["requests"]
    response = dead_service_proxy.client.post("/products", json={"sku": "x"})
    assert_problem(response, 502, "could not be reached")
    assert httpx.get(f"{echo_monolith.base_url}/_echo/stats").json()["requests"] == before


def test_the_breaker_opens_then_probes_after_the_cooldown(dead_service_proxy: Proxy) -> None:
    for _ in range(3):
        dead_service_proxy.client.get("/products/1")
    breaker = dead_service_proxy.status()["upstreams"]["service"]["breaker"]
    assert breaker["state"] == "open"
    opened = dead_service_proxy.client.get("/products/1")
    assert opened.headers["x-strangler-fallback"] == "breaker_open"
    metrics = dead_service_proxy.client.get("/_strangler/metrics").text
    assert metric_value(metrics, "strangler_proxy_breaker_state", upstream="service") == 2

    def let_through() -> None:
        probe = dead_service_proxy.client.get("/products/1")
        assert probe.headers["x-strangler-fallback"] == "connect_error"  # the probe went out

    # Until the 1 s cooldown ends the breaker answers for the service (breaker_open).
    eventually(let_through, "the breaker to let a probe through after its cooldown", timeout=10)
    assert dead_service_proxy.status()["upstreams"]["service"]["breaker"]["times_opened"] == 2
    dead_service_proxy.set(phase="writes_cutover")
    write = dead_service_proxy.client.post("/products", json={})
    assert_problem(write, 503, "circuit breaker")
    assert write.headers["retry-after"] == "1"


def test_a_service_answering_503_is_replaced_by_the_monolith_for_reads(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    proxy = proxy_factory(
        routing_document(
            echo_monolith.base_url,
            echo_service.base_url,
            capability={"prefixes": ["/products", "/_echo"]},
        )
    )
    proxy.walk_to("reads_cutover")
    response = proxy.client.get("/_echo/status/503")
    assert (response.status_code, _who(response)) == (503, "monolith")  # the monolith's own answer
    assert response.headers["x-strangler-fallback"] == "status_503"
    assert response.json() == {"status": 503}


def test_a_slow_service_times_out_and_the_read_falls_back(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    proxy = proxy_factory(
        routing_document(
            echo_monolith.base_url,
            echo_service.base_url,
            capability={"prefixes": ["/products", "/_echo"]},
            service={"read_timeout": 0.3, "total_timeout": 0.5},
        )
    )
    proxy.walk_to("writes_cutover")
    # The answers say the proxy gave up on the service (a "timeout" fallback, a 504) rather
    # than waiting the 3 s out: the service would have answered {"who": "service"}.
    read = proxy.client.get("/_echo/slow", params={"seconds": 3, "only": "service"})
    assert (_who(read), read.headers["x-strangler-fallback"]) == ("monolith", "timeout")
    write = proxy.client.post("/_echo/slow", params={"seconds": 3, "only": "service"})
    assert_problem(write, 504, "did not answer in time")
    assert "x-strangler-fallback" not in write.headers  # a write never falls back


def test_after_decommissioning_there_is_no_fallback(dead_service_proxy: Proxy) -> None:
    dead_service_proxy.walk_to("decommissioned")
    assert_problem(dead_service_proxy.client.get("/products/1"), 502)
