"""Reconcile under live writes: a row whose event is still on the way is lag, not a
difference; one that stays different is reported. Sides are in-memory fakes of the sync API."""

from __future__ import annotations

from typing import Any, cast

import pytest

from strangler.sync.client import SyncClient
from strangler.sync.reconcile import common_hash, reconcile
from strangler.sync.wire import split_range


class _Side:
    """Rows as key -> version; the checksum of a range is the sum of (key, version) pairs."""

    def __init__(self, rows: dict[int, int]) -> None:
        self.rows_by_key = rows
        self.base_url = "fake"
        self.reads = 0

    def bounds(self, *, count: bool = True) -> dict[str, Any]:
        keys = self.rows_by_key
        return {"min": min(keys), "max": max(keys), "count": len(keys), "hashes": ["blake2b-json"]}

    def checksums(
        self, bounds: list[tuple[int, int]], hash_name: str, buckets: int = 1
    ) -> list[dict[str, Any]]:
        out = []
        for lo, hi in [edge for b in bounds for edge in split_range(*b, buckets)]:
            inside = [(k, v) for k, v in self.rows_by_key.items() if lo <= k < hi]
            out.append(
                {"lo": lo, "hi": hi, "count": len(inside), "checksum": hash(tuple(sorted(inside)))}
            )
        return out

    def rows(self, lo: int, hi: int, hash_name: str) -> list[dict[str, Any]]:
        self.reads += 1
        return [
            {"key": k, "version": v, "hash": str(v)}
            for k, v in sorted(self.rows_by_key.items())
            if lo <= k < hi
        ]


class _CatchingUp(_Side):
    """A target that receives the missing event after it was first looked at."""

    def rows(self, lo: int, hi: int, hash_name: str) -> list[dict[str, Any]]:
        found = super().rows(lo, hi, hash_name)
        if self.reads == 1:
            self.rows_by_key[7] = 3
        return found


def _run(source: _Side, target: _Side, confirm: float) -> list[int]:
    report = reconcile(cast(SyncClient, source), cast(SyncClient, target), confirm_seconds=confirm)
    return [d.key for d in report.differences]


def test_a_row_that_catches_up_is_not_reported_when_confirming() -> None:
    source = {k: 1 for k in range(1, 50)} | {7: 3}
    assert _run(_Side(dict(source)), _CatchingUp({k: 1 for k in range(1, 50)}), 0) == [7]
    assert _run(_Side(dict(source)), _CatchingUp({k: 1 for k in range(1, 50)}), 1.0) == []


def test_a_row_that_stays_different_is_reported_after_confirming() -> None:
    source = {k: 1 for k in range(1, 50)} | {7: 3, 30: 2}
    stale = _Side({k: 1 for k in range(1, 50)})
    assert _run(_Side(source), stale, 0.6) == [7, 30]
    assert stale.reads >= 3  # it looked again before reporting


def test_the_sides_use_the_best_row_hash_both_can_compute() -> None:
    both_postgres = common_hash(["pg-record", "blake2b-json"], ["pg-record", "blake2b-json"])
    assert both_postgres == "pg-record"
    # A SQLite side cannot hash in SQL: a database's hash would never match Python's.
    assert common_hash(["pg-record", "blake2b-json"], ["blake2b-json"]) == "blake2b-json"
    with pytest.raises(ValueError, match="share no row hash"):
        common_hash(["pg-record"], ["blake2b-json"])
