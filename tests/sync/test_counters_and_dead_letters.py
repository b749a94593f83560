"""64-bit versions end to end, an event the relay cannot build, and the dead letters that stop
writes from changing sides until they are resolved; real monolith and service processes on
both databases."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import MetaData, insert, select, update
from sqlalchemy.orm import Session

from strangler.db import create_db_engine
from strangler.phases import Side
from strangler.sync.client import SyncClient
from strangler.sync.outbox import outbox_lag
from strangler.sync.tables import sync_tables
from strangler.write_switch import SwitchFailed, _refuse_dead_letters
from tests.support.factories import new_account, new_product
from tests.sync.conftest import SQLITE_EVERYDAY, SYNC_TOKEN, SyncSystem

TABLES = sync_tables(MetaData(), "products")
PAST_32_BITS = 2**31 - 1  # the next write makes it 2^31: an INTEGER column on PostgreSQL
# could not hold it


@SQLITE_EVERYDAY
def test_a_version_past_32_bits_is_written_relayed_and_applied(system: SyncSystem) -> None:
    system.set_phase("dual_write")
    with system.monolith_client() as client:
        account = new_account(client)
        product = new_product(client, account)
        engine = create_db_engine(system.monolith_db)
        try:
            with engine.begin() as connection:
                connection.execute(
                    update(_products())
                    .where(_products().c.id == product["id"])
                    .values(version=PAST_32_BITS)
                )
        finally:
            engine.dispose()
        changed = client.patch(
            f"/products/{product['id']}", headers=account.headers, json={"name": "past 2^31"}
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["version"] == 2**31
    drained = system.cli("relay", "products", "--until-drained")
    assert drained.returncode == 0, drained.stderr
    with system.service_client() as service:
        copy = service.get(f"/products/{product['id']}").json()
    assert (copy["name"], copy["version"]) == ("past 2^31", 2**31)


def _products() -> object:
    from legacy_monolith.products.models import Product

    return Product.__table__


@SQLITE_EVERYDAY
def test_an_event_the_relay_cannot_build_is_dead_lettered_not_retried_forever(
    system: SyncSystem,
) -> None:
    """A version of 0 (the protocol starts at 1) written into the outbox by hand: before, the
    relay failed to build the batch, retried it forever and delivered nothing else."""
    system.set_phase("dual_write")
    engine = create_db_engine(system.monolith_db)
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(TABLES.outbox).values(
                    event_id=str(uuid.uuid4()),
                    entity_key=424_242,
                    version=0,
                    op="upsert",
                    data=json.dumps({"name": "never valid"}),
                    created_at=time.time(),
                )
            )
        with system.monolith_client() as client:
            after = new_product(client, new_account(client))
        drained = system.cli("relay", "products", "--until-drained", timeout=120)
        assert drained.returncode == 0, drained.stderr
        with engine.connect() as connection:
            [dead] = connection.execute(select(TABLES.dead_letters)).mappings().all()
            pending = connection.execute(
                select(TABLES.outbox).where(TABLES.outbox.c.delivered_at.is_(None))
            ).all()
    finally:
        engine.dispose()
    assert dead["entity_key"] == 424_242 and "cannot be sent" in dead["reason"]
    assert pending == []
    with system.service_client() as service:
        assert service.get(f"/products/{after['id']}").status_code == 200


@SQLITE_EVERYDAY
def test_writes_cannot_change_sides_while_a_dead_letter_is_unresolved(
    system: SyncSystem,
) -> None:
    """A dead letter is a write the other side lacks: a switch (or a rollback) refuses,
    naming it and what resolves it, until a reconcile finds both sides agreeing."""
    engine = create_db_engine(system.monolith_db)
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(TABLES.dead_letters).values(
                    event_id=str(uuid.uuid4()),
                    entity_key=77,
                    version=3,
                    op="upsert",
                    data=None,
                    reason="the target refused it",
                    failed_at=time.time(),
                )
            )
    finally:
        engine.dispose()
    monolith = SyncClient(system.monolith.base_url, SYNC_TOKEN, "products")
    try:
        with pytest.raises(SwitchFailed) as refused:
            _refuse_dead_letters(monolith, "products", Side.MONOLITH)
        assert "key 77 v3 (the target refused it)" in str(refused.value)
        assert "strangler reconcile products --repair" in refused.value.hint
        assert monolith.lag()["dead_letters"] == 1
        agreed = system.cli("reconcile", "products")  # what the refusal's hint says to run
        assert agreed.returncode == 0, agreed.stdout + agreed.stderr
        assert "1 dead letter(s) marked resolved" in agreed.stdout
        _refuse_dead_letters(monolith, "products", Side.MONOLITH)  # resolved: no refusal
        assert monolith.lag()["dead_letters"] == 0
    finally:
        monolith.close()


def test_an_unresolved_dead_letter_keeps_its_outbox_position_pending(tmp_path: Path) -> None:
    """Read-your-writes pins end when the outbox is delivered past the write. A rejected
    event is marked delivered, though the other side lacks its write: its dead letter keeps
    the position pending until it is resolved."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'side.db'}")
    metadata = MetaData()
    tables = sync_tables(metadata, "products")
    metadata.create_all(engine)
    try:
        with engine.begin() as connection:
            for n in range(1, 4):
                connection.execute(
                    insert(tables.outbox).values(
                        id=n,
                        event_id=str(uuid.uuid4()),
                        entity_key=n,
                        version=1,
                        op="upsert",
                        data="{}",
                        created_at=time.time(),
                        delivered_at=time.time(),
                    )
                )
            connection.execute(
                insert(tables.dead_letters).values(
                    event_id=str(uuid.uuid4()),
                    entity_key=2,
                    version=1,
                    op="upsert",
                    reason="refused",
                    failed_at=time.time(),
                    outbox_id=2,
                )
            )
        with Session(engine) as session:
            lag = outbox_lag(session, tables)
            assert (lag.pending, lag.first_pending_id, lag.dead_letters) == (0, 2, 1)
        with engine.begin() as connection:
            connection.execute(update(tables.dead_letters).values(resolved_at=time.time()))
        with Session(engine) as session:
            lag = outbox_lag(session, tables)
            assert (lag.first_pending_id, lag.dead_letters) == (None, 0)
    finally:
        engine.dispose()
