"""The order use cases: place an order (once per idempotency key), read one's own orders."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from legacy_monolith.orders.models import Order, OrderLine
from legacy_monolith.orders.ports import (
    CatalogItem,
    CatalogMoved,
    CatalogUnavailable,
    Customers,
    OutOfStock,
    ProductCatalog,
)
from legacy_monolith.orders.schemas import OrderIn

CONFIRMED = "confirmed"

__all__ = [
    "CatalogMoved",
    "CatalogUnavailable",
    "IdempotencyKeyReused",
    "OrderNotFound",
    "OutOfStock",
    "UnknownCustomer",
    "UnknownProducts",
    "list_orders",
    "get_order",
    "new_reservation_id",
    "place_order",
]


class UnknownCustomer(Exception):
    """The token's user has no account (any more)."""


@dataclass
class UnknownProducts(Exception):
    product_ids: list[int]


class IdempotencyKeyReused(Exception):
    """The key was used before for a different request."""


class OrderNotFound(Exception):
    """No order with this id belongs to the caller."""


@dataclass(frozen=True)
class PlacedOrder:
    order: Order
    created: bool


def _fingerprint(request: OrderIn) -> str:
    canonical = sorted((i.product_id, i.quantity) for i in request.items)
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()


def _find_by_key(session: Session, user_id: int, key: str) -> Order | None:
    return session.scalar(
        select(Order)
        .where(Order.user_id == user_id, Order.idempotency_key == key)
        .options(selectinload(Order.lines))
    )


def _replay(existing: Order, fingerprint: str) -> PlacedOrder:
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused()
    return PlacedOrder(existing, created=False)


def place_order(
    session: Session,
    *,
    user_id: int,
    request: OrderIn,
    idempotency_key: str | None,
    catalog: ProductCatalog,
    customers: Customers,
) -> PlacedOrder:
    """Price the items, take their stock and record the order, all in one transaction.

    With an idempotency key, a repeat of the same request returns the order made the first
    time, even when the two arrive at once; the same key with a different request is refused.
    """
    fingerprint = _fingerprint(request)
    if idempotency_key is not None:
        existing = _find_by_key(session, user_id, idempotency_key)
        if existing is not None:
            return _replay(existing, fingerprint)
    if not customers.exists(user_id):
        raise UnknownCustomer()
    quantities = {item.product_id: item.quantity for item in request.items}
    if catalog.remote:
        # Hold no database transaction (on SQLite: no write lock) across network calls.
        session.rollback()
    prices = catalog.price_list(quantities.keys())
    missing = sorted(set(quantities) - set(prices))
    if missing:
        raise UnknownProducts(missing)
    try:
        catalog.reserve(quantities)
    except OutOfStock:
        session.rollback()
        raise
    return _record(session, catalog, user_id, request, idempotency_key, fingerprint, prices)


def _record(
    session: Session,
    catalog: ProductCatalog,
    user_id: int,
    request: OrderIn,
    idempotency_key: str | None,
    fingerprint: str,
    prices: Mapping[int, CatalogItem],
) -> PlacedOrder:
    """Confirm the reservation and write the order; if either fails, give the stock back.

    Confirming comes first: a reservation the catalogue gave back because nobody confirmed it
    in time must not carry an order, and once confirmed it is given back only by `release`.
    """
    lines = [
        OrderLine(
            product_id=item.product_id,
            quantity=item.quantity,
            unit_price_cents=prices[item.product_id].unit_price_cents,
        )
        for item in request.items
    ]
    order = Order(
        user_id=user_id,
        status=CONFIRMED,
        total_cents=sum(line.quantity * line.unit_price_cents for line in lines),
        idempotency_key=idempotency_key,
        request_fingerprint=fingerprint,
        lines=lines,
    )
    session.add(order)
    try:
        catalog.confirm()
        session.commit()
    except IntegrityError:
        session.rollback()
        catalog.release()  # this attempt lost: its reservation is its own to give back
        existing = _find_by_key(session, user_id, idempotency_key) if idempotency_key else None
        if existing is None:
            raise
        return _replay(existing, fingerprint)
    except BaseException:
        session.rollback()
        catalog.release()
        raise
    return PlacedOrder(order, created=True)


def new_reservation_id(user_id: int) -> str:
    """A fresh stock reservation id for one attempt to place an order.

    The HTTP adapter's own retries of one call reuse it (so a reserve whose answer was lost is
    not counted twice); a new attempt (a client retrying with the same Idempotency-Key) gets a
    new one, and the order's unique key decides which attempt's order stands: the losers give
    their own reservations back.
    """
    return f"order-{user_id}-{uuid.uuid4().hex}"


def list_orders(session: Session, user_id: int, *, limit: int) -> Sequence[Order]:
    """The user's orders, newest first."""
    return session.scalars(
        select(Order)
        .where(Order.user_id == user_id)
        .order_by(Order.id.desc())
        .limit(limit)
        .options(selectinload(Order.lines))
    ).all()


def get_order(session: Session, user_id: int, order_id: int) -> Order:
    """One of the user's orders; someone else's is reported as not found."""
    order = session.scalar(
        select(Order)
        .where(Order.id == order_id, Order.user_id == user_id)
        .options(selectinload(Order.lines))
    )
    if order is None:
        raise OrderNotFound(order_id)
    return order
