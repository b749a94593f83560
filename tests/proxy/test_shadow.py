"""Shadow reads: compared after the client's answer, bounded, never for writes."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.proxy.conftest import Proxy, ProxyFactory, routing_document
from tests.support.factories import new_account, new_product
from tests.support.metrics import metric_value
from tests.support.processes import RunningApp
from tests.support.waiting import wait_until


def _wait_for(predicate: Callable[[], bool], timeout: float = 10) -> None:
    wait_until(predicate, "the shadow statistics", timeout=timeout)


class HeldService(ThreadingHTTPServer):
    """A service upstream the test holds: each read of /products/ waits until `release` is
    set (or `longest` seconds pass) and then answers {"who": "service"}."""

    def __init__(self, longest: float = 10) -> None:
        super().__init__(("127.0.0.1", 0), _HoldReads)
        self.release = threading.Event()
        self.longest = longest
        self.arrived = 0
        self.answered = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _HoldReads(BaseHTTPRequestHandler):
    server: HeldService
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the http.server protocol's name)
        if self.path.startswith("/products/"):
            self.server.arrived += 1
            self.server.release.wait(self.server.longest)
            self.server.answered += 1
        body = b'{"who": "service"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def held_service() -> Iterator[HeldService]:
    server = HeldService()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def _shadow_stats(proxy: Proxy) -> dict[str, Any]:
    stats: dict[str, Any] = proxy.status()["capabilities"]["products"]["shadow"] or {}
    return stats


def test_shadow_compares_real_monolith_and_service_answers_and_keeps_mismatches(
    proxy_factory: ProxyFactory, real_monolith: RunningApp, real_service: RunningApp
) -> None:
    proxy = proxy_factory(routing_document(real_monolith.base_url, real_service.base_url))
    proxy.walk_to("shadow")
    past_the_end = base64.urlsafe_b64encode(b"after:999999999").decode().rstrip("=")
    assert proxy.client.get("/products", params={"cursor": past_the_end}).status_code == 200
    assert proxy.client.get("/products/999999999").status_code == 404
    _wait_for(lambda: _shadow_stats(proxy).get("compared") == 2)
    assert _shadow_stats(proxy)["matched"] == 2

    with httpx.Client(base_url=real_monolith.base_url) as monolith:
        only_here = new_product(monolith, new_account(monolith), price="12.50")
    response = proxy.client.get(f"/products/{only_here['id']}")
    assert response.status_code == 200 and response.headers["x-strangler-upstream"] == "monolith"
    _wait_for(lambda: _shadow_stats(proxy).get("mismatched") == 1)
    stats = _shadow_stats(proxy)
    assert stats["mismatch_rate"] == round(1 / 3, 6)
    sample = proxy.admin("GET", "/capabilities/products/mismatches").json()["samples"][0]
    assert sample["request"] == f"GET /products/{only_here['id']}"
    assert (sample["primary"]["status"], sample["shadow"]["status"]) == (200, 404)
    assert "-status 200" in sample["diff"] and "+status 404" in sample["diff"]
    metrics = proxy.client.get("/_strangler/metrics").text
    assert (
        'strangler_proxy_shadow_compares_total{capability="products",result="mismatch"} 1.0'
        in metrics
    )


def test_a_row_the_copy_receives_moments_later_is_lag_not_a_mismatch(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, echo_service: RunningApp
) -> None:
    """A product created a moment ago is read back at once: the monolith has it, the
    service not yet (the relay lags). The mismatch is asked again before it counts, and
    counts as stale when the copy has caught up; a copy that never does still counts (the
    test above)."""
    proxy = proxy_factory(
        routing_document(
            echo_monolith.base_url,
            echo_service.base_url,
            capability={"prefixes": ["/products", "/_echo"]},
            proxy={"shadow_recheck_seconds": 0.2},
        )
    )
    proxy.walk_to("shadow")
    response = proxy.client.get("/_echo/late", params={"key": "new-1", "only": "service"})
    assert response.json() == {"key": "new-1"}
    _wait_for(lambda: _shadow_stats(proxy).get("stale") == 1)
    stats = _shadow_stats(proxy)
    assert (stats["compared"], stats["mismatched"]) == (0, 0)


def test_a_slow_shadow_never_delays_the_client(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, held_service: HeldService
) -> None:
    proxy = proxy_factory(
        routing_document(
            echo_monolith.base_url,
            held_service.base_url,
            service={"total_timeout": 30.0, "read_timeout": 30.0},
        )
    )
    proxy.walk_to("shadow")
    response = proxy.client.get("/products/1")
    assert response.headers["x-strangler-upstream"] == "monolith"
    # The client has its answer while the shadow's upstream has not answered (the test holds
    # it): a proxy waiting for the shadow could not have answered before `release`.
    assert held_service.answered == 0
    wait_until(lambda: held_service.arrived == 1, "the shadow copy to reach the service")
    assert _shadow_stats(proxy).get("compared", 0) == 0  # nothing to compare yet
    held_service.release.set()
    _wait_for(lambda: _shadow_stats(proxy).get("compared") == 1)
    assert _shadow_stats(proxy)["mismatched"] == 1  # {"who": "service"} differs


def test_a_full_shadow_queue_drops_and_counts_instead_of_waiting(
    proxy_factory: ProxyFactory, echo_monolith: RunningApp, held_service: HeldService
) -> None:
    proxy = proxy_factory(
        routing_document(
            echo_monolith.base_url,
            held_service.base_url,
            proxy={"shadow_queue_size": 1, "shadow_workers": 1},
            service={"total_timeout": 30.0, "read_timeout": 30.0},
        )
    )
    proxy.walk_to("shadow")
    assert proxy.client.get("/products/1").status_code == 200
    wait_until(lambda: held_service.arrived == 1, "the one worker to take the first copy")
    # The worker is held on the first copy: the second fills the queue, the other four drop,
    # and every client is answered all the same.
    statuses = [proxy.client.get("/products/1").status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert held_service.answered == 0
    assert _shadow_stats(proxy)["dropped"] == 4
    held_service.release.set()
    metrics = proxy.client.get("/_strangler/metrics").text
    assert (
        metric_value(metrics, "strangler_proxy_shadow_dropped_total", capability="products")
        == (_shadow_stats(proxy)["dropped"])
    )


def test_writes_are_never_shadowed(echo_proxy: Proxy, echo_service: RunningApp) -> None:
    echo_proxy.walk_to("shadow")

    def served() -> int:
        count: int = httpx.get(f"{echo_service.base_url}/_echo/stats").json()["requests"]
        return count

    before = served()
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert (
            echo_proxy.client.request(method, "/products/1").headers["x-strangler-upstream"]
            == "monolith"
        )
    # Another user reads: the writer's own reads are pinned to the monolith, unshadowed.
    httpx.get(f"{echo_proxy.base_url}/products/1")
    _wait_for(lambda: (_shadow_stats(echo_proxy).get("compared") or 0) >= 1)
    assert served() - before == 2  # the read's shadow, and its recheck (echo answers differ)
