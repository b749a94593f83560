"""HTTP routes of the products capability."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from legacy_monolith.products import service
from legacy_monolith.products.models import Product
from legacy_monolith.products.schemas import ProductCreate, ProductOut, ProductPage, ProductPatch
from strangler.auth import CurrentUserId
from strangler.db import ReadSession, WriteSession
from strangler.fields import MAX_KEY, MIN_KEY
from strangler.money import string_from_cents
from strangler.pagination import BadCursor, decode_cursor, encode_cursor
from strangler.problems import Problem, problem_responses

router = APIRouter(prefix="/products", tags=["products"])

ProductId = Annotated[int, Path(ge=MIN_KEY, le=MAX_KEY)]
"""Any number an id column holds (one outside that range cannot name a product)."""

_WRITE_PROBLEMS = {
    409: "Another product has this SKU.",
    503: "Product writes have moved to the products service (retry through the proxy).",
}


def _out(product: Product) -> ProductOut:
    return ProductOut(
        id=product.id,
        sku=product.sku,
        name=product.name,
        description=product.description,
        price=string_from_cents(product.price_cents),
        stock=product.stock,
        version=product.version,
    )


def _moved() -> Problem:
    return Problem(
        503,
        "Product writes have moved to the products service; this copy only follows it. "
        "Send the write through the proxy again.",
        headers={"Retry-After": "1"},
    )


def _not_found(product_id: int) -> Problem:
    return Problem(404, f"No product has id {product_id}.")


@router.get(
    "",
    response_model=ProductPage,
    responses=problem_responses(400, descriptions={400: "The cursor is not one this API issued."}),
)
def list_products(
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ProductPage:
    try:
        after = decode_cursor(cursor) if cursor else None
    except BadCursor as exc:
        raise Problem(
            400, "The cursor is not one this API issued; use next_cursor from a previous page."
        ) from exc
    rows, next_after = service.list_products(session, limit=limit, after_id=after)
    return ProductPage(
        items=[_out(p) for p in rows],
        next_cursor=encode_cursor(next_after) if next_after is not None else None,
    )


@router.get("/{product_id}", response_model=ProductOut, responses=problem_responses(404))
def get_product(product_id: ProductId, session: ReadSession) -> ProductOut:
    try:
        return _out(service.get_product(session, product_id))
    except service.ProductNotFound as exc:
        raise _not_found(product_id) from exc


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProductOut,
    responses=problem_responses(401, 409, 503, descriptions=_WRITE_PROBLEMS),
)
def create_product(
    body: ProductCreate, session: WriteSession, _user: CurrentUserId, response: Response
) -> ProductOut:
    try:
        product = service.create_product(session, body)
    except service.SkuTaken as exc:
        raise Problem(409, f"Another product already has the SKU {exc}.") from exc
    except service.WritesMoved as exc:
        raise _moved() from exc
    response.headers["Location"] = f"/products/{product.id}"
    return _out(product)


@router.patch(
    "/{product_id}",
    response_model=ProductOut,
    responses=problem_responses(401, 404, 409, 503, descriptions=_WRITE_PROBLEMS),
)
def update_product(
    product_id: ProductId, body: ProductPatch, session: WriteSession, _user: CurrentUserId
) -> ProductOut:
    try:
        return _out(service.update_product(session, product_id, body))
    except service.ProductNotFound as exc:
        raise _not_found(product_id) from exc
    except service.SkuTaken as exc:
        raise Problem(409, f"Another product already has the SKU {exc}.") from exc
    except service.WritesMoved as exc:
        raise _moved() from exc


@router.delete(
    "/{product_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 404, 503, descriptions=_WRITE_PROBLEMS),
)
def delete_product(product_id: ProductId, session: WriteSession, _user: CurrentUserId) -> Response:
    try:
        service.delete_product(session, product_id)
    except service.ProductNotFound as exc:
        raise _not_found(product_id) from exc
    except service.WritesMoved as exc:
        raise _moved() from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)
