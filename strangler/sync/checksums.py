"""Row and range checksums both sides compute identically, so reconcile can compare them
without either side reading the other's database.

A row's hash covers its key, version and data columns in a canonical JSON form; a range's
checksum is the sum of its rows' hashes modulo 2**64 (order-free, so both sides may stream in
any order) together with the row count.

Two ways to hash, and reconcile uses the best both sides offer:
- `blake2b-json` (every database): rows are read out and hashed here, about 10 us a row.
- `pg-jsonb` (PostgreSQL): the database hashes `jsonb_build_array(key, version, data...)`
  with `hashtextextended` and sums it in the same query that reads the range: a range costs
  what one aggregate query costs. Only comparable with another PostgreSQL side, which is why
  the hash is negotiated (`hashes` in the bounds answer) rather than chosen per side.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from sqlalchemy import BigInteger, ColumnElement, Text, cast, func, select
from sqlalchemy.orm import Session

from strangler.sync.apply import EntitySpec

__all__ = [
    "HASHES",
    "PYTHON_HASH",
    "SQL_HASH",
    "RangeSum",
    "available_hashes",
    "key_bounds",
    "range_sums",
    "row_hash",
    "rows_in_range",
    "split_range",
]

_MASK = (1 << 64) - 1
RangeSum = dict[str, int]

PYTHON_HASH: Final = "blake2b-json"
SQL_HASH: Final = "pg-jsonb"
HASHES = (SQL_HASH, PYTHON_HASH)
"""Best first: reconcile takes the first one both sides list."""


def available_hashes(session: Session) -> list[str]:
    if session.get_bind().dialect.name == "postgresql":
        return [SQL_HASH, PYTHON_HASH]
    return [PYTHON_HASH]


def _sql_hash(spec: EntitySpec) -> ColumnElement[int]:
    table = spec.table
    columns = [table.c[spec.key], table.c[spec.version], *(table.c[c] for c in spec.data_columns)]
    return cast(func.hashtextextended(cast(func.jsonb_build_array(*columns), Text), 0), BigInteger)


def row_hash(key: int, version: int, data: Mapping[str, Any]) -> int:
    canonical = json.dumps([key, version, dict(sorted(data.items()))], separators=(",", ":"))
    return int.from_bytes(hashlib.blake2b(canonical.encode(), digest_size=8).digest(), "big")


def _rows(session: Session, spec: EntitySpec, lo: int, hi: int) -> Iterable[Any]:
    table = spec.table
    columns = [table.c[spec.key], table.c[spec.version], *(table.c[c] for c in spec.data_columns)]
    query = (
        select(*columns)
        .where(table.c[spec.key] >= lo, table.c[spec.key] < hi)
        .order_by(table.c[spec.key])
        .execution_options(yield_per=2000)
    )
    return session.execute(query)


def range_sums(
    session: Session,
    spec: EntitySpec,
    bounds: list[tuple[int, int]],
    hash_name: str = PYTHON_HASH,
) -> list[RangeSum]:
    """Count and checksum of the rows with lo <= key < hi, for each (lo, hi)."""
    if hash_name == SQL_HASH:
        key = spec.table.c[spec.key]
        sums = []
        for lo, hi in bounds:
            count, total = session.execute(
                select(func.count(), func.coalesce(func.sum(_sql_hash(spec)), 0)).where(
                    key >= lo, key < hi
                )
            ).one()
            sums.append({"lo": lo, "hi": hi, "count": count, "checksum": int(total) & _MASK})
        return sums
    out = []
    for lo, hi in bounds:
        total, count = 0, 0
        for row in _rows(session, spec, lo, hi):
            data = dict(zip(spec.data_columns, row[2:], strict=True))
            total = (total + row_hash(row[0], row[1], data)) & _MASK
            count += 1
        out.append({"lo": lo, "hi": hi, "count": count, "checksum": total})
    return out


def rows_in_range(
    session: Session, spec: EntitySpec, lo: int, hi: int, hash_name: str = PYTHON_HASH
) -> list[dict[str, Any]]:
    """Every row with lo <= key < hi: key, version, data and its hash."""
    if hash_name == SQL_HASH:
        table = spec.table
        columns = [
            table.c[spec.key],
            table.c[spec.version],
            *(table.c[c] for c in spec.data_columns),
        ]
        result = session.execute(
            select(*columns, _sql_hash(spec))
            .where(table.c[spec.key] >= lo, table.c[spec.key] < hi)
            .order_by(table.c[spec.key])
        )
        return [
            {
                "key": r[0],
                "version": r[1],
                "data": dict(zip(spec.data_columns, r[2:-1], strict=True)),
                "hash": int(r[-1]) & _MASK,
            }
            for r in result
        ]
    rows = []
    for row in _rows(session, spec, lo, hi):
        data = dict(zip(spec.data_columns, row[2:], strict=True))
        rows.append(
            {"key": row[0], "version": row[1], "data": data, "hash": row_hash(row[0], row[1], data)}
        )
    return rows


def key_bounds(session: Session, spec: EntitySpec) -> dict[str, Any]:
    """The key range and row count, and the row hashes this side can compute."""
    key = spec.table.c[spec.key]
    low, high, count = session.execute(select(func.min(key), func.max(key), func.count())).one()
    return {"min": low, "max": high, "count": count, "hashes": available_hashes(session)}


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
