"""The order use case against fake ports: the rules of placing an order, without HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.orm import Session

from legacy_monolith.orders import service
from legacy_monolith.orders.models import Order, OrdersBase
from legacy_monolith.orders.schemas import OrderIn
from tests.fakes.orders_ports import FakeCustomers, FakeProductCatalog

USER = 7


@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    OrdersBase.metadata.create_all(engine)  # unit test of the use case; the app migrates
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()


def _request(*items: tuple[int, int]) -> OrderIn:
    return OrderIn.model_validate({"items": [{"product_id": p, "quantity": q} for p, q in items]})


def _place(
    session: Session,
    catalog: FakeProductCatalog,
    request: OrderIn,
    key: str | None = None,
    customers: FakeCustomers | None = None,
) -> service.PlacedOrder:
    return service.place_order(
        session,
        user_id=USER,
        request=request,
        idempotency_key=key,
        catalog=catalog,
        customers=customers or FakeCustomers({USER}),
    )


def _orders(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Order)) or 0


def test_the_total_is_priced_from_the_catalog(session: Session) -> None:
    catalog = FakeProductCatalog({1: (250, 5), 2: (1999, 5)})
    placed = _place(session, catalog, _request((1, 2), (2, 1)))
    assert placed.created and placed.order.total_cents == 2 * 250 + 1999
    assert catalog.reservations == [{1: 2, 2: 1}]


def test_out_of_stock_records_no_order(session: Session) -> None:
    catalog = FakeProductCatalog({1: (100, 1)})
    with pytest.raises(service.OutOfStock):
        _place(session, catalog, _request((1, 2)))
    assert _orders(session) == 0


def test_unknown_products_are_named_and_nothing_is_reserved(session: Session) -> None:
    catalog = FakeProductCatalog({1: (100, 5)})
    with pytest.raises(service.UnknownProducts) as caught:
        _place(session, catalog, _request((1, 1), (9, 1), (8, 1)))
    assert caught.value.product_ids == [8, 9]
    assert catalog.reservations == []


def test_an_unknown_customer_reserves_nothing(session: Session) -> None:
    catalog = FakeProductCatalog({1: (100, 5)})
    with pytest.raises(service.UnknownCustomer):
        _place(session, catalog, _request((1, 1)), customers=FakeCustomers(set()))
    assert catalog.reservations == []


def test_a_replayed_key_returns_the_first_order_and_reserves_once(session: Session) -> None:
    catalog = FakeProductCatalog({1: (100, 5)})
    first = _place(session, catalog, _request((1, 1)), key="k")
    again = _place(session, catalog, _request((1, 1)), key="k")
    assert (again.created, again.order.id) == (False, first.order.id)
    assert catalog.reservations == [{1: 1}]


def test_a_key_reused_for_a_different_request_is_refused(session: Session) -> None:
    catalog = FakeProductCatalog({1: (100, 5)})
    _place(session, catalog, _request((1, 1)), key="k")
    with pytest.raises(service.IdempotencyKeyReused):
        _place(session, catalog, _request((1, 2)), key="k")
    assert _orders(session) == 1


def test_an_order_that_cannot_be_recorded_gives_its_stock_back(session: Session) -> None:
    catalog = FakeProductCatalog({1: (100, 5)})

    def refuse(_session: Session) -> None:
        raise RuntimeError("disk full")

    event.listen(session, "before_commit", refuse)
    with pytest.raises(RuntimeError, match="disk full"):
        _place(session, catalog, _request((1, 2)))
    event.remove(session, "before_commit", refuse)
    assert (catalog.stock[1], catalog.released) == (5, 1)
    assert _orders(session) == 0


def test_each_attempt_gets_its_own_reservation_id() -> None:
    assert service.new_reservation_id(USER) != service.new_reservation_id(USER)
    assert service.new_reservation_id(USER).startswith(f"order-{USER}-")
