"""The users API of the monolith, through a real server process, on each database."""

from __future__ import annotations

import httpx
import jwt

from tests.support.factories import Account, register, unique
from tests.support.problems import assert_problem, problem_fields


def test_register_returns_the_account_without_the_password(client: httpx.Client) -> None:
    email = f"{unique('reg')}@example.com"
    response = register(client, email=email, name="Ada")
    assert response.status_code == 201
    body = response.json()
    assert body == {"id": body["id"], "email": email, "name": "Ada"}


def test_register_refuses_a_taken_email_whatever_its_case(client: httpx.Client) -> None:
    email = f"{unique('dup')}@example.com"
    assert register(client, email=email).status_code == 201
    assert_problem(register(client, email=email.upper()), 409, "already exists")


def test_register_lists_every_invalid_field(client: httpx.Client) -> None:
    response = client.post("/users/register", json={"email": "not-an-email", "password": "short"})
    body = assert_problem(response, 422, "not valid")
    assert problem_fields(body) == {"email", "password", "name"}


def test_login_issues_a_bearer_jwt_for_the_user(client: httpx.Client, account: Account) -> None:
    response = client.post(
        "/users/login", json={"email": account.email, "password": account.password}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == str(account.id)
    assert {"exp", "iat", "iss", "aud"} <= claims.keys()
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "RS256"


def test_login_refuses_a_wrong_password_and_an_unknown_email_alike(
    client: httpx.Client, account: Account
) -> None:
    wrong = client.post("/users/login", json={"email": account.email, "password": "nope-nope"})
    unknown = client.post("/users/login", json={"email": "nobody@example.com", "password": "x"})
    assert_problem(wrong, 401, "email or password")
    assert_problem(unknown, 401, "email or password")
    assert wrong.json()["detail"] == unknown.json()["detail"]


def test_me_returns_the_token_holder(client: httpx.Client, account: Account) -> None:
    response = client.get("/users/me", headers=account.headers)
    assert response.status_code == 200
    assert response.json() == {"id": account.id, "email": account.email, "name": "Test"}


def test_me_without_a_token_is_401_with_a_bearer_challenge(client: httpx.Client) -> None:
    response = client.get("/users/me")
    assert_problem(response, 401, "bearer token")
    assert response.headers["www-authenticate"] == "Bearer"


def test_me_refuses_a_token_with_a_tampered_subject(client: httpx.Client, account: Account) -> None:
    header, payload, signature = account.token.split(".")
    claims = jwt.decode(account.token, options={"verify_signature": False})
    claims["sub"] = str(account.id + 1)
    forged_payload = jwt.utils.base64url_encode(jwt.api_jws.json.dumps(claims).encode()).decode()
    forged = f"{header}.{forged_payload}.{signature}"
    assert_problem(client.get("/users/me", headers={"Authorization": f"Bearer {forged}"}), 401)


def test_me_refuses_an_unsigned_token(client: httpx.Client, account: Account) -> None:
    claims = jwt.decode(account.token, options={"verify_signature": False})
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    response = client.get("/users/me", headers={"Authorization": f"Bearer {unsigned}"})
    assert_problem(response, 401, "refused")
