"""Two orders racing for the last unit of stock: exactly one wins, on every database.

Real server process, real concurrent HTTP requests; the guard under test is the conditional
`UPDATE ... WHERE stock >= wanted` inside the order's transaction.
"""

from __future__ import annotations

import threading

import httpx

from tests.conftest import Monolith
from tests.support.factories import new_account, new_product

ROUNDS = 15


def test_two_orders_for_the_last_unit_end_with_exactly_one_success(monolith: Monolith) -> None:
    with httpx.Client(base_url=monolith.base_url, timeout=30) as client:
        buyers = [new_account(client), new_account(client)]
        products = [new_product(client, buyers[0], stock=1) for _ in range(ROUNDS)]

    outcomes: list[tuple[int, int]] = []
    for product in products:
        barrier = threading.Barrier(len(buyers))
        statuses: list[int] = []

        def buy(
            token: str,
            product_id: int = product["id"],
            barrier: threading.Barrier = barrier,
            statuses: list[int] = statuses,
        ) -> None:
            with httpx.Client(base_url=monolith.base_url, timeout=30) as http:
                barrier.wait()
                response = http.post(
                    "/orders",
                    json={"items": [{"product_id": product_id, "quantity": 1}]},
                    headers={"Authorization": f"Bearer {token}"},
                )
                statuses.append(response.status_code)

        threads = [threading.Thread(target=buy, args=(b.token,)) for b in buyers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        outcomes.append((statuses.count(201), statuses.count(409)))

    assert outcomes == [(1, 1)] * ROUNDS
    with httpx.Client(base_url=monolith.base_url, timeout=30) as client:
        for product in products:
            final = client.get(f"/products/{product['id']}").json()
            assert (final["stock"], final["version"]) == (0, 2)
        placed = sum(len(client.get("/orders", headers=b.headers).json()) for b in buyers)
    assert placed == ROUNDS
