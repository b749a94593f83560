"""Reconcile: find every row on which the two sides differ, through their sync APIs only.

Both sides checksum the same key ranges; ranges that agree are done, ranges that differ are
split and asked again, down to leaves small enough to compare row by row. When the sides
mostly agree this costs little more than one checksum pass over each table; scattered
differences are narrowed adaptively. Repair re-emits the differing keys from the source of
truth at versions above anything either side holds, and applies them to the other side at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from strangler.sync.checksums import HASHES, split_range
from strangler.sync.client import SyncClient

__all__ = [
    "Difference",
    "common_hash",
    "ReconcileReport",
    "last_verdict",
    "reconcile",
    "remember_verdict",
    "repair",
]

Kind = Literal["missing_in_target", "missing_in_source", "version_differs", "content_differs"]


@dataclass(frozen=True)
class Difference:
    key: int
    kind: Kind
    source_version: int | None
    target_version: int | None


@dataclass
class ReconcileReport:
    source: str
    target: str
    rows_source: int = 0
    rows_target: int = 0
    ranges_checked: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return not self.differences

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "rows_source": self.rows_source,
            "rows_target": self.rows_target,
            "ranges_checked": self.ranges_checked,
            "agree": self.agree,
            "differences": [d.__dict__ for d in self.differences],
        }


def _diff_rows(source: list[dict[str, Any]], target: list[dict[str, Any]]) -> list[Difference]:
    left = {r["key"]: r for r in source}
    right = {r["key"]: r for r in target}
    found = []
    for key in sorted(left.keys() | right.keys()):
        a, b = left.get(key), right.get(key)
        if b is None:
            found.append(Difference(key, "missing_in_target", a["version"] if a else None, None))
        elif a is None:
            found.append(Difference(key, "missing_in_source", None, b["version"]))
        elif a["version"] != b["version"]:
            found.append(Difference(key, "version_differs", a["version"], b["version"]))
        elif a["hash"] != b["hash"]:
            found.append(Difference(key, "content_differs", a["version"], b["version"]))
    return found


_RANGES_PER_CALL = 4
"""A round's ranges are asked a few at a time: the first round covers the whole table, and one
call for all of it outlasts the client's timeout on a large table."""


def _checksums(
    side: SyncClient, ranges: list[tuple[int, int]], hash_name: str
) -> list[dict[str, int]]:
    sums: list[dict[str, int]] = []
    for start in range(0, len(ranges), _RANGES_PER_CALL):
        sums.extend(side.checksums(ranges[start : start + _RANGES_PER_CALL], hash_name))
    return sums


def _both_sides(
    source: SyncClient, target: SyncClient, ranges: list[tuple[int, int]], hash_name: str
) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    """Both sides checksum the same ranges at the same time: each works on its own database."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        target_sums = pool.submit(_checksums, target, ranges, hash_name)
        source_sums = _checksums(source, ranges, hash_name)
        return source_sums, target_sums.result()


def common_hash(source_offers: list[str], target_offers: list[str]) -> str:
    """The best row hash both sides can compute (the database's own when both can)."""
    for name in HASHES:
        if name in source_offers and name in target_offers:
            return name
    raise ValueError(
        f"the sides share no row hash (source offers {source_offers}, target {target_offers})"
    )


def reconcile(
    source: SyncClient,
    target: SyncClient,
    *,
    fanout: int = 16,
    leaf_size: int = 256,
    on_range: Callable[[int], None] = lambda n: None,
    confirm_seconds: float = 0.0,
) -> ReconcileReport:
    """Every row the two sides disagree on.

    With `confirm_seconds`, differing leaves are compared again for up to that long, and only
    keys that differ every time are reported: under live writes a row can differ for a moment
    because its event is still on the way, which is lag, not a lost write.
    """
    report = ReconcileReport(source=source.base_url, target=target.base_url)
    a, b = source.bounds(), target.bounds()
    hash_name = common_hash(a["hashes"], b["hashes"])
    report.rows_source, report.rows_target = int(a["count"] or 0), int(b["count"] or 0)
    lows = [v for v in (a["min"], b["min"]) if v is not None]
    highs = [v for v in (a["max"], b["max"]) if v is not None]
    if not lows:
        return report
    pending = split_range(min(lows), max(highs) + 1, fanout)
    leaves: list[tuple[int, int]] = []
    while pending:
        sums_a, sums_b = _both_sides(source, target, pending, hash_name)
        report.ranges_checked += len(pending)
        on_range(len(pending))
        next_round: list[tuple[int, int]] = []
        for x, y in zip(sums_a, sums_b, strict=True):
            if (x["count"], x["checksum"]) == (y["count"], y["checksum"]):
                continue
            lo, hi = x["lo"], x["hi"]
            if hi - lo <= leaf_size:
                found = _diff_rows(source.rows(lo, hi, hash_name), target.rows(lo, hi, hash_name))
                if found:
                    leaves.append((lo, hi))
                report.differences.extend(found)
            else:
                next_round.extend(split_range(lo, hi, fanout))
        pending = next_round
    deadline = time.monotonic() + confirm_seconds
    while report.differences and time.monotonic() < deadline:
        time.sleep(min(0.25, confirm_seconds))
        again = {}
        for lo, hi in leaves:
            pair = source.rows(lo, hi, hash_name), target.rows(lo, hi, hash_name)
            again.update({d.key: d for d in _diff_rows(*pair)})
        report.differences = [again[d.key] for d in report.differences if d.key in again]
    report.differences.sort(key=lambda d: d.key)
    return report


def repair(source: SyncClient, target: SyncClient, differences: list[Difference]) -> int:
    """Re-emit each differing key from the source and apply it to the target; return count."""
    repaired = 0
    for start in range(0, len(differences), 1000):
        chunk = differences[start : start + 1000]
        at_least = {d.key: d.target_version or 0 for d in chunk}
        events = source.reemit([d.key for d in chunk], at_least)
        outcomes = target.apply(events)
        repaired += sum(o.outcome == "applied" for o in outcomes)
    return repaired


def remember_verdict(path: Path, report: ReconcileReport) -> None:
    """Keep the last reconcile's verdict, for `strangler status`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "agree": report.agree,
        "differences": len(report.differences),
    }
    path.write_text(json.dumps(record))


def last_verdict(path: Path) -> str:
    try:
        last = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return "never"
    return f"{last['differences']} differences at {last['at']}"
