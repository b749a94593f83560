"""The sync API's reads do not take the write lock, and the relay prunes on its schedule."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import MetaData

from strangler.db import create_db_engine
from strangler.sync.client import SyncClient
from strangler.sync.relay import Relay
from strangler.sync.tables import sync_tables
from tests.sync.conftest import SYNC_TOKEN, SyncSystem


@pytest.mark.parametrize("system", ["sqlite"], indirect=True)  # PostgreSQL reads never wait
def test_reconcile_and_backfill_reads_are_served_while_a_writer_holds_sqlite(
    system: SyncSystem,
) -> None:
    """A reconcile or a backfill reads whole tables: in a write session (BEGIN IMMEDIATE on
    SQLite) they held the write lock, and took it only when no writer had it. Read sessions
    are served while another connection holds the write lock. The client's 10 s deadline is
    the test's bound, a third of the 30 s the app would wait for the lock."""
    path = system.service_db.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, timeout=30)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the database's write lock
        headers = {"Authorization": f"Bearer {SYNC_TOKEN}"}
        with httpx.Client(
            base_url=f"{system.service.base_url}/internal/sync/products",
            headers=headers,
            timeout=10,
        ) as client:
            answers = [
                client.get("/bounds"),
                client.post("/checksums", json={"bounds": [[0, 1000]]}),
                client.get("/rows", params={"lo": 0, "hi": 1000}),
                client.get("/export", params={"after": 0, "limit": 10}),
                client.get("/tombstones"),
                client.get("/lag"),
            ]
    finally:
        holder.rollback()
        holder.close()
    assert [a.status_code for a in answers] == [200] * len(answers)


class _NoTarget(SyncClient):
    def __init__(self) -> None:  # nothing is ever delivered in this test
        pass


def test_the_relay_prunes_once_a_minute_however_often_it_is_run(tmp_path: Path) -> None:
    """`strangler relay` runs the relay in one-second rounds; the prune schedule was reset
    each round, so it pruned (a write transaction) every second."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'side.db'}")
    metadata = MetaData()
    tables = sync_tables(metadata, "products")
    metadata.create_all(engine)
    now = [1000.0]
    relay = Relay(engine, tables, "products", _NoTarget(), clock=lambda: now[0])
    pruned: list[float] = []
    relay.prune = lambda older_than_seconds: pruned.append(now[0]) or 0  # type: ignore[method-assign]
    try:
        for _ in range(5):  # five rounds within one second of clock time
            relay.run(threading.Event(), until_drained=True)
            now[0] += 0.2
        assert pruned == [1000.0]
        now[0] += 60
        relay.run(threading.Event(), until_drained=True)
        assert len(pruned) == 2
    finally:
        engine.dispose()
