"""Opaque keyset-pagination cursors, the same on every implementation of an API.

A cursor names the last key of the previous page; clients must treat it as opaque, so its
format can change without breaking them, and two implementations of the same API (the monolith
and an extracted service) issue interchangeable cursors.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["BadCursor", "decode_cursor", "encode_cursor"]


class BadCursor(Exception):
    """The pagination cursor was not issued by this API."""


def encode_cursor(after_id: int) -> str:
    return base64.urlsafe_b64encode(f"after:{after_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadCursor(cursor) from exc
    prefix, _, number = raw.partition(":")
    if prefix != "after" or not number.isdigit():
        raise BadCursor(cursor)
    return int(number)
