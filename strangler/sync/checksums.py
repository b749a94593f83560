"""Row and range checksums both sides compute identically, so reconcile can compare them
without either side reading the other's database.

A row's hash covers its key, version and data columns; a range's checksum is the sum of its
rows' hashes modulo 2**64 (order-free, so both sides may stream in any order) together with
the row count. A range can be asked for in buckets (strangler.sync.wire.split_range's): one
read of the range then answers every bucket.

Two ways to hash, and reconcile uses the best both sides offer:
- `blake2b-json` (every database): rows are read out in a canonical JSON form and hashed
  here, about 10 us a row.
- `pg-record` (PostgreSQL): the database hashes the text of `ROW(key, version, data...)`
  with `hashtextextended` and sums it in the query that reads the range: a range costs what
  one aggregate query costs (the record's text is about three times cheaper to make than a
  jsonb array's). Only comparable with another PostgreSQL side whose columns print alike,
  which is why the hash is negotiated (`hashes` in the bounds answer), not chosen per side.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Select, Text, case, cast, func, select, text
from sqlalchemy.orm import Session

from strangler.sync.apply import EntitySpec
from strangler.sync.wire import (
    PYTHON_HASH,
    SQL_HASH,
    bucket_of,
    bucket_shape,
    split_range,
)

__all__ = [
    "RangeSum",
    "available_hashes",
    "key_bounds",
    "range_sums",
    "row_hash",
    "rows_in_range",
]

_MASK = (1 << 64) - 1
RangeSum = dict[str, int]


def available_hashes(session: Session) -> list[str]:
    if session.get_bind().dialect.name == "postgresql":
        return [SQL_HASH, PYTHON_HASH]
    return [PYTHON_HASH]


def _sql_hash(spec: EntitySpec) -> ColumnElement[int]:
    table = spec.table
    columns = [table.c[spec.key], table.c[spec.version], *(table.c[c] for c in spec.data_columns)]
    return cast(func.hashtextextended(cast(func.ROW(*columns), Text), 0), BigInteger)


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
    buckets: int = 1,
) -> list[RangeSum]:
    """Count and checksum of the rows with lo <= key < hi, for each (lo, hi), each split into
    `buckets` as split_range splits it: one pass over a range answers all of its buckets."""
    out: list[RangeSum] = []
    for lo, hi in bounds:
        edges = split_range(lo, hi, buckets)
        counts, totals = [0] * len(edges), [0] * len(edges)
        if hash_name == SQL_HASH and edges:
            # Hash the buckets: the planner, not knowing there are only a few thousand of
            # them, sorts a million rows across parallel workers instead, which doubles the
            # CPU a side spends while the other side checksums at the same time.
            session.execute(text("SET LOCAL enable_sort = off"))
            for bucket, count, total in session.execute(_bucket_sums(spec, lo, hi, len(edges))):
                counts[bucket], totals[bucket] = count, int(total) & _MASK
        elif edges:
            for row in _rows(session, spec, lo, hi):
                bucket = bucket_of(row[0], lo, hi, len(edges))
                data = dict(zip(spec.data_columns, row[2:], strict=True))
                totals[bucket] = (totals[bucket] + row_hash(row[0], row[1], data)) & _MASK
                counts[bucket] += 1
        out += [
            {"lo": a, "hi": b, "count": counts[n], "checksum": totals[n]}
            for n, (a, b) in enumerate(edges)
        ]
    return out


def _bucket_sums(spec: EntitySpec, lo: int, hi: int, buckets: int) -> Select[Any]:
    key = spec.table.c[spec.key]
    step, extra, wide = bucket_shape(lo, hi, buckets)
    offset = key - lo
    bucket = case(
        (offset < extra * wide, offset // wide),
        else_=extra + (offset - extra * wide) // step,
    ).label("bucket")
    return (
        select(bucket, func.count(), func.coalesce(func.sum(_sql_hash(spec)), 0))
        .where(key >= lo, key < hi)
        .group_by(bucket)
    )


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


def key_bounds(session: Session, spec: EntitySpec, *, count: bool = True) -> dict[str, Any]:
    """The key range, the row count (None unless asked: it reads the whole table, where
    min and max take one index lookup each), and the row hashes this side can compute."""
    key = spec.table.c[spec.key]
    low, high = session.execute(select(func.min(key), func.max(key))).one()
    rows = session.scalar(select(func.count()).select_from(spec.table)) if count else None
    return {"min": low, "max": high, "count": rows, "hashes": available_hashes(session)}
