"""How one upstream call turns client-side failures into verdicts (respx fakes the network).

Each failure mode of the HTTP client must become the right answer for the client and the right
signal for the breaker: connect errors and timeouts count against the upstream, the proxy's own
pool exhaustion does not, and a trickling upstream is cut off by the overall deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import respx

from proxy.breaker import BreakerState
from proxy.config import RoutingConfig
from proxy.exchange import UpstreamFailure, call_upstream
from proxy.metrics import ProxyMetrics
from proxy.runtime import RoutingState, Upstream

URL = "http://upstream.test"


def _upstream(total_timeout: float = 1.0) -> tuple[ProxyMetrics, Upstream]:
    metrics = ProxyMetrics()
    state = RoutingState(metrics)
    config = RoutingConfig.model_validate(
        {
            "breaker": {"failure_threshold": 2, "cooldown_seconds": 60},
            "upstreams": {"monolith": {"url": URL, "total_timeout": total_timeout}},
        }
    )
    compiled = state.apply(config)
    return metrics, compiled.upstreams["monolith"]


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def _call(metrics: ProxyMetrics, upstream: Upstream) -> httpx.Response | UpstreamFailure:
    async def run() -> httpx.Response | UpstreamFailure:
        outcome = await call_upstream(metrics, upstream, "GET", b"/x", [], None)
        if isinstance(outcome, httpx.Response):
            await outcome.aclose()
        return outcome

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("error", "reason", "status"),
    [
        (httpx.ConnectError("refused"), "connect_error", 502),
        (httpx.ConnectTimeout("slow connect"), "timeout", 504),
        (httpx.ReadTimeout("slow read"), "timeout", 504),
        (httpx.RemoteProtocolError("garbage"), "connect_error", 502),
    ],
)
def test_an_upstream_failure_becomes_a_verdict_that_counts(
    mock: respx.MockRouter, error: Exception, reason: str, status: int
) -> None:
    metrics, upstream = _upstream()
    mock.get(f"{URL}/x").mock(side_effect=error)
    outcome = _call(metrics, upstream)
    assert isinstance(outcome, UpstreamFailure)
    assert (outcome.reason, outcome.status, outcome.counts_against_breaker) == (
        reason,
        status,
        True,
    )
    assert upstream.breaker.consecutive_failures == 1


def test_the_proxys_own_pool_exhaustion_does_not_open_the_breaker(mock: respx.MockRouter) -> None:
    metrics, upstream = _upstream()
    mock.get(f"{URL}/x").mock(side_effect=httpx.PoolTimeout("pool full"))
    for _ in range(5):
        outcome = _call(metrics, upstream)
        assert isinstance(outcome, UpstreamFailure) and outcome.reason == "pool_exhausted"
    assert upstream.breaker.state is BreakerState.CLOSED


def test_a_hung_upstream_is_cut_off_by_the_overall_deadline(mock: respx.MockRouter) -> None:
    metrics, upstream = _upstream(total_timeout=0.2)

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    mock.get(f"{URL}/x").mock(side_effect=hang)
    outcome = _call(metrics, upstream)
    assert isinstance(outcome, UpstreamFailure) and outcome.status == 504


def test_502_503_504_count_as_failures_and_open_the_breaker(mock: respx.MockRouter) -> None:
    metrics, upstream = _upstream()
    mock.get(f"{URL}/x").mock(side_effect=[httpx.Response(503), httpx.Response(504)])
    for _ in range(2):
        outcome = _call(metrics, upstream)
        assert isinstance(outcome, httpx.Response)
    assert upstream.breaker.state is BreakerState.OPEN
    refused = _call(metrics, upstream)
    assert isinstance(refused, UpstreamFailure) and refused.reason == "breaker_open"


def test_a_500_is_the_upstreams_answer_not_a_breaker_failure(mock: respx.MockRouter) -> None:
    metrics, upstream = _upstream()
    mock.get(f"{URL}/x").mock(return_value=httpx.Response(500))
    for _ in range(3):
        outcome = _call(metrics, upstream)
        assert isinstance(outcome, httpx.Response) and outcome.status_code == 500
    assert upstream.breaker.state is BreakerState.CLOSED


def test_a_deliberate_503_with_retry_after_does_not_open_the_breaker(
    mock: respx.MockRouter,
) -> None:
    metrics, upstream = _upstream()
    deliberate = {"Retry-After": "1", "Content-Type": "application/problem+json"}
    mock.get(f"{URL}/x").mock(return_value=httpx.Response(503, headers=deliberate))
    for _ in range(5):
        outcome = _call(metrics, upstream)
        assert isinstance(outcome, httpx.Response) and outcome.status_code == 503
    assert upstream.breaker.state is BreakerState.CLOSED
    # A balancer's 503 with Retry-After in front of a dead service still counts.
    mock.get(f"{URL}/x").mock(return_value=httpx.Response(503, headers={"Retry-After": "5"}))
    for _ in range(2):
        _call(metrics, upstream)
    assert upstream.breaker.state is BreakerState.OPEN
