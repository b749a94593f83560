"""The orders API of the monolith, through a real server process, on each database."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support.factories import Account, new_account, new_product
from tests.support.problems import assert_problem, problem_fields


def _order(
    client: httpx.Client, account: Account, items: list[dict[str, int]], key: str | None = None
) -> httpx.Response:
    headers = dict(account.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/orders", json={"items": items}, headers=headers)


def _product(client: httpx.Client, product_id: int) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/products/{product_id}").json()
    return body


def test_an_order_snapshots_prices_and_takes_stock(client: httpx.Client, account: Account) -> None:
    kettle = new_product(client, account, price="19.99", stock=5)
    lamp = new_product(client, account, price="0.05", stock=10)
    response = _order(
        client,
        account,
        [{"product_id": kettle["id"], "quantity": 2}, {"product_id": lamp["id"], "quantity": 3}],
    )
    assert response.status_code == 201
    order = response.json()
    assert order == {
        "id": order["id"],
        "user_id": account.id,
        "items": [
            {"product_id": kettle["id"], "quantity": 2, "unit_price": "19.99"},
            {"product_id": lamp["id"], "quantity": 3, "unit_price": "0.05"},
        ],
        "total": "40.13",
        "status": "confirmed",
    }
    assert _product(client, kettle["id"])["stock"] == 3
    assert _product(client, kettle["id"])["version"] == kettle["version"] + 1
    assert _product(client, lamp["id"])["stock"] == 7
    assert client.get(f"/orders/{order['id']}", headers=account.headers).json() == order


def test_a_later_price_change_does_not_touch_a_placed_order(
    client: httpx.Client, account: Account
) -> None:
    product = new_product(client, account, price="10.00")
    order = _order(client, account, [{"product_id": product["id"], "quantity": 1}]).json()
    client.patch(f"/products/{product['id']}", json={"price": "99.00"}, headers=account.headers)
    again = client.get(f"/orders/{order['id']}", headers=account.headers).json()
    assert again["items"][0]["unit_price"] == "10.00"
    assert again["total"] == "10.00"


def test_not_enough_stock_is_409_and_changes_nothing(
    client: httpx.Client, account: Account
) -> None:
    plenty = new_product(client, account, stock=50)
    scarce = new_product(client, account, stock=1)
    response = _order(
        client,
        account,
        [{"product_id": plenty["id"], "quantity": 5}, {"product_id": scarce["id"], "quantity": 2}],
    )
    assert_problem(response, 409, f"product {scarce['id']}")
    assert _product(client, plenty["id"]) == plenty
    assert _product(client, scarce["id"]) == scarce
    assert client.get("/orders", headers=account.headers).json() == []


def test_an_unknown_product_is_422_and_changes_nothing(
    client: httpx.Client, account: Account
) -> None:
    real = new_product(client, account)
    response = _order(
        client,
        account,
        [{"product_id": real["id"], "quantity": 1}, {"product_id": 987654321, "quantity": 1}],
    )
    body = assert_problem(response, 422, "987654321")
    assert problem_fields(body) == {"items.product_id"}
    assert _product(client, real["id"]) == real


def test_an_invalid_order_lists_its_bad_fields(client: httpx.Client, account: Account) -> None:
    body = assert_problem(
        client.post(
            "/orders", json={"items": [{"product_id": 1, "quantity": 0}]}, headers=account.headers
        ),
        422,
    )
    assert problem_fields(body) == {"items.0.quantity"}
    assert_problem(client.post("/orders", json={"items": []}, headers=account.headers), 422)


def test_the_same_product_twice_is_422(client: httpx.Client, account: Account) -> None:
    product = new_product(client, account)
    items = [{"product_id": product["id"], "quantity": 1}] * 2
    assert_problem(_order(client, account, items), 422, "listed twice")


def test_an_idempotency_key_creates_the_order_once(client: httpx.Client, account: Account) -> None:
    product = new_product(client, account, stock=10)
    key = str(uuid.uuid4())
    items = [{"product_id": product["id"], "quantity": 4}]
    first, second = _order(client, account, items, key), _order(client, account, items, key)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert _product(client, product["id"])["stock"] == 6
    assert len(client.get("/orders", headers=account.headers).json()) == 1


def test_an_idempotency_key_reused_for_another_order_is_422(
    client: httpx.Client, account: Account
) -> None:
    product = new_product(client, account, stock=10)
    key = str(uuid.uuid4())
    assert (
        _order(client, account, [{"product_id": product["id"], "quantity": 1}], key).status_code
        == 201
    )
    response = _order(client, account, [{"product_id": product["id"], "quantity": 2}], key)
    assert_problem(response, 422, "Idempotency-Key")
    assert _product(client, product["id"])["stock"] == 9


def test_idempotency_keys_belong_to_one_user(client: httpx.Client, account: Account) -> None:
    product = new_product(client, account, stock=10)
    other = new_account(client)
    items, key = [{"product_id": product["id"], "quantity": 1}], str(uuid.uuid4())
    mine, theirs = (
        _order(client, account, items, key).json(),
        _order(client, other, items, key).json(),
    )
    assert mine["id"] != theirs["id"]
    assert theirs["user_id"] == other.id


def test_orders_are_listed_newest_first_and_only_ones_own(
    client: httpx.Client, account: Account
) -> None:
    product = new_product(client, account, stock=10)
    other = new_account(client)
    ids = [
        _order(client, account, [{"product_id": product["id"], "quantity": 1}]).json()["id"]
        for _ in range(3)
    ]
    _order(client, other, [{"product_id": product["id"], "quantity": 1}])
    listed = client.get("/orders", headers=account.headers).json()
    assert [o["id"] for o in listed] == ids[::-1]


def test_someone_elses_order_is_404(client: httpx.Client, account: Account) -> None:
    product = new_product(client, account)
    order = _order(client, account, [{"product_id": product["id"], "quantity": 1}]).json()
    stranger = new_account(client)
    assert_problem(client.get(f"/orders/{order['id']}", headers=stranger.headers), 404)


def test_orders_need_a_bearer_token(client: httpx.Client) -> None:
    assert_problem(client.post("/orders", json={"items": [{"product_id": 1, "quantity": 1}]}), 401)
    assert_problem(client.get("/orders"), 401)
    assert_problem(client.get("/orders/1"), 401)
