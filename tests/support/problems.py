"""Assertions about RFC 9457 problem responses."""

from __future__ import annotations

from typing import Any

import httpx


def assert_problem(
    response: httpx.Response, status: int, detail_contains: str = ""
) -> dict[str, Any]:
    """The response is a problem+json of `status` whose detail mentions `detail_contains`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["type"]
    assert detail_contains.lower() in body["detail"].lower(), body["detail"]
    return body


def problem_fields(body: dict[str, Any]) -> set[str]:
    return {error["field"] for error in body.get("errors", [])}
