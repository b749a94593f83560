"""Request and response bodies of the orders API."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from strangler.fields import MAX_KEY, whole_number

Quantity = Annotated[int, Field(ge=1, le=10_000, strict=True), whole_number]


class OrderItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: Annotated[int, Field(ge=1, le=MAX_KEY, strict=True), whole_number]
    quantity: Quantity


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: Annotated[list[OrderItemIn], Field(min_length=1, max_length=100)]

    @field_validator("items")
    @classmethod
    def _each_product_once(cls, items: list[OrderItemIn]) -> list[OrderItemIn]:
        seen: set[int] = set()
        for item in items:
            if item.product_id in seen:
                raise ValueError(f"product {item.product_id} is listed twice; list it once")
            seen.add(item.product_id)
        return items


class OrderItemOut(BaseModel):
    product_id: int
    quantity: int
    unit_price: Annotated[str, Field(examples=["12.50"])]


class OrderOut(BaseModel):
    id: int
    user_id: int
    items: list[OrderItemOut]
    total: Annotated[str, Field(examples=["25.00"])]
    status: str
