"""The relay and the outbox under faults: kills, bad events, two relays, crashed backfills."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
import uuid

import httpx
import pytest
from sqlalchemy import MetaData, insert, select, text

from strangler.db import create_db_engine
from strangler.sync.tables import sync_tables
from tests.support.factories import new_account, new_product
from tests.support.problems import assert_problem
from tests.support.processes import monolith_env, run_monolith_command
from tests.sync.conftest import SYNC_TOKEN, SyncSystem


def _hammer(system: SyncSystem, writes: int, rng: random.Random, threads: int = 4) -> list[int]:
    """`writes` product writes through the monolith from several threads; returns 5xx codes.

    Each thread draws from a source of its own, seeded from `rng` before any starts, so what
    each one writes does not depend on how the threads are scheduled."""
    failures: list[int] = []
    per_thread = writes // threads

    def work(seed: int) -> None:
        draws = random.Random(seed)
        with system.monolith_client() as client:
            account = new_account(client)
            mine = [new_product(client, account, stock=10_000)["id"] for _ in range(5)]
            for _ in range(per_thread - 5):
                pid = draws.choice(mine)
                if draws.random() < 0.5:
                    r = client.patch(
                        f"/products/{pid}",
                        headers=account.headers,
                        json={"stock": draws.randint(100, 10_000)},
                    )
                else:
                    r = client.post(
                        "/orders",
                        headers=account.headers,
                        json={"items": [{"product_id": pid, "quantity": 1}]},
                    )
                if r.status_code >= 500:
                    failures.append(r.status_code)

    workers = [threading.Thread(target=work, args=(rng.getrandbits(64),)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return failures


@pytest.mark.chaos  # the quick form of tests/chaos/test_sync_faults.py's 20 kills
def test_a_relay_killed_at_random_moments_loses_nothing(
    system: SyncSystem, rng: random.Random
) -> None:
    system.set_phase("dual_write")
    done = threading.Event()
    result: list[list[int]] = []
    load = random.Random(rng.getrandbits(64))  # the writes' draws, apart from the kills'
    writer = threading.Thread(
        target=lambda: (result.append(_hammer(system, 2000, load)), done.set())
    )
    writer.start()
    kills = 0
    while not done.is_set():
        relay = system.cli_process("relay", "products", log="relay.log")
        time.sleep(rng.uniform(0.3, 1.2))
        relay.send_signal(signal.SIGKILL)
        relay.wait()
        kills += 1
    writer.join()
    assert result == [[]]
    assert kills >= 3
    drained = system.cli("relay", "products", "--until-drained")
    assert drained.returncode == 0, drained.stdout + drained.stderr
    report = system.reconcile()
    assert report["agree"], report["differences"][:5]
    assert report["rows_target"] == report["rows_source"] == 20


def test_two_relays_started_by_mistake_corrupt_nothing(
    system: SyncSystem, rng: random.Random
) -> None:
    system.set_phase("dual_write")
    relays = [system.cli_process("relay", "products", log=f"relay-{n}.log") for n in range(2)]
    try:
        assert _hammer(system, 600, rng) == []
    finally:
        for relay in relays:
            relay.terminate()
            relay.wait(timeout=30)
    assert system.cli("relay", "products", "--until-drained").returncode == 0
    assert system.reconcile()["agree"]


def test_a_dead_lettered_event_does_not_stop_the_rest(system: SyncSystem) -> None:
    system.set_phase("dual_write")
    with system.monolith_client() as client:
        account = new_account(client)
        before = new_product(client, account)
        tables = sync_tables(MetaData(), "products")
        engine = create_db_engine(system.monolith_db)
        with engine.begin() as connection:
            connection.execute(
                insert(tables.outbox).values(
                    event_id=str(uuid.uuid4()),
                    entity_key=999_999,
                    version=1,
                    op="upsert",
                    data=json.dumps({"name": "no sku, no price"}),
                    created_at=time.time(),
                )
            )
        after = new_product(client, account)
    drained = system.cli("relay", "products", "--until-drained")
    assert drained.returncode == 0, drained.stderr
    assert "dead letters 1" in drained.stdout
    with engine.connect() as connection:
        [dead] = connection.execute(select(tables.dead_letters)).mappings().all()
        pending = connection.execute(
            select(tables.outbox).where(tables.outbox.c.delivered_at.is_(None))
        ).all()
    engine.dispose()
    assert dead["entity_key"] == 999_999 and "lacks fields" in dead["reason"]
    assert pending == []
    with system.service_client() as service:
        assert service.get(f"/products/{before['id']}").status_code == 200
        assert service.get(f"/products/{after['id']}").status_code == 200


def test_a_crashed_backfill_resumes_where_it_stopped(system: SyncSystem) -> None:
    env = {**monolith_env(system.monolith_db, system.workdir / "m")}
    run_monolith_command(env, "seed", "--products", "3000")
    system.set_phase("dual_write")
    checkpoint = system.workdir / "state" / "backfill-products.json"
    backfill = system.cli_process("backfill", "products", "--chunk-size", "50", log="bf.log")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if checkpoint.exists() and json.loads(checkpoint.read_text())["rows"] >= 500:
            break
        time.sleep(0.02)
    backfill.send_signal(signal.SIGKILL)
    backfill.wait()
    stopped_at = json.loads(checkpoint.read_text())
    assert 0 < stopped_at["rows"] < 3000 and not stopped_at["finished"]
    resumed = system.cli("backfill", "products", "--chunk-size", "500")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed after key {stopped_at['after']}" in resumed.stdout
    assert system.reconcile()["agree"]


def test_dry_run_applies_nothing(system: SyncSystem) -> None:
    with system.monolith_client() as client:
        new_product(client, new_account(client))
    dry = system.cli("backfill", "products", "--dry-run")
    assert dry.returncode == 0 and "dry run: 1 rows" in dry.stdout
    report = system.reconcile()
    assert [d["kind"] for d in report["differences"]] == ["missing_in_target"]


def test_reconcile_and_backfill_say_what_to_do_without_a_token(system: SyncSystem) -> None:
    env = {**system.cli_env(), "STRANGLER_SYNC_TOKEN": ""}
    env.pop("STRANGLER_SYNC_TOKEN")
    result = subprocess.run(
        [
            *__import__("tests.sync.conftest", fromlist=["STRANGLER"]).STRANGLER,
            "reconcile",
            "products",
        ],
        env={**env, "STRANGLER_SYNC_TOKEN_FILE": str(system.workdir / "none")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no sync token" in result.stderr and "STRANGLER_SYNC_TOKEN" in result.stderr


def test_the_sync_endpoints_need_the_service_token(system: SyncSystem) -> None:
    batch = {"events": [{"entity": "products", "key": 1, "version": 1, "op": "delete"}]}
    for base in (system.monolith.base_url, system.service.base_url):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = httpx.post(
                f"{base}/internal/sync/products/events", json=batch, headers=headers
            )
            assert response.status_code == 401, (base, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        assert httpx.get(f"{base}/internal/sync/products/bounds").status_code == 401
        assert httpx.get(f"{base}/internal/sync/products/export").status_code == 401
        refused = httpx.post(f"{base}/internal/sync/products/import", content=b"[]\n")
        assert refused.status_code == 401


def test_a_malformed_import_chunk_is_refused_whole(system: SyncSystem) -> None:
    """The chunk's good first line must not land when a later line is bad: 422, nothing applied."""
    with system.monolith_client() as client:
        new_product(client, new_account(client))
    headers = {"Authorization": f"Bearer {SYNC_TOKEN}"}
    exported = httpx.get(
        f"{system.monolith.base_url}/internal/sync/products/export", headers=headers
    )
    assert exported.status_code == 200 and exported.headers["x-sync-rows"] == "1"
    bad = exported.content + b'[2, 1, "sku-2", "name", "", "not a number", 3]\n'
    answer = httpx.post(
        f"{system.service.base_url}/internal/sync/products/import",
        content=bad,
        headers={**headers, "Content-Type": "application/x-ndjson"},
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert "Nothing of this chunk was applied" in answer.json()["detail"]
    assert system.reconcile()["differences"][0]["kind"] == "missing_in_target"
    good = httpx.post(
        f"{system.service.base_url}/internal/sync/products/import",
        content=exported.content,
        headers={**headers, "Content-Type": "application/x-ndjson"},
    )
    assert good.status_code == 200 and good.json()["applied"] == 1
    assert system.reconcile()["differences"] == []


def test_both_sides_offer_the_row_hashes_their_database_can_compute(system: SyncSystem) -> None:
    """PostgreSQL sides hash rows in SQL (what makes reconcile cost about one aggregate query);
    each hash agrees across sides on equal rows and tells a changed row apart; a SQLite side
    refuses the SQL hash by name instead of answering with a hash nobody else computes."""
    with system.monolith_client() as client:
        account = new_account(client)
        for _ in range(5):
            new_product(client, account)
    system.set_phase("dual_write")
    assert system.cli("backfill", "products").returncode == 0
    headers = {"Authorization": f"Bearer {SYNC_TOKEN}"}
    sides = [system.monolith.base_url, system.service.base_url]
    offered = [
        httpx.get(f"{base}/internal/sync/products/bounds", headers=headers).json()["hashes"]
        for base in sides
    ]
    expected = ["pg-record", "blake2b-json"] if system.backend == "postgresql" else ["blake2b-json"]
    assert offered == [expected, expected]

    def sums(hash_name: str) -> list[tuple[int, int]]:
        answers = [
            httpx.post(
                f"{base}/internal/sync/products/checksums",
                json={"bounds": [[0, 1_000_000]], "hash": hash_name},
                headers=headers,
            )
            for base in sides
        ]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        return [
            (a.json()["ranges"][0]["count"], a.json()["ranges"][0]["checksum"]) for a in answers
        ]

    before = {name: sums(name) for name in expected}
    for source_sum, target_sum in before.values():
        assert source_sum == target_sum and source_sum[0] == 5
    engine = create_db_engine(system.service_db)
    with engine.begin() as connection:
        connection.execute(text("UPDATE products SET name = 'changed by hand' WHERE id = 3"))
    engine.dispose()
    for name in expected:
        source_sum, target_sum = sums(name)
        assert source_sum == before[name][0] and target_sum != source_sum, name
    if system.backend == "sqlite":
        refused = httpx.post(
            f"{system.service.base_url}/internal/sync/products/checksums",
            json={"bounds": [[0, 10]], "hash": "pg-record"},
            headers=headers,
        )
        assert_problem(refused, 422, "pg-record")


def test_a_batch_with_a_malformed_event_is_refused_whole(system: SyncSystem) -> None:
    """Two good events and one that is not an event: 422, and neither good one applies."""
    headers = {"Authorization": f"Bearer {SYNC_TOKEN}"}
    data = {"sku": "BATCH-1", "name": "n", "description": "", "price_cents": 100, "stock": 1}
    good = [
        {"entity": "products", "key": 900001, "version": 1, "op": "upsert", "data": data},
        {"entity": "products", "key": 900002, "version": 1, "op": "delete"},
    ]
    malformed = [
        {"entity": "products", "key": 900003, "version": 0, "op": "delete"},  # version >= 1
        {"entity": "products", "key": 900003, "version": 1, "op": "upsert"},  # upsert, no data
        {"entity": "products", "key": "three", "version": 1, "op": "delete"},
        {"entity": "products", "key": 900003, "version": 1, "op": "drop"},
        {"entity": "products", "key": 900003, "version": 1, "op": "delete", "extra": 1},
    ]
    url = f"{system.service.base_url}/internal/sync/products/events"
    for bad in malformed:
        answer = httpx.post(url, json={"events": [*good, bad]}, headers=headers)
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    rows = httpx.get(
        f"{system.service.base_url}/internal/sync/products/rows",
        params={"lo": 900000, "hi": 900010},
        headers=headers,
    )
    assert rows.json()["rows"] == []
    assert httpx.post(url, json={"events": good}, headers=headers).status_code == 200


def test_a_backfill_carries_deletes_made_while_no_events_were_recorded(
    system: SyncSystem,
) -> None:
    """Found by the sync model: an export holds live rows only, so a product deleted after a
    rollback to phase monolith (which records no change events) stayed on the service."""
    system.set_phase("dual_write")
    with system.monolith_client() as client:
        account = new_account(client)
        kept, gone = new_product(client, account), new_product(client, account)
    assert system.cli("relay", "products", "--until-drained").returncode == 0
    system.set_phase("monolith")  # rolled back: writes here record no event now
    with system.monolith_client() as client:
        deleted = client.delete(f"/products/{gone['id']}", headers=account.headers)
        assert deleted.status_code == 204, deleted.text
    system.set_phase("dual_write")
    backfill = system.cli("backfill", "products", "--restart")
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    assert "1 deletes carried" in backfill.stdout, backfill.stdout
    with system.service_client() as service:
        assert service.get(f"/products/{gone['id']}").status_code == 404
        assert service.get(f"/products/{kept['id']}").status_code == 200
    assert system.reconcile()["agree"]
    again = system.cli("backfill", "products", "--restart")  # idempotent: nothing new
    assert "0 deletes carried" in again.stdout, again.stdout
