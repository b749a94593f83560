"""The README's step 3 walkthrough, through real processes and the CLI: dual-write, backfill
under live writes, reconcile to zero, a row broken by hand found and repaired."""

from __future__ import annotations

import random
import threading
from collections import Counter

import httpx
from sqlalchemy import text

from strangler.db import create_db_engine
from tests.support.factories import new_account, new_product, unique
from tests.sync.conftest import SyncSystem, outbox_rows


def _writes(
    system: SyncSystem,
    product_ids: list[int],
    stop: threading.Event,
    errors: list[str],
    rng: random.Random,
    done: Counter[str],
) -> None:
    """Random writes through the monolith until `stop`; a 5xx answer is recorded in `errors`,
    each product created or deleted is counted in `done`."""
    with system.monolith_client() as client:
        account = new_account(client)
        while not stop.is_set():
            pid = rng.choice(product_ids)
            roll = rng.random()
            if roll < 0.5:
                r = client.patch(
                    f"/products/{pid}",
                    headers=account.headers,
                    json={"price": f"{rng.randint(1, 99)}.{rng.randint(0, 99):02d}"},
                )
            elif roll < 0.8:
                r = client.post(
                    "/orders",
                    headers=account.headers,
                    json={"items": [{"product_id": pid, "quantity": 1}]},
                )
            elif roll < 0.9:
                r = client.post(
                    "/products",
                    headers=account.headers,
                    json={"sku": unique("LIVE"), "name": "Live", "price": "1.00", "stock": 3},
                )
                done["created"] += r.status_code == 201
            else:
                r = client.delete(f"/products/{pid}", headers=account.headers)
                done["deleted"] += r.status_code == 204
            if r.status_code >= 500:
                errors.append(f"{r.status_code} {r.text}")


def test_backfill_under_live_writes_then_reconcile_finds_and_repairs_a_broken_row(
    system: SyncSystem, rng: random.Random
) -> None:
    with system.monolith_client() as client:
        account = new_account(client)
        ids = [new_product(client, account, stock=50)["id"] for _ in range(120)]
    assert outbox_rows(system.monolith_db) == []  # phase monolith: nothing is recorded

    system.set_phase("dual_write")
    relay = system.cli_process("relay", "products")
    stop, errors, done = threading.Event(), [], Counter[str]()
    writer = threading.Thread(target=_writes, args=(system, ids, stop, errors, rng, done))
    writer.start()
    try:
        backfill = system.cli("backfill", "products", "--chunk-size", "25")
    finally:
        stop.set()
        writer.join()
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    assert "rows/s" in backfill.stdout
    assert errors == []
    drained = system.cli("relay", "products", "--until-drained")
    relay.terminate()
    relay.wait(timeout=30)
    assert drained.returncode == 0, drained.stderr

    report = system.reconcile()
    assert report["agree"], report["differences"][:5]
    # As many rows as the writes left, however many the draws and the timing made.
    expected = len(ids) + done["created"] - done["deleted"]
    assert report["rows_source"] == report["rows_target"] == expected, dict(done)

    with system.service_client() as service:
        victim = service.get("/products", params={"limit": 10}).json()["items"][5]["id"]
    engine = create_db_engine(system.service_db)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE products SET name = 'broken by hand' WHERE id = :id"), {"id": victim}
        )
    engine.dispose()
    found = system.cli("reconcile", "products")
    assert found.returncode == 1
    assert "content_differs" in found.stdout and str(victim) in found.stdout
    fixed = system.cli("reconcile", "products", "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "repaired 1; now 0 difference(s)" in fixed.stdout
    with httpx.Client(base_url=system.service.base_url) as service, system.monolith_client() as m:
        assert service.get(f"/products/{victim}").json() == m.get(f"/products/{victim}").json()
    assert system.cli("reconcile", "products").returncode == 0
