"""Prometheus metrics of an app (the monolith, a service): requests, latency, the database
pool, and each synced entity's outbox depth, relay lag and dead letters.

One registry per app instance, so tests can build several apps in one process. The pool and the
outbox are read when the metrics are scraped, never on a request's path; the outbox figures are
the same ones `GET /internal/sync/{entity}/lag` answers and the relay's gate reads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from strangler.db import Sessions
from strangler.sync.outbox import outbox_lag
from strangler.sync.tables import SyncTables

__all__ = ["AppMetrics"]

log = logging.getLogger("strangler.metrics")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _PoolCollector(Collector):
    """The engine's connection pool as it is at scrape time."""

    def describe(self) -> Iterator[Metric]:
        return iter(())  # registering must not read the database (auto_describe would collect)

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        pool = self._engine.pool
        in_use = GaugeMetricFamily(
            "strangler_db_pool_connections_in_use", "Database connections checked out"
        )
        idle = GaugeMetricFamily(
            "strangler_db_pool_connections_idle", "Database connections open and idle in the pool"
        )
        size = GaugeMetricFamily("strangler_db_pool_size", "The pool's configured size")
        checkedout = getattr(pool, "checkedout", None)
        checkedin = getattr(pool, "checkedin", None)
        pool_size = getattr(pool, "size", None)
        if callable(checkedout) and callable(checkedin) and callable(pool_size):
            in_use.add_metric([], checkedout())
            idle.add_metric([], checkedin())
            size.add_metric([], pool_size())
        yield in_use
        yield idle
        yield size


class _OutboxCollector(Collector):
    """Each synced entity's outbox, read from the database at scrape time."""

    def describe(self) -> Iterator[Metric]:
        return iter(())  # registering must not read the database (auto_describe would collect)

    def __init__(self, sessions: Sessions, tables: Mapping[str, SyncTables]) -> None:
        self._sessions = sessions
        self._tables = tables

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "strangler_outbox_pending", "Change events not yet delivered", labels=["entity"]
        )
        lag = GaugeMetricFamily(
            "strangler_relay_lag_seconds",
            "Age of the oldest undelivered change event (0: nothing pending)",
            labels=["entity"],
        )
        dead = GaugeMetricFamily(
            "strangler_dead_letters", "Change events the other side rejected", labels=["entity"]
        )
        for entity, tables in self._tables.items():
            try:
                with self._sessions.read() as session:
                    found = outbox_lag(session, tables)
            except SQLAlchemyError as exc:  # the database is down: say so, keep the rest
                log.warning("outbox of %s unreadable at scrape: %s", entity, exc.__class__.__name__)
                continue
            pending.add_metric([entity], found.pending)
            lag.add_metric([entity], found.oldest_age_seconds or 0.0)
            dead.add_metric([entity], found.dead_letters)
        yield pending
        yield lag
        yield dead


class AppMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "strangler_http_requests",
            "Requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "strangler_http_request_seconds",
            "Time from request to the end of the response, by method and route template",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def watch_database(self, sessions: Sessions, sync_tables: Mapping[str, SyncTables]) -> None:
        self.registry.register(_PoolCollector(sessions.engine))
        if sync_tables:
            self.registry.register(_OutboxCollector(sessions, sync_tables))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
