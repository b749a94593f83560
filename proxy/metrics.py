"""Prometheus metrics of the proxy, on a registry of its own (one per app instance).

Label children are cached so the per-request cost is a dict lookup and an increment. The
connection pools and the event loop's tasks are read when the metrics are scraped, never on
the request path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["PoolSample", "ProxyMetrics"]

PoolSample = tuple[str, str, int, int]
"""(upstream, pool: "primary" or "shadow", connections in use, connections open)."""


class _RuntimeCollector(Collector):
    """The upstream pools and the event loop's task count, as they are at scrape time."""

    def __init__(self) -> None:
        self.pools: Callable[[], Iterable[PoolSample]] = lambda: ()

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        labels = ["upstream", "pool"]
        return (
            GaugeMetricFamily(
                "strangler_proxy_upstream_connections_in_use",
                "Upstream connection slots held by requests in flight, by upstream and pool",
                labels=labels,
            ),
            GaugeMetricFamily(
                "strangler_proxy_upstream_connections_open",
                "Upstream connections open (in use or idle), by upstream and pool",
                labels=labels,
            ),
            GaugeMetricFamily(
                "strangler_proxy_tasks", "asyncio tasks alive in the proxy's event loop"
            ),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        in_use, opened, tasks = self._families()
        for upstream, pool, used, open_now in self.pools():
            in_use.add_metric([upstream, pool], used)
            opened.add_metric([upstream, pool], open_now)
        try:
            tasks.add_metric([], len(asyncio.all_tasks()))
        except RuntimeError:  # scraped outside the event loop: no tasks to count
            pass
        yield in_use
        yield opened
        yield tasks


_BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "strangler_proxy_requests",
            "Requests answered, by capability, upstream and status class",
            ["capability", "upstream", "status_class"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "strangler_proxy_request_seconds",
            "Time from request to the end of the response, by capability and upstream",
            ["capability", "upstream"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "strangler_proxy_fallbacks",
            "Reads answered by the monolith because the service failed",
            ["capability", "reason"],
            registry=self.registry,
        )
        self.shadow = Counter(
            "strangler_proxy_shadow_compares",
            "Shadow reads compared, by capability and result (match, mismatch, error, skipped)",
            ["capability", "result"],
            registry=self.registry,
        )
        self.shadow_dropped = Counter(
            "strangler_proxy_shadow_dropped",
            "Shadow reads dropped because the shadow queue was full",
            ["capability"],
            registry=self.registry,
        )
        self.breaker = Gauge(
            "strangler_proxy_breaker_state",
            "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open",
            ["upstream"],
            registry=self.registry,
        )
        self.config_version = Gauge(
            "strangler_proxy_config_version",
            "How many routing configs have been applied since start",
            registry=self.registry,
        )
        self.reload_failures = Counter(
            "strangler_proxy_config_reload_failures",
            "routing.toml changes refused",
            registry=self.registry,
        )
        self.pinned_reads = Counter(
            "strangler_proxy_pinned_reads",
            "Reads sent to the side that took the user's last write (read-your-writes)",
            ["capability", "side"],
            registry=self.registry,
        )
        self.fence_refusals = Counter(
            "strangler_proxy_fence_refusals",
            "Writes held by a write fence past its bound and answered 503",
            ["capability"],
            registry=self.registry,
        )
        self._runtime = _RuntimeCollector()
        self.registry.register(self._runtime)
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._latency_children: dict[tuple[str, str], Histogram] = {}

    def observe(self, capability: str, upstream: str, status: int, seconds: float) -> None:
        key = (capability, upstream, status // 100)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self.requests.labels(capability, upstream, f"{status // 100}xx")
            self._request_children[key] = counter
        counter.inc()
        pair = (capability, upstream)
        histogram = self._latency_children.get(pair)
        if histogram is None:
            histogram = self.latency.labels(capability, upstream)
            self._latency_children[pair] = histogram
        histogram.observe(seconds)

    def watch_pools(self, pools: Callable[[], Iterable[PoolSample]]) -> None:
        """Where the scrape reads the current upstream pools from."""
        self._runtime.pools = pools

    def set_breaker(self, upstream: str, state: str) -> None:
        self.breaker.labels(upstream).set(_BREAKER_VALUES[state])

    def render(self) -> bytes:
        return generate_latest(self.registry)
