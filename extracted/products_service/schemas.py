"""Request and response bodies of the products API."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from strangler.fields import (
    NO_NUL_NO_SPACE,
    NO_NUL_NOT_BLANK,
    TextRule,
    partial_update_schema,
    whole_number,
)
from strangler.money import Price

Sku = Annotated[str, TextRule(min_length=1, max_length=64, pattern=NO_NUL_NO_SPACE)]
"""No white space anywhere, as documented: one with a space before or after is refused."""
Name = Annotated[str, TextRule(min_length=1, max_length=200, pattern=NO_NUL_NOT_BLANK, trim=True)]
Description = Annotated[str, TextRule(max_length=5000)]
Stock = Annotated[int, Field(ge=0, le=1_000_000_000, strict=True), whole_number]


class ProductCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku
    name: Name
    description: Description = ""
    price: Price
    stock: Stock = 0


class ProductPatch(BaseModel):
    """A partial update: only the fields present change; null is not a value."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=partial_update_schema)

    sku: Sku | None = None
    name: Name | None = None
    description: Description | None = None
    price: Price | None = None
    stock: Stock | None = None

    @model_validator(mode="after")
    def _present_fields_are_not_null(self) -> ProductPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one of sku, name, description, price, stock")
        nulls = sorted(f for f in self.model_fields_set if getattr(self, f) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null")
        return self

    def changes(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class ProductOut(BaseModel):
    id: int
    sku: str
    name: str
    description: str
    price: Annotated[str, Field(examples=["12.50"])]
    stock: int
    version: int


class ProductPage(BaseModel):
    items: list[ProductOut]
    next_cursor: str | None
