"""HTTP routes of the orders capability, and the wiring of its ports to adapters."""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from sqlalchemy.orm import Session

from legacy_monolith.orders import service
from legacy_monolith.orders.adapters import CatalogFactory, InProcessCustomers
from legacy_monolith.orders.models import Order
from legacy_monolith.orders.schemas import OrderIn, OrderItemOut, OrderOut
from strangler.auth import CurrentUserId
from strangler.db import ReadSession, WriteSession
from strangler.fields import MAX_KEY, MIN_KEY
from strangler.money import string_from_cents
from strangler.problems import Problem, problem_responses

log = logging.getLogger("legacy_monolith.orders")

router = APIRouter(prefix="/orders", tags=["orders"])

IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
]


def _out(order: Order) -> OrderOut:
    return OrderOut(
        id=order.id,
        user_id=order.user_id,
        items=[
            OrderItemOut(
                product_id=line.product_id,
                quantity=line.quantity,
                unit_price=string_from_cents(line.unit_price_cents),
            )
            for line in order.lines
        ],
        total=string_from_cents(order.total_cents),
        status=order.status,
    )


_MOVED_ATTEMPTS = 4
_MOVED_BACKOFF_SECONDS = 0.05


def _place_following_the_phase(
    session: Session,
    make_catalog: CatalogFactory,
    *,
    user_id: int,
    body: OrderIn,
    idempotency_key: str | None,
) -> service.PlacedOrder:
    """Place the order, picking the catalogue adapter again if product writes just moved.

    Around a phase change the monolith and the service read routing.toml at slightly
    different moments; the side that has read it refuses (nothing reserved), and the order
    goes again with the adapter the phase, read afresh, calls for. The client sees one answer.
    """
    for attempt in range(_MOVED_ATTEMPTS):
        try:
            return service.place_order(
                session,
                user_id=user_id,
                request=body,
                idempotency_key=idempotency_key,
                catalog=make_catalog(
                    session, service.new_reservation_id(user_id), reread=attempt > 0
                ),
                customers=InProcessCustomers(session),
            )
        except service.CatalogMoved:
            session.rollback()
            if attempt == _MOVED_ATTEMPTS - 1:
                raise
            log.info("product writes moved during an order; placing it again (%d)", attempt + 1)
            time.sleep(_MOVED_BACKOFF_SECONDS * 2**attempt)
    raise AssertionError("unreachable")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderOut,
    responses=problem_responses(
        401,
        409,
        422,
        503,
        descriptions={
            409: "Not enough stock; nothing was ordered.",
            422: "Not valid, an unknown product, or an Idempotency-Key used for another order.",
            503: "The product catalogue is unavailable; nothing was ordered.",
        },
    ),
)
def place_order(
    body: OrderIn,
    session: WriteSession,
    user_id: CurrentUserId,
    response: Response,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> OrderOut:
    make_catalog: CatalogFactory = request.app.state.product_catalog
    try:
        placed = _place_following_the_phase(
            session, make_catalog, user_id=user_id, body=body, idempotency_key=idempotency_key
        )
    except service.UnknownCustomer as exc:
        raise Problem(401, "The account this token was issued for no longer exists.") from exc
    except service.UnknownProducts as exc:
        ids = ", ".join(str(i) for i in exc.product_ids)
        raise Problem(
            422,
            f"Unknown product id(s): {ids}.",
            errors=[
                {"field": "items.product_id", "message": f"no product {i}"} for i in exc.product_ids
            ],
        ) from exc
    except service.OutOfStock as exc:
        raise Problem(
            409,
            f"Not enough stock of product {exc.product_id}: {exc.requested} wanted, "
            f"{exc.available} available. Nothing was ordered.",
        ) from exc
    except service.CatalogUnavailable as exc:
        raise Problem(
            503,
            f"The product catalogue is unavailable ({exc}); nothing was ordered. Retry "
            "with the same Idempotency-Key.",
            headers={"Retry-After": "2"},
        ) from exc
    except service.IdempotencyKeyReused as exc:
        raise Problem(
            422,
            "This Idempotency-Key was already used for a different order; "
            "use a new key for a new order.",
        ) from exc
    response.headers["Location"] = f"/orders/{placed.order.id}"
    if not placed.created:
        response.headers["Idempotent-Replayed"] = "true"
    return _out(placed.order)


@router.get("", response_model=list[OrderOut], responses=problem_responses(401))
def list_orders(
    session: ReadSession,
    user_id: CurrentUserId,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[OrderOut]:
    return [_out(o) for o in service.list_orders(session, user_id, limit=limit)]


@router.get("/{order_id}", response_model=OrderOut, responses=problem_responses(401, 404))
def get_order(
    order_id: Annotated[int, Path(ge=MIN_KEY, le=MAX_KEY)],
    session: ReadSession,
    user_id: CurrentUserId,
) -> OrderOut:
    try:
        return _out(service.get_order(session, user_id, order_id))
    except service.OrderNotFound as exc:
        raise Problem(404, f"You have no order with id {order_id}.") from exc
