"""The write barrier: whether a side may take an entity's writes, decided in its own database.

The proxy's write fence holds the writes it sees while writes change sides, but it cannot
hold a write it gave up on (a read timeout, a client gone) that the app still runs, nor one
sent around the proxy. Either could commit on the old side after the switch drained its
outbox, and be lost or collide with the new side's writes. So the decision is made where the
write commits: every write of the entity reads this side's barrier row in its own transaction,
after its own changes, and commits only if the row lets it; the switch flips the row on the
old side first. On PostgreSQL each write takes the row `FOR SHARE` and the flip takes it `FOR
UPDATE`, so the flip waits for the writes in flight and every write after it sees the flip; on
SQLite the write already holds the database's write lock when it reads the row (it reads it
after its changes), which the flip needs too. Once the flip on the old side has committed, no
write of the entity commits there, whatever path it came by: the drain that follows sees every
event.

The row says True (writes may commit here), False (they may not) or None (follow the phase:
how a side starts, and what it keeps until a switch sets it). Each side's migration makes the
row: a write finding none follows the phase, and on PostgreSQL holds nothing a close would
wait for. `strangler barrier` shows and,
as an escape hatch after a hand edit of the phase, sets it.
"""

from __future__ import annotations

import time

from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from strangler.phases import Phase, PhaseFile
from strangler.sync.tables import SyncTables

__all__ = [
    "BarrierBusy",
    "WritesRefused",
    "read_barrier",
    "require_writes_here",
    "set_barrier",
    "transaction_phase",
]

_ROW = 1
_PHASE_OF_TRANSACTION = "strangler.barrier.phase"


def transaction_phase(session: Session, phase_file: PhaseFile | None) -> Phase:
    """The phase this transaction writes under: read from `phase_file` once per transaction,
    then the same answer for every question the write asks (may it write, which way does it
    sync). Two reads could straddle a flip: the first allowing the write, the second
    recording no event for it."""
    transaction = session.get_transaction()
    if transaction is None:
        transaction = session.begin()
    held = session.info.get(_PHASE_OF_TRANSACTION)
    if held is not None and held[0] is transaction:
        phase: Phase = held[1]
        return phase
    phase = phase_file.current() if phase_file is not None else Phase.MONOLITH
    session.info[_PHASE_OF_TRANSACTION] = (transaction, phase)
    return phase


class WritesRefused(Exception):
    """This side may not take the entity's writes now; the transaction was not committed."""


class BarrierBusy(Exception):
    """The barrier could not be flipped in time: writes in flight still hold it."""


def require_writes_here(session: Session, tables: SyncTables, *, by_phase: bool) -> None:
    """Refuse (WritesRefused) unless this side may commit the entity's write now.

    Call it inside the write's transaction, after the write's own statements and before the
    commit (see the module docstring for why after). `by_phase` is what the phase says, used
    while the barrier follows the phase.
    """
    barrier = tables.writes
    query = select(barrier.c.here).where(barrier.c.id == _ROW)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    here = session.execute(query).scalar_one_or_none()
    allowed = by_phase if here is None else here
    if not allowed:
        raise WritesRefused("the write barrier of this side is closed")


def read_barrier(session: Session, tables: SyncTables) -> bool | None:
    """The barrier as it stands: True, False, or None (following the phase)."""
    barrier = tables.writes
    return session.execute(select(barrier.c.here).where(barrier.c.id == _ROW)).scalar_one_or_none()


def set_barrier(
    session: Session, tables: SyncTables, here: bool | None, *, wait_seconds: float = 10.0
) -> None:
    """Set the barrier and commit, once every write in flight on this side has finished.

    On PostgreSQL the row is taken `FOR UPDATE`, which waits for the writes holding it `FOR
    SHARE` (at most `wait_seconds`: then BarrierBusy and nothing changed); on SQLite the
    update waits for the database's write lock like any write.
    """
    barrier = tables.writes
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        session.execute(text(f"SET LOCAL lock_timeout = '{int(wait_seconds * 1000)}ms'"))
    try:
        found = session.execute(
            select(barrier.c.id).where(barrier.c.id == _ROW).with_for_update()
        ).first()
        values = {"here": here, "changed_at": time.time()}
        if found is None:
            session.execute(insert(barrier).values(id=_ROW, **values))
        else:
            session.execute(update(barrier).where(barrier.c.id == _ROW).values(**values))
        session.commit()
    except IntegrityError:  # another flip inserted the row first: take it as it now is
        session.rollback()
        set_barrier(session, tables, here, wait_seconds=wait_seconds)
    except Exception as exc:
        session.rollback()
        if postgres and "lock timeout" in str(exc):
            raise BarrierBusy(
                f"writes in flight held the barrier for more than {wait_seconds:g} s"
            ) from exc
        raise
