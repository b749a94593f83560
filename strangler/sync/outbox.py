"""Recording a change event in the outbox, inside the caller's transaction."""

from __future__ import annotations

import json
import time

from sqlalchemy import insert
from sqlalchemy.orm import Session

from strangler.sync.events import ChangeEvent
from strangler.sync.tables import SyncTables

__all__ = ["record_change"]


def record_change(session: Session, tables: SyncTables, event: ChangeEvent) -> None:
    """Add `event` to the outbox; it commits or rolls back with the caller's change."""
    session.execute(
        insert(tables.outbox).values(
            event_id=str(event.event_id),
            entity_key=event.key,
            version=event.version,
            op=event.op,
            data=json.dumps(event.data, sort_keys=True) if event.data is not None else None,
            created_at=time.time(),
        )
    )
