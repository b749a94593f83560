"""Small factories for test data with random keys, so tests share a database safely."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Account:
    id: int
    email: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def register(client: httpx.Client, **overrides: Any) -> httpx.Response:
    body = {"email": f"{unique('user')}@example.com", "password": "s3cret-pass", "name": "Test"}
    body.update(overrides)
    return client.post("/users/register", json=body)


def new_account(client: httpx.Client) -> Account:
    email, password = f"{unique('user')}@example.com", "s3cret-pass"
    created = register(client, email=email, password=password)
    assert created.status_code == 201, created.text
    login = client.post("/users/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    return Account(created.json()["id"], email, password, login.json()["access_token"])


def product_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sku": unique("SKU"),
        "name": "Test kettle",
        "description": "Boils water.",
        "price": "19.99",
        "stock": 10,
    }
    body.update(overrides)
    return body


def new_product(client: httpx.Client, account: Account, **overrides: Any) -> dict[str, Any]:
    response = client.post("/products", json=product_body(**overrides), headers=account.headers)
    assert response.status_code == 201, response.text
    product: dict[str, Any] = response.json()
    return product
