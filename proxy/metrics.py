"""Prometheus metrics of the proxy, on a registry of its own (one per app instance).

Label children are cached so the per-request cost is a dict lookup and an increment.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ProxyMetrics"]

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

    def set_breaker(self, upstream: str, state: str) -> None:
        self.breaker.labels(upstream).set(_BREAKER_VALUES[state])

    def render(self) -> bytes:
        return generate_latest(self.registry)
