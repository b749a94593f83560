"""Forged and misdirected bearer tokens, against the real monolith and products service: every
one is 401 with a bearer challenge, on both, and the write it carried does not happen.

Each app takes product writes here (the service's routing file puts it in writes_cutover), so a
write carried by a token that got through would happen, and the genuine token's writes succeed:
the control is each endpoint's own success status, not merely "not refused".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.factories import new_account, new_product, product_body
from tests.support.processes import (
    RunningApp,
    monolith_env,
    run_monolith_command,
    run_service_command,
    serve_monolith,
    serve_products_service,
    service_env,
)

ISSUER, AUDIENCE = "strangler-monolith", "strangler-shop"  # both apps' defaults


@dataclass
class Apps:
    monolith: RunningApp
    service: RunningApp
    private_pem: bytes
    public_pem: bytes
    subject: str
    valid_token: str
    product_id: int  # the monolith's product the forged writes aim at
    service_product_id: int  # the service's


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    work = tmp_path_factory.mktemp("tokens")
    (work / "m").mkdir()
    (work / "s").mkdir()
    menv = monolith_env(f"sqlite:///{work / 'm' / 'monolith.db'}", work / "m")
    run_monolith_command(menv, "migrate")
    senv = service_env(
        f"sqlite:///{work / 's' / 'products.db'}", work / "s", work / "m" / "jwt-public.pem"
    )
    run_service_command(senv, "migrate")
    # The monolith's own file is absent (phase monolith: it takes writes); the service's says
    # writes_cutover, in which it takes them. Each app reads only its own file.
    (work / "s" / "routing.toml").write_text('[capabilities.products]\nphase = "writes_cutover"\n')
    with serve_monolith(menv, work / "m") as monolith:
        with httpx.Client(base_url=monolith.base_url) as client:
            account = new_account(client)
            product = new_product(client, account)
        with serve_products_service(senv, work / "s") as service:
            with httpx.Client(base_url=service.base_url) as client:
                service_product = new_product(client, account)
            yield Apps(
                monolith,
                service,
                (work / "m" / "jwt-private.pem").read_bytes(),
                (work / "m" / "jwt-public.pem").read_bytes(),
                str(account.id),
                account.token,
                int(product["id"]),
                int(service_product["id"]),
            )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(apps: Apps, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": apps.subject, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    claims.update(changes)
    return claims


def _unsigned(claims: dict[str, Any], header: dict[str, str]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _hs256_keyed_with_public_key(apps: Apps) -> str:
    """The classic confusion attack: HMAC-signed with the RS256 public key as the secret."""
    head = _unsigned(_claims(apps), {"alg": "HS256", "typ": "JWT"})
    mac = hmac.new(apps.public_pem, head.encode(), hashlib.sha256).digest()
    return f"{head}.{_b64(mac)}"


def _signed_by_another_key(apps: Apps) -> str:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = stranger.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return jwt.encode(_claims(apps), pem, algorithm="RS256")


def _signed(apps: Apps, **changes: Any) -> str:
    return jwt.encode(_claims(apps, **changes), apps.private_pem, algorithm="RS256")


def _tampered_payload(apps: Apps) -> str:
    head, _, signature = apps.valid_token.rpartition(".")
    header = head.split(".")[0]
    other = _claims(apps, sub=str(int(apps.subject) + 1))
    return f"{header}.{_b64(json.dumps(other).encode())}.{signature}"


def _tampered_signature(apps: Apps) -> str:
    head, _, signature = apps.valid_token.rpartition(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{head}.{flipped}"


FORGERIES: dict[str, Callable[[Apps], str]] = {
    "alg none": lambda a: _unsigned(_claims(a), {"alg": "none", "typ": "JWT"}) + ".",
    "HS256 keyed with the public key": _hs256_keyed_with_public_key,
    "signed by another key": _signed_by_another_key,
    "expired": lambda a: _signed(a, iat=int(time.time()) - 600, exp=int(time.time()) - 60),
    "not yet valid": lambda a: _signed(a, nbf=int(time.time()) + 3600),
    "wrong audience": lambda a: _signed(a, aud="someone-else"),
    "wrong issuer": lambda a: _signed(a, iss="evil"),
    "no expiry": lambda a: jwt.encode(
        {k: v for k, v in _claims(a).items() if k != "exp"}, a.private_pem, algorithm="RS256"
    ),
    "tampered payload": _tampered_payload,
    "tampered signature": _tampered_signature,
    "not a JWT": lambda a: "definitely-not-a-token",
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_token_is_refused_by_both_apps_and_changes_nothing(
    apps: Apps, forgery: str
) -> None:
    token = FORGERIES[forgery](apps)
    headers = {"Authorization": f"Bearer {token}"}
    attempts = [
        ("monolith", "GET", f"{apps.monolith.base_url}/users/me", None),
        ("monolith", "PATCH", f"{apps.monolith.base_url}/products/{apps.product_id}", {"stock": 0}),
        ("service", "DELETE", f"{apps.service.base_url}/products/{apps.service_product_id}", None),
    ]
    for side, method, url, body in attempts:
        answer = httpx.request(method, url, json=body, headers=headers)
        assert answer.status_code == 401, (side, method, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["www-authenticate"].startswith("Bearer")
    product = httpx.get(f"{apps.monolith.base_url}/products/{apps.product_id}").json()
    assert product["version"] == 1 and product["stock"] != 0
    kept = httpx.get(f"{apps.service.base_url}/products/{apps.service_product_id}")
    assert kept.status_code == 200 and kept.json()["version"] == 1, kept.text


def _documented_success(base_url: str, path: str, method: str) -> int:
    """The one 2xx status the app's OpenAPI document gives for this operation."""
    responses = httpx.get(f"{base_url}/openapi.json").json()["paths"][path][method]["responses"]
    [success] = [int(code) for code in responses if code.startswith("2")]
    return success


def test_the_genuine_token_is_accepted_so_the_refusals_are_the_forgeries(apps: Apps) -> None:
    """The control: the same requests with the real token succeed, each with the status its
    endpoint documents. They act on products of their own, so the forgeries' targets stay as
    the forgery test expects them whichever test runs first."""
    headers = {"Authorization": f"Bearer {apps.valid_token}"}
    monolith_url, service_url = apps.monolith.base_url, apps.service.base_url
    me = httpx.get(f"{monolith_url}/users/me", headers=headers)
    assert me.status_code == _documented_success(monolith_url, "/users/me", "get") == 200
    assert str(me.json()["id"]) == apps.subject
    with httpx.Client(base_url=monolith_url, headers=headers) as monolith:
        mine = monolith.post("/products", json=product_body())
        assert mine.status_code == 201, mine.text
        patched = monolith.patch(f"/products/{mine.json()['id']}", json={"stock": 0})
        documented = _documented_success(monolith_url, "/products/{product_id}", "patch")
        assert patched.status_code == documented == 200, patched.text
        assert (patched.json()["version"], patched.json()["stock"]) == (2, 0)
    with httpx.Client(base_url=service_url, headers=headers) as service:
        theirs = service.post("/products", json=product_body())
        assert theirs.status_code == 201, theirs.text
        deleted = service.delete(f"/products/{theirs.json()['id']}")
        documented = _documented_success(service_url, "/products/{product_id}", "delete")
        assert deleted.status_code == documented == 204, deleted.text
        assert service.get(f"/products/{theirs.json()['id']}").status_code == 404
