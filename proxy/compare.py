"""Comparing the two sides' answers to one read: pure functions, no I/O.

Both bodies are parsed as JSON, the capability's ignored fields are removed wherever they
appear, and numbers are normalised (12.5, "12.50" and 12.50 are the same price) before the
canonical forms are compared. A mismatch comes with a unified diff a person can read.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["Comparison", "compare_responses"]

_DECIMAL_STRING = re.compile(r"^-?\d+\.\d+$")


@dataclass(frozen=True)
class Comparison:
    matched: bool
    diff: str


def _number(value: Decimal) -> str:
    normal = value.normalize()
    return format(normal, "f")


def _normalise(value: Any, ignore: Collection[str]) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v, ignore) for k, v in value.items() if k not in ignore}
    if isinstance(value, list):
        return [_normalise(v, ignore) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return {"$number": _number(Decimal(str(value)))}
    if isinstance(value, str) and _DECIMAL_STRING.match(value):
        try:
            return {"$number": _number(Decimal(value))}
        except InvalidOperation:
            return value
    return value


def _canonical(body: bytes, ignore: Collection[str]) -> str:
    try:
        parsed = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", errors="replace")
    return json.dumps(_normalise(parsed, ignore), indent=2, sort_keys=True, ensure_ascii=False)


def compare_responses(
    primary_status: int,
    primary_body: bytes,
    shadow_status: int,
    shadow_body: bytes,
    ignore: Collection[str],
    *,
    labels: tuple[str, str] = ("primary", "shadow"),
) -> Comparison:
    left = f"status {primary_status}\n{_canonical(primary_body, ignore)}"
    right = f"status {shadow_status}\n{_canonical(shadow_body, ignore)}"
    if left == right:
        return Comparison(matched=True, diff="")
    diff = difflib.unified_diff(
        left.splitlines(), right.splitlines(), fromfile=labels[0], tofile=labels[1], lineterm=""
    )
    return Comparison(matched=False, diff="\n".join(diff))
