"""Internal routes other services call: product snapshots and stock reservations.

Service to service (the sync token), never exposed through the proxy's public routes. The
orders capability's HTTP adapter is the caller: it prices an order from snapshots, reserves
stock under a reservation id it chooses (retrying safely), and releases it if the order
cannot be recorded.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request
from pydantic import BaseModel, Field

from extracted.products_service import service
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
        409, descriptions={409: "Not enough stock, or the reservation was released."}
    ),
)
def reserve(body: ReservationRequest, session: WriteSession) -> dict[str, object]:
    quantities: dict[int, int] = {}
    for line in body.items:
        quantities[line.product_id] = quantities.get(line.product_id, 0) + line.quantity
    try:
        reservation = service.reserve(session, body.reservation_id, quantities)
    except service.UnknownProducts as exc:
        raise Problem(
            422, f"Unknown product id(s): {exc.product_ids}.", product_ids=exc.product_ids
        ) from exc
    except service.OutOfStock as exc:
        raise Problem(
            409,
            f"Not enough stock of product {exc.product_id}: {exc.requested} "
            f"wanted, {exc.available} available.",
            product_id=exc.product_id,
            requested=exc.requested,
            available=exc.available,
        ) from exc
    except service.ReservationReleased as exc:
        raise Problem(409, f"Reservation {body.reservation_id} was already released.") from exc
    return {"reservation_id": reservation.id, "status": reservation.status}


@router.delete("/reservations/{reservation_id}")
def release(
    reservation_id: Annotated[str, Path(min_length=1, max_length=100, pattern=NO_NUL)],
    session: WriteSession,
) -> dict[str, object]:
    return {"reservation_id": reservation_id, "status": service.release(session, reservation_id)}
