"""What the sync API's two ends must agree on, kept free of database imports so the CLI,
which only speaks HTTP, starts fast: the row hashes, the bulk formats, how a key range is
split into buckets, and the import report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "CSV",
    "HASHES",
    "JSON_LINES",
    "MAX_BUCKETS",
    "MEDIA_TYPES",
    "PYTHON_HASH",
    "SQL_HASH",
    "ImportReport",
    "bucket_of",
    "bucket_shape",
    "split_range",
]

PYTHON_HASH: Final = "blake2b-json"
SQL_HASH: Final = "pg-record"
HASHES = (SQL_HASH, PYTHON_HASH)
"""Best first: reconcile takes the first one both sides list."""


CSV: Final = "pg-csv"
JSON_LINES: Final = "json-lines"
# Each side offers the formats its database can use, best first (bulk.available_formats);
# backfill takes the first of the source's that the target offers too.
MEDIA_TYPES = {CSV: "text/csv", JSON_LINES: "application/x-ndjson"}


@dataclass(frozen=True)
class ImportReport:
    rows: int
    applied: int
    duplicates: int
    rejected: int
    method: str


MAX_BUCKETS = 4096
"""The most buckets one range is split into in one checksum answer."""


def bucket_of(key: int, lo: int, hi: int, buckets: int) -> int:
    """Which of split_range(lo, hi, buckets) holds `key` (lo <= key < hi)."""
    step, extra, wide = bucket_shape(lo, hi, buckets)
    offset = key - lo
    if offset < extra * wide:
        return offset // wide
    return extra + (offset - extra * wide) // step


def bucket_shape(lo: int, hi: int, buckets: int) -> tuple[int, int, int]:
    parts = max(1, min(buckets, hi - lo))
    step, extra = divmod(hi - lo, parts)
    return step, extra, step + 1


def split_range(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    """Split [lo, hi) into at most `parts` contiguous, non-empty ranges."""
    size = hi - lo
    if size <= 0:
        return []
    parts = max(1, min(parts, size))
    step, extra = divmod(size, parts)
    out, start = [], lo
    for n in range(parts):
        end = start + step + (1 if n < extra else 0)
        out.append((start, end))
        start = end
    return out
