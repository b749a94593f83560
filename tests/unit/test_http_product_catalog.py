"""The orders port's HTTP adapter under client failures (respx fakes the network)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import respx

from legacy_monolith.orders.adapters import HttpProductCatalog
from legacy_monolith.orders.ports import CatalogMoved, CatalogUnavailable, OutOfStock

BASE = "http://products.test"
RESERVE = f"{BASE}/internal/products/reservations"


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
def catalog() -> Iterator[HttpProductCatalog]:
    with httpx.Client(base_url=BASE) as client:
        yield HttpProductCatalog(client, "order-7-abc", backoff_seconds=0)


def test_a_timed_out_reserve_is_retried_with_the_same_reservation_id(
    mock: respx.MockRouter, catalog: HttpProductCatalog
) -> None:
    route = mock.post(RESERVE).mock(
        side_effect=[
            httpx.ReadTimeout("lost answer"),
            httpx.Response(201, json={"reservation_id": "order-7-abc", "status": "reserved"}),
        ]
    )
    catalog.reserve({1: 2})
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert [b["reservation_id"] for b in bodies] == ["order-7-abc", "order-7-abc"]
    assert bodies[0]["items"] == [{"product_id": 1, "quantity": 2}]


def test_when_every_attempt_fails_the_possibly_taken_stock_is_released(
    mock: respx.MockRouter, catalog: HttpProductCatalog
) -> None:
    mock.post(RESERVE).mock(side_effect=httpx.ConnectTimeout("down"))
    release = mock.delete(f"{RESERVE}/order-7-abc").mock(
        return_value=httpx.Response(200, json={"status": "released"})
    )
    with pytest.raises(CatalogUnavailable):
        catalog.reserve({1: 1})
    assert release.call_count == 1


def test_a_5xx_is_retried_then_reported_unavailable(
    mock: respx.MockRouter, catalog: HttpProductCatalog
) -> None:
    reserve = mock.post(RESERVE).mock(return_value=httpx.Response(503))
    mock.delete(f"{RESERVE}/order-7-abc").mock(return_value=httpx.Response(200, json={}))
    with pytest.raises(CatalogUnavailable, match="503"):
        catalog.reserve({1: 1})
    assert reserve.call_count == 3


def test_out_of_stock_is_the_ports_own_error_and_not_retried(
    mock: respx.MockRouter, catalog: HttpProductCatalog
) -> None:
    reserve = mock.post(RESERVE).mock(
        return_value=httpx.Response(
            409, json={"detail": "no", "product_id": 1, "requested": 3, "available": 1}
        )
    )
    with pytest.raises(OutOfStock) as caught:
        catalog.reserve({1: 3})
    assert (caught.value.product_id, caught.value.available) == (1, 1)
    assert reserve.call_count == 1


def test_a_refusal_because_writes_moved_back_is_reported_moved_at_once(
    mock: respx.MockRouter, catalog: HttpProductCatalog
) -> None:
    """The service refuses reservations once the phase gives writes back to the monolith:
    no retry against it, nothing to release (it rolled back), and the order is told to
    pick its adapter again."""
    refuse = mock.post(RESERVE).mock(
        return_value=httpx.Response(
            503,
            json={"status": 503, "detail": "written by the monolith", "code": "writes_elsewhere"},
            headers={"Retry-After": "1", "Content-Type": "application/problem+json"},
        )
    )
    release = mock.delete(f"{RESERVE}/order-7-abc")
    with pytest.raises(CatalogMoved):
        catalog.reserve({1: 1})
    assert refuse.call_count == 1
    assert release.call_count == 0
