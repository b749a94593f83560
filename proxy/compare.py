"""Comparing the two sides' answers to one read: pure functions, no I/O.

Both bodies are parsed as JSON, the capability's ignored fields are removed wherever they
appear, and numbers are normalised (12.5, "12.50" and 12.50 are the same price) before the
canonical forms are compared. A mismatch comes with a unified diff a person can read.

Two answers about different versions of a row are not a disagreement but sync lag (the relay
has not carried the latest write over yet): with the capability's `version_field` set, two
answers that agree once every row seen at two versions (same id) is masked are reported as
stale, and neither match nor mismatch. If the copy stays behind, the
stale count grows and the compared count does not, so a gate waiting for a sample waits.
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
    stale: bool = False


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


_UNPARSED = object()


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return _UNPARSED


def _canonical(body: bytes, parsed: Any, ignore: Collection[str]) -> str:
    if parsed is _UNPARSED:
        return body.decode("utf-8", errors="replace")
    return json.dumps(_normalise(parsed, ignore), indent=2, sort_keys=True, ensure_ascii=False)


_LAGGING = "$lagging"


def _mask_lagging(left: Any, right: Any, field: str) -> tuple[Any, Any, bool]:
    """Both documents with every pair of objects that describe the same row (same id, or no
    id) at different versions replaced by one marker; and whether any was."""
    if isinstance(left, dict) and isinstance(right, dict):
        if (
            field in left
            and field in right
            and left[field] != right[field]
            and left.get("id") == right.get("id")
        ):
            return _LAGGING, _LAGGING, True
        masked_left, masked_right, found = dict(left), dict(right), False
        for key in left.keys() & right.keys():
            masked_left[key], masked_right[key], hit = _mask_lagging(left[key], right[key], field)
            found = found or hit
        return masked_left, masked_right, found
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        pairs = [_mask_lagging(a, b, field) for a, b in zip(left, right, strict=True)]
        return [p[0] for p in pairs], [p[1] for p in pairs], any(p[2] for p in pairs)
    return left, right, False


def compare_responses(
    primary_status: int,
    primary_body: bytes,
    shadow_status: int,
    shadow_body: bytes,
    ignore: Collection[str],
    *,
    labels: tuple[str, str] = ("primary", "shadow"),
    version_field: str | None = None,
) -> Comparison:
    if primary_status == shadow_status and primary_body == shadow_body:
        # The same bytes are equal under any normalisation: most comparisons of a migration
        # that works end here, without parsing either body.
        return Comparison(matched=True, diff="")
    primary, shadow = _parse(primary_body), _parse(shadow_body)
    left = f"status {primary_status}\n{_canonical(primary_body, primary, ignore)}"
    right = f"status {shadow_status}\n{_canonical(shadow_body, shadow, ignore)}"
    if left == right:
        return Comparison(matched=True, diff="")
    if version_field is not None and primary_status == shadow_status:
        masked_primary, masked_shadow, lagging = _mask_lagging(primary, shadow, version_field)
        if lagging and json.dumps(_normalise(masked_primary, ignore), sort_keys=True) == (
            json.dumps(_normalise(masked_shadow, ignore), sort_keys=True)
        ):
            return Comparison(matched=False, diff="", stale=True)
    diff = difflib.unified_diff(
        left.splitlines(), right.splitlines(), fromfile=labels[0], tofile=labels[1], lineterm=""
    )
    return Comparison(matched=False, diff="\n".join(diff))
