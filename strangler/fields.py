"""Building blocks of request models that every app here shares, so the monolith and the
extracted services accept exactly the same values, and their OpenAPI documents say so.

- Text never holds NUL (U+0000): PostgreSQL cannot store it in a text column (the driver
  refuses the whole statement), SQLite would store it and give back a different value to
  tools that read C strings. Both apps refuse it with a 422 naming the field, on every
  database, rather than a 500 on one of them. The OpenAPI pattern says so too.
- Whole numbers are JSON integers: `5` and also `5.0` (JSON draws no line between the two,
  and JSON Schema's "integer" takes both), never `"5"` or `true`.
- A partial update (PATCH) body needs at least one field, and none may be null.
- A text field's bounds are checked on the text as sent (`TextRule`), as its document states
  them; white space is trimmed, where a field trims it, only from a value already accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import GroupedMetadata
from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

__all__ = [
    "MAX_KEY",
    "MAX_VERSION",
    "MIN_KEY",
    "Key",
    "Version",
    "NO_NUL",
    "Text",
    "TextRule",
    "NO_NUL_NOT_BLANK",
    "NO_NUL_NO_SPACE",
    "partial_update_schema",
    "refuse_nul",
    "refuse_surrounding_space",
    "whole_number",
]

NO_NUL = r"^[^\x00]*$"
"""The JSON Schema pattern of text without NUL."""


_SPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
"""Unicode's White_Space characters, spelled out for a pattern: `\\s` means something else in
each regex dialect (an OpenAPI client's ECMAScript one leaves out U+0085, and adds U+FEFF),
so the documents never use it."""

_WHITE_SPACE = "".join(re.findall(f"[{_SPACE}]", "".join(map(chr, range(0x10000)))))
"""The same characters as a string (all are in the Basic Multilingual Plane): what
`TextRule(trim=True)` trims. Not `str.strip()`'s set, which adds U+001C to U+001F."""

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


def _refuse_surrounding_space(value: object) -> object:
    if isinstance(value, str) and value != value.strip(_WHITE_SPACE):
        raise ValueError("must not start or end with white space")
    return value


refuse_surrounding_space = BeforeValidator(_refuse_surrounding_space)
"""For a type that strips white space before it checks the rest, where the document's format
has no room for it: `EmailStr` takes " ada@example.com", an address by `format: email` does
not. Put it before `refuse_nul`."""


def _trim(value: str) -> str:
    return value.strip(_WHITE_SPACE)


_trimmed = AfterValidator(_trim)


@dataclass(frozen=True, kw_only=True)
class TextRule(GroupedMetadata):
    """The whole rule of a text field, in `Annotated[str, TextRule(...)]`; its OpenAPI schema
    says exactly the same (`minLength`, `maxLength`, `pattern`).

    Bounds and pattern are checked on the text as sent, because that is what the document's
    keywords mean, and clients, generated SDKs and schemathesis go by the document. Counting
    after trimming (pydantic's `strip_whitespace`) let a 201-character name starting with
    U+00A0 through a documented `maxLength` of 200. The app is what changed, not the
    documents: they are the published contract, so the only answers that change are to
    values they already called invalid (now a 422, as documented).

    `trim=True` then takes leading and trailing white space (Unicode's White_Space, the
    characters `_SPACE` spells) off the accepted value, as the apps always did for a name
    typed with a stray space. It needs the pattern `NO_NUL_NOT_BLANK` and a `min_length` of at
    most 1: what is left holds a character, so it still meets them. NUL is refused before
    anything else, by a message that names it (`refuse_nul`).
    """

    min_length: int | None = None
    max_length: int | None = None
    pattern: str = NO_NUL
    trim: bool = False

    def __post_init__(self) -> None:
        if self.trim and (self.pattern != NO_NUL_NOT_BLANK or (self.min_length or 0) > 1):
            raise ValueError("trim=True needs the pattern NO_NUL_NOT_BLANK, min_length 1 at most")

    def __iter__(self) -> Iterator[object]:
        yield from StringConstraints(
            min_length=self.min_length, max_length=self.max_length, pattern=self.pattern
        )
        if self.trim:
            yield _trimmed  # wraps the checks above, so it runs after them
        yield refuse_nul  # wraps everything, so it runs first


Text = Annotated[str, TextRule()]
"""Any text without NUL."""


MIN_KEY, MAX_KEY = -(2**31), 2**31 - 1
"""The range of a key (an id): the shop's key columns are `Integer`, 32 bits on PostgreSQL.
A number outside names no row, and asking a database about it fails (PostgreSQL: integer out
of range; SQLite, past 64 bits: the driver cannot bind it), so it is refused as invalid input
before it gets there."""

Key = Annotated[int, Field(ge=MIN_KEY, le=MAX_KEY)]
"""A key in a request body: a 32-bit signed integer."""

MAX_VERSION = 2**53 - 1
"""The largest version. Versions are 64-bit counters in the databases (strangler.sync.tables
.COUNTER), since a hot row written for years, or a row re-emitted by repairs, can pass 2^31;
on the wire they stop at 2^53 - 1, the largest integer every JSON reader holds exactly (a
double's: 2^63 - 1 read as a double is 2^63, which a document's bound cannot tell apart).
A million writes a second reach it in 285 years."""

Version = Annotated[int, Field(ge=1, le=MAX_VERSION)]
"""A row's version in a request body."""


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
