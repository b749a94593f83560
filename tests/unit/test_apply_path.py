"""The one apply path: newer versions only, tombstones, redelivery and reordering."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select
from sqlalchemy.orm import Session

from strangler.sync.apply import EntitySpec, apply_events
from strangler.sync.events import ChangeEvent
from strangler.sync.tables import sync_tables


def _spec() -> tuple[EntitySpec, MetaData]:
    metadata = MetaData()
    table = Table(
        "things",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("name", String(50), unique=True),
        Column("version", Integer, nullable=False),
    )
    stones = sync_tables(metadata, "things").tombstones
    return EntitySpec("things", table, stones, ("name",)), metadata


@pytest.fixture
def target() -> Iterator[tuple[Session, EntitySpec]]:
    spec, metadata = _spec()
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with Session(engine) as session:
        yield session, spec
    engine.dispose()


def _up(key: int, version: int, name: str | None = None) -> ChangeEvent:
    return ChangeEvent(
        entity="things",
        key=key,
        version=version,
        op="upsert",
        data={"name": name or f"n{key}v{version}"},
    )


def _gone(key: int, version: int) -> ChangeEvent:
    return ChangeEvent(entity="things", key=key, version=version, op="delete")


def _state(session: Session, spec: EntitySpec) -> dict[int, tuple[int, str]]:
    rows = session.execute(select(spec.table.c.id, spec.table.c.version, spec.table.c.name))
    return {r[0]: (r[1], r[2]) for r in rows}


def test_versions_1_2_3_2_leave_version_3(target: tuple[Session, EntitySpec]) -> None:
    session, spec = target
    outcomes = apply_events(session, spec, [_up(1, 1), _up(1, 2), _up(1, 3), _up(1, 2)])
    assert [o.outcome for o in outcomes] == ["applied", "applied", "applied", "duplicate"]
    assert _state(session, spec) == {1: (3, "n1v3")}


def test_a_late_upsert_cannot_resurrect_a_deleted_row(target: tuple[Session, EntitySpec]) -> None:
    session, spec = target
    apply_events(session, spec, [_up(1, 1), _gone(1, 3)])
    outcome = apply_events(session, spec, [_up(1, 2)])
    assert outcome[0].outcome == "duplicate"
    assert _state(session, spec) == {}
    apply_events(session, spec, [_up(1, 4)])
    assert _state(session, spec) == {1: (4, "n1v4")}


def test_a_bad_event_is_rejected_and_the_rest_still_apply(
    target: tuple[Session, EntitySpec],
) -> None:
    session, spec = target
    bad = ChangeEvent(entity="things", key=2, version=1, op="upsert", data={"colour": "red"})
    clash = _up(3, 1, name="n1v1")  # unique name taken by key 1
    wrong = ChangeEvent(entity="things", key=5, version=1, op="upsert", data={"name": 7})
    long = _up(6, 1, name="x" * 51)  # String(50): SQLite would store it, PostgreSQL refuse
    outcomes = apply_events(session, spec, [_up(1, 1), bad, clash, _up(4, 1), wrong, long])
    assert [o.outcome for o in outcomes] == [
        *("applied", "rejected", "rejected", "applied", "rejected", "rejected")
    ]
    assert "lacks fields: name" in (outcomes[1].reason or "")
    assert "name: '7' does not fit a column of type VARCHAR(50)" in (outcomes[4].reason or "")
    assert "does not fit" in (outcomes[5].reason or "")
    assert _state(session, spec) == {1: (1, "n1v1"), 4: (1, "n4v1")}


@settings(max_examples=60, deadline=None)
@given(
    histories=st.dictionaries(st.integers(1, 6), st.integers(1, 6), min_size=1, max_size=6),
    deletes=st.sets(st.integers(1, 6)),
    seed=st.integers(),
)
def test_any_delivery_order_with_duplicates_converges_to_the_source(
    histories: dict[int, int], deletes: set[int], seed: int
) -> None:
    """Each key's writes v1..vN (and maybe a delete after), delivered shuffled with repeats,
    end in exactly the state a perfectly ordered delivery gives."""
    events = []
    for key, last in histories.items():
        events += [_up(key, v, f"k{key}v{v}") for v in range(1, last + 1)]
        if key in deletes:
            events.append(_gone(key, last + 1))
    rng = random.Random(seed)
    delivered = events + rng.sample(events, k=len(events) // 2)
    rng.shuffle(delivered)
    spec, metadata = _spec()
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with Session(engine) as session:
        apply_events(session, spec, delivered)
        expected = {k: (v, f"k{k}v{v}") for k, v in histories.items() if k not in deletes}
        assert _state(session, spec) == expected
    engine.dispose()


def test_later_batches_update_rows_in_place(target: tuple[Session, EntitySpec]) -> None:
    session, spec = target
    apply_events(session, spec, [_up(1, 1), _up(2, 1)])
    outcomes = apply_events(session, spec, [_up(2, 3), _up(1, 2), _up(2, 2), _gone(1, 3)])
    assert [o.outcome for o in outcomes] == ["applied", "applied", "duplicate", "applied"]
    assert _state(session, spec) == {2: (3, "n2v3")}


def test_a_unique_value_moving_between_rows_applies_in_one_batch(
    target: tuple[Session, EntitySpec],
) -> None:
    """The source gives name X from key 2 to key 1; key order meets key 1's event first."""
    session, spec = target
    apply_events(session, spec, [_up(1, 1, "W"), _up(2, 1, "X")])
    outcomes = apply_events(session, spec, [_up(2, 2, "Y"), _up(1, 2, "X")])
    assert [o.outcome for o in outcomes] == ["applied", "applied"]
    assert _state(session, spec) == {1: (2, "X"), 2: (2, "Y")}
