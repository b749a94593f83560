"""Money as the shop API speaks it on both sides of the migration.

A decimal string with two places on the wire, stored as integer cents.

Integer cents keep arithmetic exact on every database (SQLite has no decimal type) and make
the wire format a matter of formatting, never of float rounding.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_PRICE = re.compile(r"^(0|[1-9][0-9]{0,9})\.[0-9]{2}$")  # ASCII: \d takes any Unicode digit


def cents_from_string(value: str) -> int:
    """Parse "12.50" into 1250; raise ValueError for anything else."""
    if not _PRICE.fullmatch(value):
        raise ValueError('must be a decimal string with two places, like "12.50"')
    return int(Decimal(value) * 100)


def string_from_cents(cents: int) -> str:
    """Format 1250 as "12.50"."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole}.{part:02d}"


def _parse(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError('must be a string like "12.50", not a number')
    return cents_from_string(value)


Price = Annotated[
    int,
    BeforeValidator(_parse),
    PlainSerializer(string_from_cents, return_type=str),
    WithJsonSchema({"type": "string", "pattern": _PRICE.pattern, "examples": ["12.50"]}),
]
"""A price in cents that is read from and written as a two-place decimal string."""
