"""Stock an order reserved on the products service comes back exactly once, whatever happens
before the order is recorded (issue 16, finding 4): a rollback moving the writes back to the
monolith between the reserve and the release, or a caller that never came back at all."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx
from sqlalchemy import text

from legacy_monolith.orders.adapters import HttpProductCatalog
from legacy_monolith.orders.ports import CatalogMoved
from strangler.db import create_db_engine
from tests.support.databases import BACKENDS, database
from tests.support.factories import new_account, new_product
from tests.support.problems import assert_problem
from tests.support.waiting import wait_until
from tests.sync.conftest import SQLITE_EVERYDAY, SYNC_TOKEN, SyncSystem, sync_system

AUTH = {"Authorization": f"Bearer {SYNC_TOKEN}"}

_REFUSE_ORDERS = {
    "sqlite": [
        "CREATE TRIGGER planted_order_failure BEFORE INSERT ON orders "
        "BEGIN SELECT RAISE(ABORT, 'planted: no order may be recorded'); END"
    ],
    "postgresql": [
        """CREATE FUNCTION planted_order_failure() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'planted: no order may be recorded'; END $$""",
        "CREATE TRIGGER planted_order_failure BEFORE INSERT ON orders FOR EACH ROW "
        "EXECUTE FUNCTION planted_order_failure()",
    ],
}


def _refuse_every_order(system: SyncSystem) -> None:
    """Plant the fault: the monolith cannot record any order (its commit fails), so an order
    whose stock was reserved must give it back."""
    engine = create_db_engine(system.monolith_db)
    try:
        with engine.begin() as connection:
            for statement in _REFUSE_ORDERS[system.backend]:
                connection.execute(text(statement))
    finally:
        engine.dispose()


def _reservation_status(system: SyncSystem, reservation_like: str) -> list[str]:
    engine = create_db_engine(system.service_db)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT status FROM reservations WHERE id LIKE :id"), {"id": reservation_like}
            )
            return [row[0] for row in found]
    finally:
        engine.dispose()


def _cut_writes_over(system: SyncSystem, stock: int) -> int:
    with system.monolith_client() as client:
        account = new_account(client)
        product_id: int = new_product(client, account, stock=stock)["id"]
    system.set_phase("dual_write")
    backfill = system.cli("backfill", "products")
    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    for phase in ("backfilled", "shadow", "canary", "reads_cutover", "writes_cutover"):
        system.set_phase(phase)
    return product_id


def _stock(base_url: str, product_id: int) -> int:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        stock: int = client.get(f"/products/{product_id}").json()["stock"]
        return stock


@SQLITE_EVERYDAY
def test_a_rollback_between_reserve_and_release_gives_the_stock_back_where_the_writes_went(
    system: SyncSystem,
) -> None:
    """The order reserves 3 of 10 on the service, the decrement reaches the monolith through
    the reverse relay, the writes roll back to the monolith, and only then does the order
    fail to be recorded and release: the service may no longer give the stock back, so the
    monolith does, and the forward relay carries that to the service. 10 on both sides."""
    product = _cut_writes_over(system, stock=10)
    relay = system.cli_process("relay", "products")  # follows the phase: reverse, then forward
    try:
        _refuse_every_order(system)
        with system.monolith_client() as monolith:
            account = new_account(monolith)
        answers: list[httpx.Response] = []

        def place() -> None:
            with system.monolith_client() as client:
                answers.append(
                    client.post(
                        "/orders",
                        headers=account.headers,
                        json={"items": [{"product_id": product, "quantity": 3}]},
                    )
                )

        # Every answer of the service reaches the monolith 0.8 s late (within its 1 s
        # timeout): room to hold the order's next call once the reservation has landed.
        system.fault.delay_seconds = 0.8
        order = threading.Thread(target=place)
        order.start()
        try:
            wait_until(
                lambda: _stock(system.service.base_url, product) == 7,
                "the order's reservation to take 3 on the service",
            )
            system.fault.set_mode("stall")  # the order's next call waits (and is retried)
            wait_until(
                lambda: _stock(system.monolith.base_url, product) == 7,
                "the reverse relay to carry the decrement to the monolith",
            )
            system.set_phase("reads_cutover")  # the rollback: the monolith takes writes again
        finally:
            system.fault.set_mode("pass")
            system.fault.delay_seconds = 0
            order.join(timeout=60)
        assert answers and answers[0].status_code >= 500, answers  # the planted failure
        assert _reservation_status(system, f"order-{account.id}-%") == ["handed_back"]
        wait_until(
            lambda: _stock(system.monolith.base_url, product) == 10,
            "the monolith to get the 3 back",
        )
        wait_until(
            lambda: _stock(system.service.base_url, product) == 10,
            "the forward relay to carry the give-back to the service",
        )
        with system.monolith_client() as monolith:
            assert monolith.get("/orders", headers=account.headers).json() == []
    finally:
        relay.terminate()
        relay.wait(timeout=30)
    assert system.reconcile()["agree"]


@pytest.fixture(params=BACKENDS)
def short_leases(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SyncSystem]:
    """The sync system with the service's reservations held for 1 s unconfirmed, swept
    every 0.2 s (the service reads its settings from the environment it inherits)."""
    monkeypatch.setenv("PRODUCTS_SERVICE_RESERVATION_LEASE_SECONDS", "1")
    monkeypatch.setenv("PRODUCTS_SERVICE_RESERVATION_SWEEP_SECONDS", "0.2")
    backend: str = request.param
    with (
        database(backend, tmp_path / "m") as monolith_db,
        database(backend, tmp_path / "s") as service_db,
        sync_system(backend, tmp_path, monolith_db, service_db) as running,
    ):
        yield running


def test_the_sweep_gives_back_a_reservation_whose_order_never_confirmed_it(
    short_leases: SyncSystem,
) -> None:
    """A placed order's reservation (confirmed) keeps its stock; one whose caller never came
    back (reserved, never confirmed) is given back once its lease ends, and can no longer be
    confirmed: a late order cannot be recorded on stock that went back."""
    system = short_leases
    product = _cut_writes_over(system, stock=10)
    with system.monolith_client() as monolith, system.service_client() as service:
        account = new_account(monolith)
        placed = monolith.post(
            "/orders",
            headers=account.headers,
            json={"items": [{"product_id": product, "quantity": 2}]},
        )
        assert placed.status_code == 201, placed.text
        abandoned_id = f"abandoned-{uuid.uuid4().hex}"
        abandoned = {
            "reservation_id": abandoned_id,
            "items": [{"product_id": product, "quantity": 4}],
        }
        taken = service.post("/internal/products/reservations", json=abandoned, headers=AUTH)
        assert taken.status_code == 201, taken.text
        assert _stock(system.service.base_url, product) == 4
        # The placed order's reservation was made first, so its lease ended first: had the
        # sweep taken it, its 2 would be back (10) by the time the abandoned 4 are (8).
        wait_until(
            lambda: _reservation_status(system, abandoned_id) == ["expired"],
            "the sweep to give back the abandoned reservation after its 1 s lease",
        )
        assert _stock(system.service.base_url, product) == 8
        assert _reservation_status(system, f"order-{account.id}-%") == ["confirmed"]
        late = service.post(
            "/internal/products/reservations", json={**abandoned, "confirm": True}, headers=AUTH
        )
        assert assert_problem(late, 409, "already released")["code"] == "reservation_released"
    drained = system.cli("relay", "products", "--until-drained")  # reverse: to the monolith
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert _stock(system.monolith.base_url, product) == 8
    assert system.reconcile()["agree"]


def test_a_reserve_whose_answers_were_lost_across_a_rollback_is_given_back_here() -> None:
    """The adapter's own path, its network faked: every reserve attempt times out (it may
    have landed), the writes went back to the monolith meanwhile, so the service hands the
    stock over; it is given back in-process, and the order is to be placed again here
    (CatalogMoved) instead of failing."""
    base = "http://products.test"
    given_back: list[dict[int, int]] = []
    with respx.mock(assert_all_called=True) as mock, httpx.Client(base_url=base) as client:
        mock.post(f"{base}/internal/products/reservations").mock(
            side_effect=httpx.ReadTimeout("lost answer")
        )
        handed = mock.delete(
            f"{base}/internal/products/reservations/order-7-x", params={"hand_back": "true"}
        ).mock(
            return_value=httpx.Response(
                200,
                json={
                    "reservation_id": "order-7-x",
                    "status": "handed_back",
                    "items": [{"product_id": 1, "quantity": 2}],
                },
            )
        )
        catalog = HttpProductCatalog(
            client, "order-7-x", restock=lambda q: given_back.append(dict(q)), backoff_seconds=0
        )
        with pytest.raises(CatalogMoved):
            catalog.reserve({1: 2})
    assert handed.call_count == 1
    assert given_back == [{1: 2}]
