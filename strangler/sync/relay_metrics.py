"""The relay process's Prometheus metrics: what it delivered, dead-lettered and failed, and
its lag, on a loopback port of its own (the relay has no HTTP server otherwise).

Counters come from the live `Relay`'s stats; the lag is read from the source's outbox at
scrape time (the same query as the gate's), so a stuck relay still reports a growing lag.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from strangler.sync.relay import Relay

__all__ = ["RelayCollector", "serve_relay_metrics"]

log = logging.getLogger("strangler.relay")


class RelayCollector(Collector):
    def __init__(self, entity: str, relay: Callable[[], Relay | None]) -> None:
        self._entity = entity
        self._relay = relay

    def describe(self) -> Iterator[Metric]:
        return iter(())  # registering must not read the database

    def collect(self) -> Iterator[Metric]:
        labels = ["entity"]
        counters = {
            "delivered": CounterMetricFamily(
                "strangler_relay_delivered", "Events the target acknowledged", labels=labels
            ),
            "dead_lettered": CounterMetricFamily(
                "strangler_relay_dead_lettered",
                "Events the target rejected, moved to dead letters",
                labels=labels,
            ),
            "batches": CounterMetricFamily(
                "strangler_relay_batches", "Batches delivered", labels=labels
            ),
            "failures": CounterMetricFamily(
                "strangler_relay_failures",
                "Delivery attempts that failed and were retried",
                labels=labels,
            ),
        }
        pending = GaugeMetricFamily(
            "strangler_relay_pending", "Events waiting in the source's outbox", labels=labels
        )
        lag = GaugeMetricFamily(
            "strangler_relay_lag_seconds",
            "Age of the oldest undelivered event (0: nothing pending)",
            labels=labels,
        )
        relay = self._relay()
        if relay is not None:
            stats = relay.stats
            for name, family in counters.items():
                family.add_metric([self._entity], getattr(stats, name))
            try:
                found = relay.lag()
            except SQLAlchemyError as exc:
                log.warning("outbox unreadable at scrape: %s", exc.__class__.__name__)
            else:
                pending.add_metric([self._entity], found.pending)
                lag.add_metric([self._entity], found.oldest_age_seconds or 0.0)
        yield from counters.values()
        yield pending
        yield lag


def serve_relay_metrics(port: int, entity: str, relay: Callable[[], Relay | None]) -> None:
    """Serve the metrics on 127.0.0.1:`port` from a daemon thread (OSError if it is taken)."""
    registry = CollectorRegistry()
    registry.register(RelayCollector(entity, relay))
    start_http_server(port, addr="127.0.0.1", registry=registry)
