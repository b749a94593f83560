"""Building blocks of request models that every app here shares, so the monolith and the
extracted services accept exactly the same values, and their OpenAPI documents say so.

- Text never holds NUL (U+0000): PostgreSQL cannot store it in a text column (the driver
  refuses the whole statement), SQLite would store it and give back a different value to
  tools that read C strings. Both apps refuse it with a 422 naming the field, on every
  database, rather than a 500 on one of them. The OpenAPI pattern says so too.
- Whole numbers are JSON integers: `5` and also `5.0` (JSON draws no line between the two,
  and JSON Schema's "integer" takes both), never `"5"` or `true`.
- A partial update (PATCH) body needs at least one field, and none may be null.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints

__all__ = [
    "MAX_KEY",
    "MIN_KEY",
    "Key",
    "NO_NUL",
    "Text",
    "NO_NUL_NOT_BLANK",
    "NO_NUL_NO_SPACE",
    "partial_update_schema",
    "refuse_nul",
    "whole_number",
]

NO_NUL = r"^[^\x00]*$"
"""The JSON Schema pattern of text without NUL."""


_SPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""Unicode's White_Space characters, spelled out: what `strip_whitespace` strips and what
pydantic's `\\s` matches. `\\s` itself means something else in each regex dialect (an
OpenAPI client's ECMAScript one leaves out U+0085), so the documents never use it."""

NO_NUL_NOT_BLANK = rf"^[^\x00]*[^{_SPACE}\x00][^\x00]*$"
"""Text without NUL holding at least one character that is not white space."""

NO_NUL_NO_SPACE = rf"^[^{_SPACE}\x00]+$"
"""One or more characters, none of them white space or NUL."""


def _refuse_nul(value: object) -> object:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


refuse_nul = BeforeValidator(_refuse_nul)
"""Put last in an `Annotated[str, ...]`: it runs first and names the problem plainly."""

Text = Annotated[str, StringConstraints(pattern=NO_NUL), refuse_nul]
"""Any text without NUL."""


MIN_KEY, MAX_KEY = -(2**31), 2**31 - 1
"""The range of a key (an id) or a version: their columns are `Integer`, 32 bits on
PostgreSQL. A number outside names no row, and asking a database about it fails (PostgreSQL:
integer out of range; SQLite, past 64 bits: the driver cannot bind it), so it is refused as
invalid input before it gets there."""

Key = Annotated[int, Field(ge=MIN_KEY, le=MAX_KEY)]
"""A key or version in a request body: a 32-bit signed integer."""


def _whole(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


whole_number = BeforeValidator(_whole)
"""Put last in an `Annotated[int, Field(strict=True, ...), ...]`: a JSON integer, `5` or `5.0`;
strings and booleans stay refused by the strict int."""


def partial_update_schema(schema: dict[str, Any]) -> None:
    """`json_schema_extra` of a PATCH model whose fields are all optional but not nullable,
    and which needs at least one: it makes the document say exactly that."""
    schema["minProperties"] = 1
    for prop in schema.get("properties", {}).values():
        options = prop.pop("anyOf", None)
        if options is None:
            continue
        kept = [option for option in options if option != {"type": "null"}]
        if len(kept) == 1:
            prop.update(kept[0])
        else:
            prop["anyOf"] = kept
        if prop.get("default", ...) is None:
            del prop["default"]
