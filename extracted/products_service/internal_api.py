"""Internal routes other services call: product snapshots and stock reservations.

Service to service (the sync token), never exposed through the proxy's public routes. The
orders capability's HTTP adapter is the caller: it prices an order from snapshots, reserves
stock under a reservation id it chooses (retrying safely), confirms the reservation just
before it records the order, and releases it if the order cannot be recorded. A
reservation left unconfirmed past its lease is given back by the service's sweep
(reservations.ReservationSweep); a release after a rollback hands the stock over to the
caller, who gives it back where the writes went (`hand_back`).
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from pydantic import BaseModel, Field

from extracted.products_service import reservations, service
from extracted.products_service.settings import ProductsServiceSettings
from strangler.db import ReadSession, WriteSession
from strangler.fields import MAX_KEY, MIN_KEY, NO_NUL, refuse_nul, whole_number
from strangler.problems import Problem, problem_responses

ReservationId = Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL), refuse_nul]


def _service_token(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    expected: str | None = request.app.state.sync_token
    scheme, _, token = (authorization or "").partition(" ")
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(token.encode(), expected.encode())
    ):
        raise Problem(
            401,
            "This internal API needs the service token.",
            headers={"WWW-Authenticate": "Bearer"},
        )


router = APIRouter(
    prefix="/internal/products",
    tags=["internal"],
    dependencies=[Depends(_service_token)],
    responses=problem_responses(401),
)


ProductId = Annotated[int, Field(ge=MIN_KEY, le=MAX_KEY, strict=True), whole_number]


class SnapshotRequest(BaseModel):
    ids: Annotated[list[ProductId], Field(max_length=1000)]


class Line(BaseModel):
    product_id: ProductId
    quantity: Annotated[int, Field(ge=1, le=1_000_000_000, strict=True), whole_number]


class ReservationRequest(BaseModel):
    reservation_id: ReservationId
    items: Annotated[list[Line], Field(min_length=1, max_length=100)]
    confirm: bool = Field(
        False,
        description=(
            "The order is about to be recorded: make the reservation final (taking the "
            "stock first if this id holds none yet). Refused (409) once the reservation holds "
            "no stock any more: its lease ended and the sweep gave it back, or it was released."
        ),
    )


def _reservation_lease(request: Request) -> timedelta:
    settings: ProductsServiceSettings = request.app.state.settings
    return timedelta(seconds=settings.reservation_lease_seconds)


ReservationLease = Annotated[timedelta, Depends(_reservation_lease)]
"""How long an unconfirmed reservation holds its stock (the lease setting of the service)."""


@router.post("/snapshots")
def snapshots(body: SnapshotRequest, session: ReadSession) -> dict[str, object]:
    found = service.snapshots(session, body.ids)
    return {
        "products": [
            {"id": p.id, "name": p.name, "price_cents": p.price_cents, "stock": p.stock}
            for p in found
        ]
    }


@router.post(
    "/reservations",
    status_code=201,
    responses=problem_responses(
        409, descriptions={409: "Not enough stock, or the reservation holds no stock any more."}
    ),
)
def reserve(
    body: ReservationRequest, session: WriteSession, lease: ReservationLease
) -> dict[str, object]:
    quantities: dict[int, int] = {}
    for line in body.items:
        quantities[line.product_id] = quantities.get(line.product_id, 0) + line.quantity
    try:
        reservation = reservations.reserve(
            session,
            body.reservation_id,
            quantities,
            expires_at=datetime.now(UTC) + lease,
            confirm=body.confirm,
        )
    except reservations.UnknownProducts as exc:
        raise Problem(
            422, f"Unknown product id(s): {exc.product_ids}.", product_ids=exc.product_ids
        ) from exc
    except reservations.OutOfStock as exc:
        raise Problem(
            409,
            f"Not enough stock of product {exc.product_id}: {exc.requested} "
            f"wanted, {exc.available} available.",
            product_id=exc.product_id,
            requested=exc.requested,
            available=exc.available,
        ) from exc
    except reservations.ReservationReleased as exc:
        raise Problem(
            409,
            f"Reservation {body.reservation_id} was already released (given back, expired or "
            "handed back): it takes no stock and cannot be confirmed. Place the order again.",
            code="reservation_released",
        ) from exc
    return {"reservation_id": reservation.id, "status": reservation.status}


@router.delete("/reservations/{reservation_id}")
def release(
    reservation_id: Annotated[str, Path(min_length=1, max_length=100, pattern=NO_NUL)],
    session: WriteSession,
    hand_back: Annotated[
        bool,
        Query(
            description=(
                "While the monolith takes product writes (after a rollback), answer the "
                "reservation's items instead of refusing: the caller gives them back there, "
                "once. Without it such a release is refused (503, writes_elsewhere)."
            )
        ),
    ] = False,
) -> dict[str, object]:
    """Give the reservation's stock back. `status` "handed_back" means it was not given back
    here: `items` lists what the caller must give back where the writes are."""
    done = reservations.release(session, reservation_id, hand_back=hand_back)
    return {
        "reservation_id": reservation_id,
        "status": done.status,
        "items": [{"product_id": p, "quantity": q} for p, q in done.hand_over],
    }
