"""The products API contract: the same tests against the monolith and the extracted service,
through real server processes, on each database. Tokens come from the monolith's users
capability; the service verifies them with the public key alone.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.factories import Account, new_product, product_body
from tests.support.problems import assert_problem, problem_fields


def test_create_returns_the_product_at_version_1(client: httpx.Client, account: Account) -> None:
    body = product_body(price="12.50", stock=7)
    response = client.post("/products", json=body, headers=account.headers)
    assert response.status_code == 201
    created = response.json()
    assert created == {**body, "id": created["id"], "version": 1}
    assert response.headers["location"] == f"/products/{created['id']}"
    assert client.get(f"/products/{created['id']}").json() == created


@pytest.mark.parametrize("price", [12.5, 12, "12.5", "12.505", "-1.00", "1e3", "", True])
def test_create_refuses_a_price_that_is_not_a_two_place_decimal_string(
    client: httpx.Client, account: Account, price: object
) -> None:
    response = client.post("/products", json=product_body(price=price), headers=account.headers)
    body = assert_problem(response, 422, "price")
    assert problem_fields(body) == {"price"}


def test_create_lists_every_missing_field(client: httpx.Client, account: Account) -> None:
    body = assert_problem(client.post("/products", json={}, headers=account.headers), 422)
    assert problem_fields(body) == {"sku", "name", "price"}


def test_create_refuses_a_taken_sku(client: httpx.Client, account: Account) -> None:
    product = new_product(client, account)
    response = client.post(
        "/products", json=product_body(sku=product["sku"]), headers=account.headers
    )
    assert_problem(response, 409, product["sku"])


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/products"), ("PATCH", "/products/1"), ("DELETE", "/products/1")],
)
def test_writes_need_a_bearer_token(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path, json=product_body())
    assert_problem(response, 401, "bearer token")


def test_get_an_unknown_product_is_404(client: httpx.Client) -> None:
    assert_problem(client.get("/products/987654321"), 404, "987654321")


def test_get_with_a_non_numeric_id_is_422(client: httpx.Client) -> None:
    body = assert_problem(client.get("/products/abc"), 422)
    assert problem_fields(body) == {"path.product_id"}


def test_patch_changes_only_the_given_fields_and_bumps_the_version(
    client: httpx.Client, account: Account
) -> None:
    product = new_product(client, account)
    response = client.patch(
        f"/products/{product['id']}", json={"price": "5.00", "stock": 3}, headers=account.headers
    )
    assert response.status_code == 200
    assert response.json() == {**product, "price": "5.00", "stock": 3, "version": 2}
    again = client.patch(
        f"/products/{product['id']}", json={"name": "Renamed"}, headers=account.headers
    )
    assert again.json()["version"] == 3
    assert again.json()["name"] == "Renamed"


def test_patch_refuses_a_taken_sku_and_changes_nothing(
    client: httpx.Client, account: Account
) -> None:
    first, second = new_product(client, account), new_product(client, account)
    response = client.patch(
        f"/products/{second['id']}", json={"sku": first["sku"]}, headers=account.headers
    )
    assert_problem(response, 409, first["sku"])
    assert client.get(f"/products/{second['id']}").json() == second


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({}, "body"),
        ({"name": None}, "body"),
        ({"stock": -1}, "stock"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_patch_refuses_an_invalid_change(
    client: httpx.Client, account: Account, patch: dict[str, object], field: str
) -> None:
    product = new_product(client, account)
    response = client.patch(f"/products/{product['id']}", json=patch, headers=account.headers)
    assert field in problem_fields(assert_problem(response, 422))
    assert client.get(f"/products/{product['id']}").json() == product


def test_patch_of_an_unknown_product_is_404(client: httpx.Client, account: Account) -> None:
    response = client.patch("/products/987654321", json={"name": "x"}, headers=account.headers)
    assert_problem(response, 404, "987654321")


def test_delete_removes_the_product(client: httpx.Client, account: Account) -> None:
    product = new_product(client, account)
    response = client.delete(f"/products/{product['id']}", headers=account.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(client.get(f"/products/{product['id']}"), 404)
    assert_problem(client.delete(f"/products/{product['id']}", headers=account.headers), 404)


def test_pages_walk_every_product_once_in_key_order(client: httpx.Client, account: Account) -> None:
    created = {new_product(client, account)["id"] for _ in range(7)}
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/products", params=params)
        assert page.status_code == 200
        body = page.json()
        assert len(body["items"]) <= 3
        seen.extend(item["id"] for item in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen))
    assert created <= set(seen)


@pytest.mark.parametrize("limit", [0, 201, -1])
def test_list_refuses_a_limit_out_of_range(client: httpx.Client, limit: int) -> None:
    body = assert_problem(client.get("/products", params={"limit": limit}), 422)
    assert problem_fields(body) == {"query.limit"}


@pytest.mark.parametrize("cursor", ["garbage!", "YWZ0ZXI6eA", "bm90LWEtY3Vyc29y"])
def test_list_refuses_a_cursor_it_did_not_issue(client: httpx.Client, cursor: str) -> None:
    assert_problem(client.get("/products", params={"cursor": cursor}), 400, "cursor")


def test_a_forged_or_expired_token_is_refused_by_every_implementation(
    client: httpx.Client, account: Account
) -> None:
    import time

    import jwt as pyjwt

    claims = pyjwt.decode(account.token, options={"verify_signature": False})
    unsigned = pyjwt.encode(claims, key=None, algorithm="none")
    header, payload, signature = account.token.split(".")
    tampered_claims = {**claims, "sub": str(account.id + 1), "exp": int(time.time()) + 10_000}
    tampered = ".".join(
        [
            header,
            pyjwt.utils.base64url_encode(
                pyjwt.api_jws.json.dumps(tampered_claims).encode()
            ).decode(),
            signature,
        ]
    )
    for token in (unsigned, tampered, "not-a-jwt"):
        response = client.post(
            "/products", json=product_body(), headers={"Authorization": f"Bearer {token}"}
        )
        assert_problem(response, 401, "refused")
