"""The sync under real faults: the relay and the backfill SIGKILLed at random moments while
writes run, and PostgreSQL restarted under a running relay. Nothing acknowledged may be lost,
and no product's version may ever go backwards on the target.

Version order is watched by triggers planted in the target's database, so every single row
change is checked, not a sample: a write that lowers a row's version, a tombstone that moves
back, or a row brought back at or below its tombstone's version is recorded in a table the
test reads at the end.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from strangler.db import create_db_engine
from tests.support.databases import BACKENDS, database
from tests.support.factories import Account, new_account, new_product, unique
from tests.support.private_postgres import private_postgres
from tests.support.processes import monolith_env, run_monolith_command
from tests.support.waiting import wait_until
from tests.sync.conftest import SyncSystem, sync_system

pytestmark = pytest.mark.chaos

_SQLITE_WATCH = [
    "CREATE TABLE version_regressions (entity_key INTEGER, old_version INTEGER, "
    "new_version INTEGER, what TEXT)",
    "CREATE TRIGGER products_version_never_falls BEFORE UPDATE ON products "
    "WHEN NEW.version < OLD.version BEGIN INSERT INTO version_regressions "
    "VALUES (OLD.id, OLD.version, NEW.version, 'row'); END",
    "CREATE TRIGGER tombstone_version_never_falls BEFORE UPDATE ON products_tombstones "
    "WHEN NEW.version < OLD.version BEGIN INSERT INTO version_regressions "
    "VALUES (OLD.entity_key, OLD.version, NEW.version, 'tombstone'); END",
    "CREATE TRIGGER no_row_below_its_tombstone AFTER INSERT ON products "
    "WHEN EXISTS (SELECT 1 FROM products_tombstones t WHERE t.entity_key = NEW.id "
    "AND t.version >= NEW.version) BEGIN INSERT INTO version_regressions "
    "VALUES (NEW.id, NULL, NEW.version, 'resurrected'); END",
]
_POSTGRES_WATCH = [
    "CREATE TABLE version_regressions (entity_key bigint, old_version int, "
    "new_version int, what text)",
    """CREATE FUNCTION note_row_regression() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN INSERT INTO version_regressions VALUES (OLD.id, OLD.version, NEW.version, 'row');
       RETURN NEW; END $$""",
    """CREATE FUNCTION note_tombstone_regression() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN INSERT INTO version_regressions
       VALUES (OLD.entity_key, OLD.version, NEW.version, 'tombstone'); RETURN NEW; END $$""",
    """CREATE FUNCTION note_resurrection() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN IF EXISTS (SELECT 1 FROM products_tombstones t WHERE t.entity_key = NEW.id
       AND t.version >= NEW.version) THEN INSERT INTO version_regressions
       VALUES (NEW.id, NULL, NEW.version, 'resurrected'); END IF; RETURN NEW; END $$""",
    "CREATE TRIGGER products_version_never_falls BEFORE UPDATE ON products FOR EACH ROW "
    "WHEN (NEW.version < OLD.version) EXECUTE FUNCTION note_row_regression()",
    "CREATE TRIGGER tombstone_version_never_falls BEFORE UPDATE ON products_tombstones "
    "FOR EACH ROW WHEN (NEW.version < OLD.version) EXECUTE FUNCTION note_tombstone_regression()",
    "CREATE TRIGGER no_row_below_its_tombstone AFTER INSERT ON products FOR EACH ROW "
    "EXECUTE FUNCTION note_resurrection()",
]


def watch_versions(database_url: str) -> None:
    """Plant the triggers that record any version going backwards in this database."""
    engine = create_db_engine(database_url)
    statements = _POSTGRES_WATCH if engine.dialect.name == "postgresql" else _SQLITE_WATCH
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
    engine.dispose()


def version_regressions(database_url: str) -> list[dict[str, Any]]:
    engine = create_db_engine(database_url)
    with engine.connect() as connection:
        rows = [
            dict(r)
            for r in connection.execute(text("SELECT * FROM version_regressions")).mappings()
        ]
    engine.dispose()
    return rows


def versions(database_url: str) -> dict[int, int]:
    """Each live product's version, and each deleted one's as a negative tombstone version."""
    engine = create_db_engine(database_url)
    with engine.connect() as connection:
        live = {r[0]: r[1] for r in connection.execute(text("SELECT id, version FROM products"))}
        buried = connection.execute(text("SELECT entity_key, version FROM products_tombstones"))
        for key, version in buried:
            live.setdefault(key, -version)
    engine.dispose()
    return live


def _count(database_url: str, query: str) -> int:
    engine = create_db_engine(database_url)
    with engine.connect() as connection:
        count = connection.execute(text(query)).scalar_one()
    engine.dispose()
    return int(count)


def pending_events(database_url: str) -> int:
    return _count(database_url, "SELECT count(*) FROM products_outbox WHERE delivered_at IS NULL")


def outbox_count(database_url: str) -> int:
    return _count(database_url, "SELECT count(*) FROM products_outbox")


@dataclass
class WriteLoad:
    """Product writes through the monolith's API from several threads: stock and price
    changes, orders, deletes and new products. Keeps the highest version each product was
    acknowledged at, and which deletes were acknowledged, so the end state can be checked
    against what clients were told."""

    base_url: str
    writes: int
    rng: random.Random  # each worker thread's draws are seeded from it before any starts
    threads: int = 4
    pool: list[int] = field(default_factory=list)  # existing products to write to
    tolerate_failures: bool = False  # True while the database is being restarted
    done: int = 0
    server_errors: list[str] = field(default_factory=list)
    transport_errors: int = 0
    acked: dict[int, int] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _ack(self, product: dict[str, Any]) -> None:
        with self._lock:
            pid = product["id"]
            self.acked[pid] = max(self.acked.get(pid, 0), product["version"])

    def _worker(self, share: int, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            account = self._account(client)
            mine = list(self.pool) or [self._create(client, account) for _ in range(5)]
            for _ in range(share):
                if self.stop.is_set():
                    return
                try:
                    self._one(client, account, mine, rng)
                except httpx.TransportError:
                    if not self.tolerate_failures:
                        raise
                    with self._lock:
                        self.transport_errors += 1
                    time.sleep(0.05)  # a load generator's back-off while the server is down
                with self._lock:
                    self.done += 1

    def _account(self, client: httpx.Client) -> Account:
        for _ in range(200):
            try:
                return new_account(client)
            except (AssertionError, httpx.TransportError):
                if not self.tolerate_failures:
                    raise
                time.sleep(0.1)  # back-off while the server is down
        raise AssertionError("no account could be made")

    def _create(self, client: httpx.Client, account: Account) -> int:
        for _ in range(200):
            try:
                product = new_product(client, account, stock=10_000)
            except (AssertionError, httpx.TransportError):
                if not self.tolerate_failures:
                    raise
                time.sleep(0.1)  # back-off while the server is down
                continue
            self._ack(product)
            return int(product["id"])
        raise AssertionError("no product could be made")

    def _one(
        self, client: httpx.Client, account: Account, mine: list[int], rng: random.Random
    ) -> None:
        pid = rng.choice(mine)
        roll = rng.random()
        if roll < 0.45:
            body = {"stock": rng.randint(100, 10_000), "price": f"{rng.randint(1, 99)}.50"}
            r = client.patch(f"/products/{pid}", headers=account.headers, json=body)
        elif roll < 0.9:
            item = {"product_id": pid, "quantity": 1}
            r = client.post("/orders", headers=account.headers, json={"items": [item]})
        elif roll < 0.96:
            body = {"sku": unique("CHAOS"), "name": "Chaos", "price": "2.00", "stock": 50}
            r = client.post("/products", headers=account.headers, json=body)
            if r.status_code == 201:
                mine.append(r.json()["id"])
        else:
            r = client.delete(f"/products/{pid}", headers=account.headers)
            if r.status_code == 204:
                with self._lock:
                    self.deleted.add(pid)
                mine.remove(pid)
                if not mine:
                    mine.append(self._create(client, account))
        if r.status_code in (200, 201) and "version" in r.text:
            self._ack(r.json())
        if r.status_code >= 500:
            with self._lock:
                self.server_errors.append(f"{r.status_code} {r.text[:200]}")
            if not self.tolerate_failures:
                raise AssertionError(f"server error: {r.status_code} {r.text[:300]}")

    def run(self) -> None:
        workers = [
            threading.Thread(
                target=self._worker, args=(self.writes // self.threads, self.rng.getrandbits(64))
            )
            for _ in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run)
        thread.start()
        return thread


def assert_nothing_lost(system: SyncSystem, load: WriteLoad) -> dict[str, Any]:
    """The target holds every acknowledged write: at least the acknowledged version of each
    product, every acknowledged delete, and reconcile finds no difference at all."""
    target = versions(system.service_db)
    source = versions(system.monolith_db)
    behind = {
        pid: (version, target.get(pid))
        for pid, version in load.acked.items()
        if pid not in load.deleted and (target.get(pid) or 0) < version
    }
    assert behind == {}, f"acknowledged versions missing on the target: {list(behind.items())[:5]}"
    undeleted = [pid for pid in load.deleted if (target.get(pid) or 0) > 0]
    assert undeleted == [], f"acknowledged deletes not applied: {undeleted[:5]}"
    assert target == source
    assert version_regressions(system.service_db) == []
    report = system.reconcile()
    assert report["agree"], report["differences"][:5]
    return report


@pytest.fixture(params=BACKENDS)
def watched_system(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SyncSystem]:
    backend: str = request.param
    with (
        database(backend, tmp_path / "m") as monolith_db,
        database(backend, tmp_path / "s") as service_db,
        sync_system(backend, tmp_path, monolith_db, service_db) as running,
    ):
        watch_versions(service_db)
        yield running


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_the_relay_killed_20_times_during_10000_writes_loses_nothing(
    watched_system: SyncSystem, rng: random.Random
) -> None:
    system = watched_system
    system.set_phase("dual_write")
    writes, kills_wanted = 10_000, 20
    load = WriteLoad(system.monolith.base_url, writes, random.Random(rng.getrandbits(64)))
    # Kill at 20 random points of the write stream, so every kill lands while writes run.
    kill_points = sorted(rng.sample(range(writes // 50, writes - writes // 50), kills_wanted))
    writer = load.start()
    relay = system.cli_process("relay", "products", log="relay.log")
    kills = 0
    try:
        for point in kill_points:
            wait_until(
                lambda p=point: load.done >= p or not writer.is_alive(),
                f"{point} writes before the next kill",
                timeout=600,
                interval=0.01,
            )
            time.sleep(rng.uniform(0, 0.3))  # a random kill point: chaos, not synchronisation
            _kill(relay)
            kills += 1
            relay = system.cli_process("relay", "products", log="relay.log")
        writer.join()
    finally:
        _kill(relay)
    assert load.server_errors == []
    assert kills == kills_wanted
    left_for_the_drain = pending_events(system.monolith_db)
    produced = outbox_count(system.monolith_db)
    assert left_for_the_drain < produced  # the killed relays did deliver between kills
    drained = system.cli("relay", "products", "--until-drained")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert pending_events(system.monolith_db) == 0
    report = assert_nothing_lost(system, load)
    print(
        f"\n[chaos] relay x{kills} SIGKILL, {system.backend}: {load.done} writes sent, "
        f"{len(load.acked)} products, {len(load.deleted)} deleted, "
        f"{produced} events, {produced - left_for_the_drain} delivered by the killed relays, "
        f"{report['rows_target']} rows reconciled, 0 lost"
    )


_EXPORT_AFTER = re.compile(r"/internal/sync/products/export\?after=(\d+)")


def test_a_backfill_killed_10_times_under_writes_resumes_each_time_and_reconciles(
    watched_system: SyncSystem, tmp_path: Path, rng: random.Random
) -> None:
    system = watched_system
    rows, chunk = 30_000, 200
    env = monolith_env(system.monolith_db, system.workdir / "m")
    run_monolith_command(env, "seed", "--products", str(rows))
    system.set_phase("dual_write")
    checkpoint = system.workdir / "state" / "backfill-products.json"
    relay = system.cli_process("relay", "products", log="relay.log")
    load = WriteLoad(
        system.monolith.base_url,
        1_000_000,
        random.Random(rng.getrandbits(64)),
        threads=2,
        pool=list(range(1, rows)),
    )
    writer = load.start()
    stops: list[int] = []
    try:
        for _ in range(10):
            before = json.loads(checkpoint.read_text()) if checkpoint.exists() else {}
            backfill = system.cli_process("backfill", "products", "--chunk-size", str(chunk))
            # Let it apply 1 to 3 chunks past where it started, then kill it a moment later
            # (while it exports, imports or writes its checkpoint: wherever it happens to be).
            wanted = before.get("rows", 0) + rng.randint(1, 3) * chunk
            wait_until(
                lambda w=wanted: (
                    checkpoint.exists() and json.loads(checkpoint.read_text())["rows"] >= w
                ),
                f"the backfill's checkpoint past {wanted} rows",
                timeout=120,
                interval=0.005,
            )
            time.sleep(rng.uniform(0, 0.2))  # a random kill point: chaos, not synchronisation
            _kill(backfill)
            state = json.loads(checkpoint.read_text())
            assert state["after"] > before.get("after", 0) and not state["finished"], state
            stops.append(state["after"])
        final = system.cli("backfill", "products", "--chunk-size", str(chunk))
        assert final.returncode == 0, final.stdout + final.stderr
        assert f"resumed after key {stops[-1]}" in final.stdout, final.stdout
        after_backfill = load.done  # writes keep running after the backfill's last chunk
        wait_until(lambda: load.done >= after_backfill + 50, "50 writes after the backfill")
    finally:
        load.stop.set()
        writer.join()
        _kill(relay)
    assert load.server_errors == []
    drained = system.cli("relay", "products", "--until-drained")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    # Every run but the first started from a checkpoint: only one export began at key 0.
    afters = [int(a) for a in _EXPORT_AFTER.findall(system.monolith.log_text())]
    assert afters.count(0) == 1, afters[:20]
    report = assert_nothing_lost(system, load)
    print(
        f"\n[chaos] backfill x10 SIGKILL, {system.backend}: stopped after keys {stops}, "
        f"{load.done} writes during it, {report['rows_target']} rows reconciled, 0 lost"
    )


def test_postgresql_restarted_under_the_relay_is_survived_and_everything_arrives(
    tmp_path: Path, rng: random.Random
) -> None:
    with private_postgres() as server:
        monolith_db = server.create_database("monolith")
        service_db = server.create_database("service")
        with sync_system("postgresql", tmp_path, monolith_db, service_db) as system:
            watch_versions(service_db)
            system.set_phase("dual_write")
            relay = system.cli_process("relay", "products", log="relay.log")
            load = WriteLoad(system.monolith.base_url, 1_000_000, rng, tolerate_failures=True)
            writer = load.start()
            try:
                for mode in ("immediate", "fast", "immediate"):
                    time.sleep(3)  # writes and relaying go on between restarts: pacing
                    server.restart(mode)
                time.sleep(3)  # and after the last one
            finally:
                load.stop.set()
                writer.join()

            def drained() -> bool:
                if relay.poll() is not None:  # not retried: fails at once
                    raise AssertionError("the relay exited: " + _log(system, "relay.log"))
                return pending_events(monolith_db) == 0

            wait_until(drained, "the relay to drain the outbox", timeout=90, interval=0.2)
            assert relay.poll() is None, "the relay exited: " + _log(system, "relay.log")
            _kill(relay)
            assert pending_events(monolith_db) == 0
            assert "delivery failed" in _log(system, "relay.log")  # it did see the outage
            # A write the database could not take is a 503 to retry, never a bare 500.
            assert all(e.startswith("503 ") for e in load.server_errors), load.server_errors[:3]
            assert load.done > 0 and load.acked
            assert_nothing_lost(system, load)
            print(
                f"\n[chaos] PostgreSQL restarted 3 times under the relay: {load.done} writes "
                f"sent, {len(load.server_errors)} refused with 5xx and {load.transport_errors} "
                f"cut during the restarts (not acknowledged), {len(load.acked)} products, 0 lost"
            )


def _log(system: SyncSystem, name: str) -> str:
    return (system.workdir / name).read_text(errors="replace")[-3000:]


def test_watch_versions_catches_a_version_going_backwards(
    watched_system: SyncSystem, rng: random.Random
) -> None:
    """The guard above is real: plant a regression by hand and see it recorded."""
    engine = create_db_engine(watched_system.service_db)
    key = rng.randint(1, 1_000_000)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO products (id, sku, name, description, price_cents, stock, version) "
                "VALUES (:id, :sku, 'x', '', 100, 1, 5)"
            ),
            {"id": key, "sku": unique("SKU")},
        )
        connection.execute(text("UPDATE products SET version = 3 WHERE id = :id"), {"id": key})
    engine.dispose()
    recorded = version_regressions(watched_system.service_db)
    assert [(r["entity_key"], r["old_version"], r["new_version"]) for r in recorded] == [
        (key, 5, 3)
    ]
