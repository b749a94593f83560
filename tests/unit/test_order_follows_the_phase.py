"""An order caught between the two sides' reads of a phase change is placed again, with the
adapter the phase (read afresh) calls for, instead of failing with a 503."""

from __future__ import annotations

from typing import Any

import pytest

from legacy_monolith.orders import api, service
from legacy_monolith.orders.schemas import OrderIn


class _Session:
    def __init__(self) -> None:
        self.rollbacks = 0

    def rollback(self) -> None:
        self.rollbacks += 1


def _body() -> OrderIn:
    return OrderIn.model_validate({"items": [{"product_id": 1, "quantity": 1}]})


def test_a_moved_catalogue_is_picked_again_after_reading_the_phase_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[tuple[str, bool]] = []

    def make_catalog(_session: Any, reservation_id: str, *, reread: bool = False) -> Any:
        made.append((reservation_id, reread))
        return "http" if len(made) == 1 else "in-process"

    placed = service.PlacedOrder(order=None, created=True)  # type: ignore[arg-type]

    def place_order(_session: Any, *, catalog: Any, **_: Any) -> service.PlacedOrder:
        if catalog == "http":
            raise service.CatalogMoved("writes went back to the monolith")
        return placed

    monkeypatch.setattr(service, "place_order", place_order)
    monkeypatch.setattr(api, "_MOVED_BACKOFF_SECONDS", 0)
    session = _Session()
    result = api._place_following_the_phase(
        session,  # type: ignore[arg-type]
        make_catalog,
        user_id=7,
        body=_body(),
        idempotency_key="k",
    )
    assert result is placed
    assert [reread for _, reread in made] == [False, True]
    assert made[0][0] != made[1][0]  # each attempt reserves under its own id
    assert session.rollbacks == 1


def test_a_catalogue_that_keeps_moving_is_reported_after_bounded_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0

    def place_order(*_: Any, **__: Any) -> service.PlacedOrder:
        nonlocal calls
        calls += 1
        raise service.CatalogMoved("still moving")

    monkeypatch.setattr(service, "place_order", place_order)
    monkeypatch.setattr(api, "_MOVED_BACKOFF_SECONDS", 0)
    with pytest.raises(service.CatalogMoved):
        api._place_following_the_phase(
            _Session(),  # type: ignore[arg-type]
            lambda *_, **__: "x",  # type: ignore[arg-type,return-value]
            user_id=7,
            body=_body(),
            idempotency_key=None,
        )
    assert calls == api._MOVED_ATTEMPTS
