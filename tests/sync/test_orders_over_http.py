"""After writes cut over, orders take stock from the products service over HTTP: once per
request however often it is retried, given back when the order cannot be placed."""

from __future__ import annotations

import time
import uuid

import httpx

from tests.support.factories import new_account, new_product
from tests.support.problems import assert_problem
from tests.sync.conftest import SYNC_TOKEN, SyncSystem


def _cut_writes_over(system: SyncSystem, stock: int) -> list[int]:
    with system.monolith_client() as client:
        account = new_account(client)
        ids = [new_product(client, account, stock=stock)["id"] for _ in range(3)]
    system.set_phase("dual_write")
    assert system.cli("backfill", "products").returncode == 0
    for phase in ("backfilled", "shadow", "canary", "reads_cutover", "writes_cutover"):
        system.set_phase(phase)
    return ids


def _stock(client: httpx.Client, product_id: int) -> int:
    value: int = client.get(f"/products/{product_id}").json()["stock"]
    return value


def test_orders_take_stock_from_the_service_once_per_request(system: SyncSystem) -> None:
    ids = _cut_writes_over(system, stock=10)
    with system.monolith_client() as monolith, system.service_client() as service:
        account = new_account(monolith)
        key = str(uuid.uuid4())
        body = {"items": [{"product_id": ids[0], "quantity": 3}]}
        headers = {**account.headers, "Idempotency-Key": key}
        first = monolith.post("/orders", json=body, headers=headers)
        again = monolith.post("/orders", json=body, headers=headers)
        assert first.status_code == again.status_code == 201, first.text
        assert first.json() == again.json()
        assert _stock(service, ids[0]) == 7
        refused = monolith.post(
            "/orders",
            headers=account.headers,
            json={"items": [{"product_id": ids[1], "quantity": 11}]},
        )
        assert_problem(refused, 409, f"product {ids[1]}")
        assert _stock(service, ids[1]) == 10
    drained = system.cli("relay", "products", "--until-drained")  # reverse: service -> monolith
    assert drained.returncode == 0, drained.stderr
    with system.monolith_client() as monolith:
        assert _stock(monolith, ids[0]) == 7  # the way back is kept current
    assert system.reconcile()["agree"]


def test_with_the_service_down_nothing_is_ordered(system: SyncSystem) -> None:
    ids = _cut_writes_over(system, stock=5)
    system.service.process.terminate()
    system.service.process.wait(timeout=10)
    with system.monolith_client() as monolith:
        account = new_account(monolith)
        response = monolith.post(
            "/orders",
            headers=account.headers,
            json={"items": [{"product_id": ids[0], "quantity": 1}]},
        )
        assert_problem(response, 503, "nothing was ordered")
        assert monolith.get("/orders", headers=account.headers).json() == []


def test_a_reservation_released_before_it_arrives_takes_nothing(system: SyncSystem) -> None:
    ids = _cut_writes_over(system, stock=5)
    headers = {"Authorization": f"Bearer {SYNC_TOKEN}"}
    with system.service_client() as service:
        late = "order-late-1"
        released = service.delete(f"/internal/products/reservations/{late}", headers=headers)
        assert released.json()["status"] == "released"
        reserve = service.post(
            "/internal/products/reservations",
            headers=headers,
            json={"reservation_id": late, "items": [{"product_id": ids[0], "quantity": 2}]},
        )
        assert_problem(reserve, 409, "already released")
        taken = service.post(
            "/internal/products/reservations",
            headers=headers,
            json={"reservation_id": "order-ok-1", "items": [{"product_id": ids[0], "quantity": 2}]},
        )
        assert taken.status_code == 201
        service.post(
            "/internal/products/reservations",
            headers=headers,
            json={"reservation_id": "order-ok-1", "items": [{"product_id": ids[0], "quantity": 2}]},
        )
        assert _stock(service, ids[0]) == 3
        service.delete("/internal/products/reservations/order-ok-1", headers=headers)
        service.delete("/internal/products/reservations/order-ok-1", headers=headers)
        assert _stock(service, ids[0]) == 5
        assert_problem(service.post("/internal/products/reservations", json={}), 401)


def test_a_slow_service_leaks_no_stock_and_retries_count_once(system: SyncSystem) -> None:
    """Plant the fault: the service's answers arrive after the monolith stopped waiting, so
    every reservation lands on the service but its acknowledgement is lost."""
    ids = _cut_writes_over(system, stock=10)
    with system.monolith_client() as monolith, system.service_client() as service:
        account = new_account(monolith)
        system.fault.delay_seconds = 1.5  # the monolith waits 1.0 s per attempt
        slow = monolith.post(
            "/orders",
            headers=account.headers,
            json={"items": [{"product_id": ids[0], "quantity": 4}]},
        )
        assert_problem(slow, 503, "nothing was ordered")
        system.fault.delay_seconds = 0
        deadline = time.monotonic() + 10
        while _stock(service, ids[0]) != 10 and time.monotonic() < deadline:
            time.sleep(0.1)  # the delayed release is still on its way
        assert _stock(service, ids[0]) == 10
        assert monolith.get("/orders", headers=account.headers).json() == []

        system.fault.delay_seconds = 0.6  # slow, but within the timeout
        placed = monolith.post(
            "/orders",
            headers={**account.headers, "Idempotency-Key": "k1"},
            json={"items": [{"product_id": ids[0], "quantity": 4}]},
        )
        assert placed.status_code == 201, placed.text
        system.fault.delay_seconds = 0
        assert _stock(service, ids[0]) == 6


def test_the_service_refuses_writes_while_the_monolith_takes_them(system: SyncSystem) -> None:
    """After a rollback moves writes back, a write that still reaches the service (a late one
    the proxy gave up on, or one sent around the proxy) must be refused, not kept where the
    forward sync would overwrite it and nothing carries it back."""
    ids = _cut_writes_over(system, stock=5)
    with system.monolith_client() as monolith, system.service_client() as service:
        account = new_account(monolith)
        taken = service.patch(f"/products/{ids[0]}", json={"name": "B"}, headers=account.headers)
        assert taken.status_code == 200, taken.text
        system.set_phase("reads_cutover")  # rolled back: the monolith takes writes again
        refused = service.patch(f"/products/{ids[0]}", json={"name": "C"}, headers=account.headers)
        assert_problem(refused, 503)
        assert refused.headers["retry-after"] == "1"
        assert "written by the monolith" in refused.json()["detail"]
        reserve = service.post(
            "/internal/products/reservations",
            json={
                "reservation_id": str(uuid.uuid4()),
                "items": [{"product_id": ids[0], "quantity": 1}],
            },
            headers={"Authorization": f"Bearer {SYNC_TOKEN}"},
        )
        assert_problem(reserve, 503)
        assert reserve.json()["code"] == "writes_elsewhere"
        after = service.get(f"/products/{ids[0]}").json()
        assert (after["name"], after["stock"]) == ("B", 5)
