"""Health, readiness and the error shape of requests no route handles."""

from __future__ import annotations

import httpx

from tests.support.problems import assert_problem


def test_health_says_the_process_is_up(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_ready_says_the_database_answers(client: httpx.Client) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_an_unknown_path_is_a_404_problem(client: httpx.Client) -> None:
    assert_problem(client.get("/no/such/thing"), 404, "/no/such/thing")


def test_a_wrong_method_is_a_405_problem(client: httpx.Client) -> None:
    assert_problem(client.put("/health"), 405, "PUT")


def test_a_body_that_is_not_json_is_a_422_problem(client: httpx.Client) -> None:
    response = client.post(
        "/users/register", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 422, "not valid")
