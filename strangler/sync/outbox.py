"""Recording a change event in the outbox, inside the caller's transaction."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass

from sqlalchemy import Insert, Table, func, insert, select
from sqlalchemy.orm import Session

from strangler.observability.tracing import current_traceparent
from strangler.sync.events import ChangeEvent
from strangler.sync.tables import SyncTables

__all__ = ["OutboxLag", "outbox_lag", "record_change"]


@dataclass(frozen=True)
class OutboxLag:
    """How far behind delivery is: undelivered events, the age of the oldest, dead letters.

    `first_pending_id` and `last_id` are outbox positions: every event committed before this
    was read is at or below the last, and every such event below the first is delivered (on
    PostgreSQL a lower id may still be uncommitted then). The proxy's read-your-writes pins
    are released by them.
    """

    pending: int
    oldest_age_seconds: float | None
    dead_letters: int
    first_pending_id: int | None = None
    last_id: int | None = None


def outbox_lag(session: Session, tables: SyncTables, now: float | None = None) -> OutboxLag:
    outbox = tables.outbox
    last_id = session.scalar(select(func.max(outbox.c.id)))
    pending, oldest, first = session.execute(
        select(func.count(), func.min(outbox.c.created_at), func.min(outbox.c.id)).where(
            outbox.c.delivered_at.is_(None)
        )
    ).one()
    letters = tables.dead_letters
    dead, first_dead = session.execute(
        select(func.count(), func.min(letters.c.outbox_id)).where(letters.c.resolved_at.is_(None))
    ).one()
    if first_dead is not None and (first is None or first_dead < first):
        # The other side lacks that write: for read-your-writes it is still to come.
        first = first_dead
    age = ((time.time() if now is None else now) - oldest) if oldest is not None else None
    return OutboxLag(
        pending=pending,
        oldest_age_seconds=age,
        dead_letters=dead or 0,
        first_pending_id=first,
        last_id=last_id,
    )


@functools.lru_cache(maxsize=32)
def _insert_into(outbox: Table) -> Insert:
    return insert(outbox)


def record_change(session: Session, tables: SyncTables, event: ChangeEvent) -> None:
    """Add `event` to the outbox; it commits or rolls back with the caller's change.

    The statement is built once per table and the values go as parameters: building
    `insert().values(...)` on every write cost about 0.2 ms of Python per dual-written write
    (SQLAlchemy's element construction and cache key), a third of what the outbox added."""
    session.execute(
        _insert_into(tables.outbox),
        {
            "event_id": str(event.event_id),
            "entity_key": event.key,
            "version": event.version,
            "op": event.op,
            "data": json.dumps(event.data, sort_keys=True) if event.data is not None else None,
            "created_at": time.time(),
            "trace_context": event.trace_context or current_traceparent(),
        },
    )
