"""The running routing state: a validated config compiled into what the request path needs.

Compiling happens once per config load (prefix table, per-capability policies, trusted
networks, clients), so the per-request work is dictionary lookups. A new config is swapped in
as one reference: a request in flight keeps the snapshot it started with. Upstreams whose
settings did not change keep their client (and its warm connections) and their breaker; the
clients of removed or changed upstreams are closed after a grace period.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass

from proxy.breaker import CircuitBreaker
from proxy.config import CapabilityConfig, RoutingConfig, UpstreamConfig, validate_transition
from proxy.decision import CapabilityPolicy
from proxy.headers import Networks
from proxy.metrics import PoolSample, ProxyMetrics
from proxy.paths import ancestors
from proxy.upstream_client import UpstreamPool
from strangler.phases import Side

__all__ = ["CapabilityRoute", "CompiledConfig", "RoutingState", "Upstream"]

log = logging.getLogger("strangler.proxy")


@dataclass(eq=False)
class Upstream:
    """One configured upstream: its settings, its clients and its breaker."""

    name: str
    config: UpstreamConfig
    pool: UpstreamPool
    shadow_pool: UpstreamPool
    breaker: CircuitBreaker

    async def aclose(self) -> None:
        await self.pool.aclose()
        await self.shadow_pool.aclose()


@dataclass(frozen=True, eq=False)
class CapabilityRoute:
    policy: CapabilityPolicy
    config: CapabilityConfig
    monolith: Upstream
    service: Upstream

    def upstream(self, side: Side) -> Upstream:
        return self.service if side is Side.SERVICE else self.monolith


@dataclass(frozen=True, eq=False)
class CompiledConfig:
    version: int
    config: RoutingConfig
    prefixes: dict[str, CapabilityRoute]
    capabilities: dict[str, CapabilityRoute]
    upstreams: dict[str, Upstream]
    default: Upstream
    trusted: Networks
    write_scopes: dict[str, CapabilityRoute]

    def match(self, path: str) -> CapabilityRoute | None:
        """Longest-prefix match on a normalised path; None means the default route."""
        for candidate in ancestors(path):
            route = self.prefixes.get(candidate)
            if route is not None:
                return route
        return None

    def write_scope(self, path: str) -> CapabilityRoute | None:
        """The capability whose data a write to `path` changes: its own prefixes or a related
        one (write fence, read-your-writes)."""
        for candidate in ancestors(path):
            route = self.write_scopes.get(candidate)
            if route is not None:
                return route
        return None


def _pool(config: UpstreamConfig, *, shadow: bool) -> UpstreamPool:
    # Shadow traffic gets a quarter of the connections, in a pool of its own: it can never
    # take connections the primary path needs.
    size = max(1, config.max_connections // 4) if shadow else config.max_connections
    return UpstreamPool(
        config.origin,
        max_connections=size,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        pool_timeout=config.connect_timeout,
    )


class RoutingState:
    """Holds the current CompiledConfig and applies new ones."""

    def __init__(self, metrics: ProxyMetrics, *, last_version: int = 0) -> None:
        """`last_version` is the version the previous run of the proxy reached: the first
        config applied here is numbered after it, so versions never go backwards."""
        self._metrics = metrics
        self._last_version = last_version
        self._current: CompiledConfig | None = None
        self._retired: set[asyncio.Task[None]] = set()

    @property
    def current(self) -> CompiledConfig:
        if self._current is None:
            raise RuntimeError("no routing config applied yet")
        return self._current

    def pool_samples(self) -> list[PoolSample]:
        """The current upstreams' pools, for the metrics scrape."""
        if self._current is None:
            return []
        samples: list[PoolSample] = []
        for name, upstream in self._current.upstreams.items():
            for kind, pool in (("primary", upstream.pool), ("shadow", upstream.shadow_pool)):
                samples.append((name, kind, pool.in_use, pool.open_connections))
        return samples

    def apply(self, config: RoutingConfig) -> CompiledConfig:
        """Compile `config` and make it current; refuse (ConfigError) a skipped phase."""
        previous = self._current
        if previous is not None:
            validate_transition(previous.config, config)
        kept = previous.upstreams if previous else {}
        breaker = config.breaker
        upstreams: dict[str, Upstream] = {}
        for name, settings in config.upstreams.items():
            old = kept.get(name)
            if old is not None and old.config == settings:
                old.breaker.failure_threshold = breaker.failure_threshold
                old.breaker.cooldown_seconds = breaker.cooldown_seconds
                upstreams[name] = old
                continue
            upstreams[name] = Upstream(
                name=name,
                config=settings,
                pool=_pool(settings, shadow=False),
                shadow_pool=_pool(settings, shadow=True),
                breaker=CircuitBreaker(
                    failure_threshold=breaker.failure_threshold,
                    cooldown_seconds=breaker.cooldown_seconds,
                ),
            )
            self._metrics.set_breaker(name, "closed")
        capabilities: dict[str, CapabilityRoute] = {}
        prefixes: dict[str, CapabilityRoute] = {}
        write_scopes: dict[str, CapabilityRoute] = {}
        for name, capability in config.capabilities.items():
            route = CapabilityRoute(
                policy=CapabilityPolicy.build(
                    name,
                    capability.phase,
                    capability.canary_percent,
                    capability.shadow_percent,
                    capability.shadow_during_canary,
                    capability.sticky_key,
                ),
                config=capability,
                monolith=upstreams[capability.monolith],
                service=upstreams[capability.service],
            )
            capabilities[name] = route
            for prefix in capability.prefixes:
                prefixes[prefix] = route
                write_scopes[prefix] = route
            for prefix in capability.related_write_prefixes:
                write_scopes[prefix] = route
        compiled = CompiledConfig(
            version=(previous.version if previous else self._last_version) + 1,
            config=config,
            prefixes=prefixes,
            capabilities=capabilities,
            upstreams=upstreams,
            default=upstreams[config.proxy.default_upstream],
            trusted=[ipaddress.ip_network(n, strict=False) for n in config.proxy.trusted_proxies],
            write_scopes=write_scopes,
        )
        self._current = compiled
        self._metrics.config_version.set(compiled.version)
        retired = [u for name, u in kept.items() if upstreams.get(name) is not u]
        if retired:
            self._retire(retired, grace=max(u.config.total_timeout for u in retired))
        return compiled

    def _retire(self, retired: list[Upstream], grace: float) -> None:
        async def close_later() -> None:
            await asyncio.sleep(grace)
            for upstream in retired:
                await upstream.aclose()

        try:
            task = asyncio.get_running_loop().create_task(close_later())
        except RuntimeError:  # applied outside the event loop (startup): nothing in flight
            return
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def aclose(self) -> None:
        for task in list(self._retired):
            task.cancel()
        if self._current is not None:
            for upstream in self._current.upstreams.values():
                await upstream.aclose()
