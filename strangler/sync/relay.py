"""The relay: moves a side's outbox to the other side's apply endpoint, in order, in batches.

At least once: an event is marked delivered only after the target acknowledged it, so a relay
killed at any instant redelivers on restart and the versioned apply absorbs the duplicate. An
event the target rejects as invalid goes to the dead-letter table with the reason, and the
batch goes on. Only the holder of a lease delivers, so two relays started by mistake take turns
instead of interleaving. Lag is the age of the oldest undelivered event.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from strangler.db import Sessions
from strangler.sync.client import SyncClient
from strangler.sync.event_tracing import publishing
from strangler.sync.events import ChangeEvent
from strangler.sync.outbox import OutboxLag, outbox_lag
from strangler.sync.tables import SyncTables

__all__ = ["Relay", "RelayStats"]

log = logging.getLogger("strangler.relay")


_PRUNE_EVERY_SECONDS = 60.0
"""How often delivered events older than the retention are deleted."""


@dataclass
class RelayStats:
    delivered: int = 0
    dead_lettered: int = 0
    batches: int = 0
    failures: int = 0


class Relay:
    def __init__(
        self,
        engine: Engine,
        tables: SyncTables,
        entity: str,
        target: SyncClient,
        *,
        batch_size: int = 500,
        lease_seconds: float = 15.0,
        holder: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = Sessions(engine)
        self._tables = tables
        self._entity = entity
        self._target = target
        self.batch_size = batch_size
        self._lease_seconds = lease_seconds
        self._held_until: float | None = None  # our lease's expiry, as we last wrote it
        self.holder = holder or uuid.uuid4().hex
        self._clock = clock
        self.stats = RelayStats()
        # Kept here, not in `run`: the CLI runs one round a second, and a schedule reset
        # each round pruned every second, a write transaction competing with the app's.
        self._last_prune = float("-inf")

    def acquire_lease(self) -> bool:
        """Take or renew the delivery lease; False while another relay holds a live one.

        A lease we hold with more than two thirds of its life left is not renewed: an idle
        relay polls often (its lag floor is its poll interval), and a write transaction per
        poll would compete with the application's writes (on SQLite, for the one write lock).
        """
        lease = self._tables.relay_lease
        now = self._clock()
        if self._held_until is not None and now < self._held_until - 2 * self._lease_seconds / 3:
            return True
        self._held_until = None
        with self._sessions.write() as session:
            row = session.execute(
                select(lease.c.holder, lease.c.expires_at)
                .where(lease.c.name == "relay")
                .with_for_update()
            ).first()
            if row is None:
                session.execute(
                    insert(lease).values(
                        name="relay", holder=self.holder, expires_at=now + self._lease_seconds
                    )
                )
            elif row.holder == self.holder or row.expires_at < now:
                session.execute(
                    update(lease)
                    .where(lease.c.name == "relay")
                    .values(holder=self.holder, expires_at=now + self._lease_seconds)
                )
            else:
                return False
            session.commit()
            self._held_until = now + self._lease_seconds
            return True

    def release_lease(self) -> None:
        self._held_until = None
        lease = self._tables.relay_lease
        with self._sessions.write() as session:
            session.execute(
                delete(lease).where(lease.c.name == "relay", lease.c.holder == self.holder)
            )
            session.commit()

    def deliver_once(self) -> int:
        """Deliver one batch; return how many events it settled (0: nothing pending)."""
        outbox = self._tables.outbox
        with self._sessions.read() as session:
            rows = (
                session.execute(
                    select(outbox)
                    .where(outbox.c.delivered_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(self.batch_size)
                )
                .mappings()
                .all()
            )
        if not rows:
            return 0
        events: list[ChangeEvent] = []
        unbuildable: dict[str, str] = {}  # event_id -> why it cannot be sent
        for row in rows:
            try:
                events.append(self._event(row))
            except ValueError as exc:  # a value the protocol refuses, bad JSON, a bad id
                unbuildable[row["event_id"]] = f"cannot be sent as a change event: {exc}"
        outcomes = []
        if events:
            with publishing(self._entity, events) as sent:
                outcomes = self._target.apply(sent)
        reasons = {
            str(o.event_id): o.reason or "rejected" for o in outcomes if o.outcome == "rejected"
        }
        reasons.update(unbuildable)  # dead letters too: retried, they would stop the outbox
        settled_ids = {str(o.event_id) for o in outcomes} | unbuildable.keys()
        now = self._clock()
        with self._sessions.write() as session:
            for row in rows:
                if row["event_id"] not in settled_ids:
                    continue  # not acknowledged: it stays pending and is sent again
                reason = reasons.get(row["event_id"])
                if reason is not None:
                    session.execute(
                        insert(self._tables.dead_letters).values(
                            event_id=row["event_id"],
                            entity_key=row["entity_key"],
                            version=row["version"],
                            op=row["op"],
                            data=row["data"],
                            reason=reason,
                            failed_at=now,
                            outbox_id=row["id"],
                        )
                    )
                    self.stats.dead_lettered += 1
                self.stats.delivered += 1
            settled = [r["id"] for r in rows if r["event_id"] in settled_ids]
            session.execute(
                update(outbox)
                .where(outbox.c.id.in_(settled), outbox.c.delivered_at.is_(None))
                .values(delivered_at=now)
            )
            session.commit()
        self.stats.batches += 1
        return len(settled)

    def _event(self, row: Any) -> ChangeEvent:
        return ChangeEvent(
            event_id=uuid.UUID(row["event_id"]),
            entity=self._entity,
            key=row["entity_key"],
            version=row["version"],
            op=row["op"],
            data=json.loads(row["data"]) if row["data"] is not None else None,
            trace_context=row["trace_context"],
        )

    def lag(self) -> OutboxLag:
        with self._sessions.read() as session:
            return outbox_lag(session, self._tables, self._clock())

    def prune(self, older_than_seconds: float) -> int:
        """Delete delivered events older than the retention; return how many went."""
        outbox = self._tables.outbox
        with self._sessions.write() as session:
            result = session.execute(
                delete(outbox).where(
                    outbox.c.delivered_at.is_not(None),
                    outbox.c.delivered_at < self._clock() - older_than_seconds,
                )
            )
            session.commit()
            return int(result.rowcount)  # type: ignore[attr-defined]

    def run(
        self,
        stop: threading.Event,
        *,
        idle_seconds: float = 0.02,
        max_backoff_seconds: float = 30.0,
        retention_seconds: float = 3600.0,
        until_drained: bool = False,
    ) -> None:
        """Deliver until `stop` is set (or, with until_drained, until nothing is pending)."""
        backoff = 0.5
        while not stop.is_set():
            try:
                if not self.acquire_lease():
                    stop.wait(self._lease_seconds / 3)
                    continue
                settled = self.deliver_once()
                backoff = 0.5
                if self._clock() - self._last_prune > _PRUNE_EVERY_SECONDS:
                    self.prune(retention_seconds)
                    self._last_prune = self._clock()
                if settled == 0:
                    if until_drained:
                        return
                    stop.wait(idle_seconds)
                # a full batch means more is waiting: go again at once
            except Exception as exc:  # the target, the database, a malformed answer: all retried
                self.stats.failures += 1
                pause = random.uniform(backoff / 2, backoff)  # jitter
                log.warning("delivery failed (%r); retrying in %.1f s", exc, pause)
                stop.wait(pause)
                backoff = min(backoff * 2, max_backoff_seconds)
