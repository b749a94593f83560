"""The write barrier in a side's own database (strangler.sync.barrier), on both databases:
a closed barrier refuses a write in its own transaction, closing it waits for the writes in
flight, and a transaction asks the phase once.

The barrier held end to end, with writes sent around the proxy while writes change sides, is
tests/e2e/test_write_switch_interleavings.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomlkit
from sqlalchemy import Column, Engine, Integer, MetaData, Table, insert, select

from strangler.db import Sessions, create_db_engine
from strangler.phases import Phase, PhaseFile
from strangler.sync.barrier import (
    BarrierBusy,
    WritesRefused,
    read_barrier,
    require_writes_here,
    set_barrier,
    transaction_phase,
)
from strangler.sync.tables import SyncTables, sync_tables
from tests.support.databases import BACKENDS, database, lock_waiters
from tests.support.factories import new_account, product_body
from tests.support.waiting import wait_until
from tests.sync.conftest import SQLITE_EVERYDAY, SyncSystem


class Side:
    """A database holding the sync tables and one table an app writes."""

    def __init__(self, engine: Engine) -> None:
        metadata = MetaData()
        self.tables: SyncTables = sync_tables(metadata, "products")
        self.rows = Table("rows", metadata, Column("id", Integer, primary_key=True))
        metadata.create_all(engine)
        self.engine = engine
        self.sessions = Sessions(engine)
        self.set(None)  # the row every side's migration makes: following the phase

    def write(self, row: int, *, by_phase: bool = True) -> None:
        """A write as the apps make it: the change, then the barrier, then the commit."""
        with self.sessions.write() as session:
            session.execute(insert(self.rows).values(id=row))
            require_writes_here(session, self.tables, by_phase=by_phase)
            session.commit()

    def stored(self) -> set[int]:
        with self.engine.connect() as connection:
            return set(connection.scalars(select(self.rows.c.id)))

    def set(self, here: bool | None, wait_seconds: float = 10.0) -> None:
        with self.sessions.write() as session:
            set_barrier(session, self.tables, here, wait_seconds=wait_seconds)

    def barrier(self) -> bool | None:
        with self.sessions.read() as session:
            return read_barrier(session, self.tables)


@pytest.fixture(params=BACKENDS)
def side(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Side]:
    with database(request.param, tmp_path) as url:
        engine = create_db_engine(url)
        try:
            yield Side(engine)
        finally:
            engine.dispose()


def test_a_closed_barrier_refuses_the_write_and_nothing_of_it_commits(side: Side) -> None:
    side.write(1)  # no row yet: the barrier follows the phase, which allows it
    with pytest.raises(WritesRefused):
        side.write(2, by_phase=False)  # following a phase that gives the writes away
    side.set(False)
    with pytest.raises(WritesRefused):
        side.write(3)  # the phase would allow it; the barrier does not
    side.set(True)
    side.write(4, by_phase=False)  # open: the barrier decides, whatever the phase says
    side.set(None)
    side.write(5)
    assert side.stored() == {1, 4, 5}
    assert side.barrier() is None


def test_closing_the_barrier_waits_for_the_write_in_flight_then_refuses_the_next(
    side: Side,
) -> None:
    """A write that passed the barrier before the close commits; the close answers only
    after it; every write after the close is refused. The close is run while the write's
    transaction is open (it holds the barrier row on PostgreSQL, the write lock on SQLite)."""
    closed = threading.Event()
    with side.sessions.write() as session:
        session.execute(insert(side.rows).values(id=1))
        require_writes_here(session, side.tables, by_phase=True)
        closer = threading.Thread(target=lambda: (side.set(False), closed.set()))
        closer.start()
        if side.engine.dialect.name == "postgresql":
            wait_until(lambda: lock_waiters(side.engine) > 0, "the close to wait on the barrier")
        assert not closed.is_set()
        session.commit()
    closer.join(timeout=30)
    assert closed.is_set()
    with pytest.raises(WritesRefused):
        side.write(2)
    assert side.stored() == {1}


def test_a_close_that_cannot_get_the_barrier_in_time_changes_nothing(
    tmp_path: Path,
) -> None:
    """PostgreSQL's bounded wait (SQLite waits for its write lock like any writer)."""
    with database("postgresql", tmp_path) as url:
        engine = create_db_engine(url)
        try:
            side = Side(engine)
            side.set(True)
            with side.sessions.write() as session:
                session.execute(insert(side.rows).values(id=1))
                require_writes_here(session, side.tables, by_phase=False)
                with pytest.raises(BarrierBusy):
                    side.set(False, wait_seconds=0.2)
                session.commit()
            assert side.barrier() is True and side.stored() == {1}
        finally:
            engine.dispose()


def test_a_transaction_reads_the_phase_once_however_often_it_asks(tmp_path: Path) -> None:
    """The flip between two reads of the phase that used to let a write commit with no event
    recorded: inside one transaction the answer stays the one first read; the next
    transaction reads the file again."""
    routing = tmp_path / "routing.toml"

    def phase_is(phase: Phase) -> None:
        routing.write_text(tomlkit.dumps({"capabilities": {"products": {"phase": phase.value}}}))

    phase_is(Phase.READS_CUTOVER)
    phases = PhaseFile(routing, "products")
    engine = create_db_engine(f"sqlite:///{tmp_path / 'side.db'}")
    try:
        sessions = Sessions(engine)
        with sessions.write() as session:
            assert transaction_phase(session, phases) is Phase.READS_CUTOVER
            phase_is(Phase.WRITES_CUTOVER)
            assert phases.reread() is Phase.WRITES_CUTOVER  # the file did change
            assert transaction_phase(session, phases) is Phase.READS_CUTOVER
            session.commit()
            assert transaction_phase(session, phases) is Phase.WRITES_CUTOVER
    finally:
        engine.dispose()


@SQLITE_EVERYDAY
def test_the_barrier_command_shows_and_sets_both_sides(system: SyncSystem) -> None:
    """The escape hatch after a hand edit moved writes: `strangler barrier`. With the
    service given the writes, the monolith refuses a product write (503) whatever the phase
    says, and the service takes one."""
    shown = system.cli("barrier", "products", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["writes_here"] == {"monolith": None, "service": None}
    system.set_phase("writes_cutover")  # a hand edit, as the escape hatch does it
    moved = system.cli("barrier", "products", "--writes-to", "service")
    assert moved.returncode == 0, moved.stderr
    assert "monolith: refuses writes" in moved.stdout
    assert "service: takes writes" in moved.stdout
    system.set_phase("reads_cutover")  # the file says the monolith; the barrier decides
    with system.monolith_client() as monolith:
        account = new_account(monolith)
        refused = monolith.post("/products", headers=account.headers, json=product_body())
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
