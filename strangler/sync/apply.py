"""The one apply path: an event changes the target only if it is newer than what it holds.

"What it holds" is the row's version, or the tombstone's version if the row was deleted, so a
late upsert cannot resurrect a deleted row, and a redelivered, duplicated or reordered event
changes nothing (versions 1 2 3 2: the second 2 is a duplicate). Each event is applied in a
savepoint of its own, so one that can never apply (rejected) does not undo the others; the
caller commits the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    Numeric,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from strangler.sync.events import ApplyOutcome, ChangeEvent

__all__ = ["EntitySpec", "advance_key_sequence", "apply_events", "held_version"]


@dataclass(frozen=True)
class EntitySpec:
    """How an entity is stored on one side: its table, key, version and data columns."""

    name: str
    table: Table
    tombstones: Table
    data_columns: tuple[str, ...]
    key: str = "id"
    version: str = "version"

    @functools.cached_property
    def _checks(self) -> dict[str, Callable[[object], bool]]:
        return {c: _value_check(self.table.c[c]) for c in self.data_columns}

    def data_problem(self, data: Mapping[str, object] | None) -> str | None:
        """Why an upsert's data cannot be stored here, or None: a field missing, or a value
        of the wrong type for its column. Checked before writing because SQLite would store
        a string in an integer column without complaint."""
        data = data or {}
        missing = [c for c in self.data_columns if c not in data]
        if missing:
            return f"upsert lacks fields: {', '.join(missing)}"
        for column, fits in self._checks.items():
            if not fits(data[column]):
                kind = self.table.c[column].type
                return f"{column}: {str(data[column])[:40]!r} does not fit a column of type {kind}"
        return None


def _value_check(column: Column[Any]) -> Callable[[object], bool]:
    """What a JSON value must be to go into `column` unchanged on every database."""
    kind = column.type
    test: Callable[[object], bool]
    if isinstance(kind, Boolean):
        test = lambda v: isinstance(v, bool)  # noqa: E731
    elif isinstance(kind, Integer):
        test = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    elif isinstance(kind, (Numeric, Float)):
        test = lambda v: isinstance(v, (int, float, str, Decimal)) and not isinstance(v, bool)  # noqa: E731
    elif isinstance(kind, String):
        limit = kind.length
        test = lambda v: isinstance(v, str) and (limit is None or len(v) <= limit)  # noqa: E731
    else:
        test = lambda v: True  # noqa: E731
    if column.nullable:
        return lambda v: v is None or test(v)
    return test


def held_version(session: Session, spec: EntitySpec, key: int) -> tuple[int, bool]:
    """(version the target holds for `key`, whether the row exists); 0 when never seen."""
    table = spec.table
    row = session.execute(
        select(table.c[spec.version]).where(table.c[spec.key] == key).with_for_update()
    ).first()
    if row is not None:
        return int(row[0]), True
    stone = session.execute(
        select(spec.tombstones.c.version).where(spec.tombstones.c.entity_key == key)
    ).first()
    return (int(stone[0]) if stone is not None else 0), False


def _apply_one(session: Session, spec: EntitySpec, event: ChangeEvent) -> ApplyOutcome:
    if event.entity != spec.name:
        return ApplyOutcome(
            event_id=event.event_id,
            outcome="rejected",
            reason=f"entity {event.entity!r} is not {spec.name!r}",
        )
    held, exists = held_version(session, spec, event.key)
    if event.version <= held:
        return ApplyOutcome(event_id=event.event_id, outcome="duplicate")
    table, stones = spec.table, spec.tombstones
    if event.op == "delete":
        if exists:
            session.execute(delete(table).where(table.c[spec.key] == event.key))
        session.execute(delete(stones).where(stones.c.entity_key == event.key))
        session.execute(insert(stones).values(entity_key=event.key, version=event.version))
        return ApplyOutcome(event_id=event.event_id, outcome="applied")
    data = event.data or {}
    problem = spec.data_problem(data)
    if problem:
        return ApplyOutcome(event_id=event.event_id, outcome="rejected", reason=problem)
    values = {c: data[c] for c in spec.data_columns}
    values[spec.version] = event.version
    if exists:
        session.execute(update(table).where(table.c[spec.key] == event.key).values(**values))
    else:
        session.execute(delete(stones).where(stones.c.entity_key == event.key))
        session.execute(insert(table).values(**{spec.key: event.key}, **values))
    return ApplyOutcome(event_id=event.event_id, outcome="applied")


def apply_events(
    session: Session, spec: EntitySpec, events: Sequence[ChangeEvent]
) -> list[ApplyOutcome]:
    """Apply `events`; the caller commits. Outcomes come back in the order of `events`.

    The fast path decides the whole batch in memory from one read of the versions held, then
    writes it with a handful of bulk statements in one savepoint. If that hits a constraint
    (a unique SKU taken, a concurrent applier inserting the same key), the batch falls back to
    one savepoint per event, so only the events that truly cannot apply are rejected.

    Events are handled in key order (stable, so one key's events keep their order): two
    appliers locking rows at once (relay and backfill) lock in the same order and cannot
    deadlock each other.
    """
    order = sorted(range(len(events)), key=lambda i: events[i].key)
    _lock_keys(session, spec, [events[i].key for i in order])
    result: list[ApplyOutcome | None] = [None] * len(events)
    savepoint = session.begin_nested()
    try:
        outcomes = _apply_batch(session, spec, [events[i] for i in order])
    except IntegrityError:
        savepoint.rollback()
        clashed = []
        for i in order:
            result[i], clash = _apply_in_savepoint(session, spec, events[i])
            if clash:
                clashed.append(i)
        # A unique value can move between rows (SKU X from p2 to p1): in key order p1 may
        # come first and clash. Once the rest of the batch is in, try those again in the
        # order the source wrote them.
        for i in sorted(clashed):
            result[i], _ = _apply_in_savepoint(session, spec, events[i])
        return [o for o in result if o is not None]
    except Exception:
        savepoint.rollback()
        raise
    savepoint.commit()
    for position, outcome in zip(order, outcomes, strict=True):
        result[position] = outcome
    return [o for o in result if o is not None]


def _lock_keys(session: Session, spec: EntitySpec, keys: list[int]) -> None:
    """On PostgreSQL, take a transaction-scoped advisory lock per key, in key order.

    Row locks cannot cover a key that has no row yet: two appliers could then both decide on
    the same absent key (one inserting a tombstone, the other a row) and resurrect a delete.
    SQLite needs nothing here: its write transactions are serial.
    """
    if not keys or session.get_bind().dialect.name != "postgresql":
        return
    session.execute(
        text(
            "SELECT pg_advisory_xact_lock(hashtextextended(:entity || ':' || k::text, 0)) "
            "FROM (SELECT DISTINCT unnest(CAST(:keys AS bigint[])) AS k ORDER BY 1) AS ordered"
        ),
        {"entity": spec.name, "keys": keys},
    )


def _apply_batch(
    session: Session, spec: EntitySpec, events: Sequence[ChangeEvent]
) -> list[ApplyOutcome]:
    table, stones = spec.table, spec.tombstones
    key_col, version_col = table.c[spec.key], table.c[spec.version]
    keys = sorted({e.key for e in events})
    rows: dict[int, int] = {}
    buried: dict[int, int] = {}
    for start in range(0, len(keys), 1000):
        part = keys[start : start + 1000]
        rows.update(
            (k, v)
            for k, v in session.execute(
                select(key_col, version_col)
                .where(key_col.in_(part))
                .order_by(key_col)
                .with_for_update()
            )
        )
        buried.update(
            (k, v)
            for k, v in session.execute(
                select(stones.c.entity_key, stones.c.version).where(stones.c.entity_key.in_(part))
            )
        )
    held = {k: max(rows.get(k, 0), buried.get(k, 0)) for k in keys}
    final: dict[int, ChangeEvent] = {}
    outcomes = []
    for event in events:
        if event.entity != spec.name:
            outcomes.append(
                ApplyOutcome(
                    event_id=event.event_id,
                    outcome="rejected",
                    reason=f"entity {event.entity!r} is not {spec.name!r}",
                )
            )
            continue
        if event.version <= held[event.key]:
            outcomes.append(ApplyOutcome(event_id=event.event_id, outcome="duplicate"))
            continue
        if event.op == "upsert":
            problem = spec.data_problem(event.data)
            if problem:
                outcomes.append(
                    ApplyOutcome(event_id=event.event_id, outcome="rejected", reason=problem)
                )
                continue
        held[event.key] = event.version
        final[event.key] = event
        outcomes.append(ApplyOutcome(event_id=event.event_id, outcome="applied"))

    def values(event: ChangeEvent) -> dict[str, object]:
        data = event.data or {}
        return {**{c: data[c] for c in spec.data_columns}, spec.version: event.version}

    deletes = [e for e in final.values() if e.op == "delete"]
    upserts = [e for e in final.values() if e.op == "upsert"]
    gone = [e.key for e in deletes if e.key in rows]
    if gone:
        session.execute(delete(table).where(key_col.in_(gone)))
    unburied = [e.key for e in final.values() if e.key in buried]
    if unburied:
        session.execute(delete(stones).where(stones.c.entity_key.in_(unburied)))
    if deletes:
        session.execute(
            insert(stones), [{"entity_key": e.key, "version": e.version} for e in deletes]
        )
    updates = [e for e in upserts if e.key in rows]
    if updates:
        session.execute(
            update(table)
            .where(key_col == bindparam("_key"))
            .execution_options(synchronize_session=False),
            [{"_key": e.key, **values(e)} for e in updates],
        )
    inserts = [e for e in upserts if e.key not in rows]
    if inserts:
        session.execute(insert(table), [{spec.key: e.key, **values(e)} for e in inserts])
    return outcomes


def _apply_in_savepoint(
    session: Session, spec: EntitySpec, event: ChangeEvent
) -> tuple[ApplyOutcome, bool]:
    """One event in its own savepoint; also says whether it was rejected by a constraint.

    A constraint failure is tried once more at once: a concurrent applier may have inserted
    the same key in between, and the second look sees its version."""
    for attempt in (1, 2):
        savepoint = session.begin_nested()
        try:
            outcome = _apply_one(session, spec, event)
        except IntegrityError as exc:
            savepoint.rollback()
            if attempt == 2:
                reason = str(exc.orig).splitlines()[0] if exc.orig else str(exc)
                rejected = ApplyOutcome(
                    event_id=event.event_id, outcome="rejected", reason=reason[:500]
                )
                return rejected, True
            continue
        except Exception:
            savepoint.rollback()
            raise
        if outcome.outcome == "applied":
            savepoint.commit()
        else:
            savepoint.rollback()
        return outcome, False
    raise AssertionError("unreachable")


def advance_key_sequence(session: Session, spec: EntitySpec) -> None:
    """Make the target's own key generator start above every key it has seen.

    Applied events insert rows with the source's keys; without this, the target's first own
    insert (after writes cut over) would reuse a key: PostgreSQL sequences do not move on
    explicit inserts, and a tombstoned key was never inserted at all.
    """
    table, stones = spec.table, spec.tombstones
    highest = max(
        session.scalar(select(func.coalesce(func.max(table.c[spec.key]), 0))) or 0,
        session.scalar(select(func.coalesce(func.max(stones.c.entity_key), 0))) or 0,
    )
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        sequence = session.scalar(
            text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": spec.key}
        )
        if sequence:
            current = f"(SELECT last_value FROM {sequence})"
            session.execute(
                text(f"SELECT setval('{sequence}', GREATEST(:m, {current}))"),
                {"m": max(highest, 1)},
            )
    elif dialect == "sqlite":
        if not session.scalar(
            text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'")
        ):
            return  # no AUTOINCREMENT table here: SQLite's next key is already max(key) + 1
        updated = session.execute(
            text("UPDATE sqlite_sequence SET seq = MAX(seq, :m) WHERE name = :t"),
            {"m": highest, "t": table.name},
        )
        if updated.rowcount == 0 and highest > 0:  # type: ignore[attr-defined]
            session.execute(
                text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :m)"),
                {"m": highest, "t": table.name},
            )
