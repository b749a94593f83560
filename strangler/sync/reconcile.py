"""Reconcile: find every row on which the two sides differ, through their sync APIs only.

Both sides checksum the same key ranges, each split into buckets in the same answer, so one
read of a table gives the checksum of every leaf of it (a few hundred keys each); leaves that
agree are done, leaves that differ are compared row by row. When the sides mostly agree this
costs about one checksum pass over each table, the two sides reading at the same time.
Repair re-emits the differing keys from the source of truth at versions above anything either
side holds, and applies them to the other side at once. The source of truth is the side the
phase gives the writes, and only while the phase stays what it was when the sides were
compared (`repair_refusal`): a re-emit from the other side would carry stale rows over
acknowledged newer writes, and win by version.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from strangler.phases import Phase, Side, SyncDirection, routing_of
from strangler.sync.client import SyncClient
from strangler.sync.wire import HASHES, MAX_BUCKETS, split_range

__all__ = [
    "Difference",
    "common_hash",
    "ReconcileReport",
    "compared_direction",
    "last_verdict",
    "reconcile",
    "remember_verdict",
    "repair",
    "repair_refusal",
    "source_side",
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


def _checksums(
    side: SyncClient, ranges: list[tuple[int, int]], hash_name: str, leaf_size: int
) -> list[dict[str, int]]:
    """One call a range, each range split into buckets of about `leaf_size` keys (at most
    MAX_BUCKETS): the side reads the range once and answers every bucket of it."""
    sums: list[dict[str, int]] = []
    for lo, hi in ranges:
        buckets = min(MAX_BUCKETS, -(-(hi - lo) // leaf_size))
        sums.extend(side.checksums([(lo, hi)], hash_name, buckets))
    return sums


def _both_sides(
    source: SyncClient,
    target: SyncClient,
    ranges: list[tuple[int, int]],
    hash_name: str,
    leaf_size: int,
) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    """Both sides checksum the same ranges at the same time: each works on its own database."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        target_sums = pool.submit(_checksums, target, ranges, hash_name, leaf_size)
        source_sums = _checksums(source, ranges, hash_name, leaf_size)
        return source_sums, target_sums.result()


_LEAF_READERS = 4
"""Leaves compared at once: each is two small reads, one a side."""


def _compare(
    source: SyncClient, target: SyncClient, leaves: list[tuple[int, int]], hash_name: str
) -> list[list[Difference]]:
    """The differences within each leaf, in the order of `leaves`, reading several at once."""

    def one(leaf: tuple[int, int]) -> list[Difference]:
        return _diff_rows(source.rows(*leaf, hash_name), target.rows(*leaf, hash_name))

    if len(leaves) <= 1:
        return [one(leaf) for leaf in leaves]
    with ThreadPoolExecutor(max_workers=_LEAF_READERS) as pool:
        return list(pool.map(one, leaves))


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
    leaf_size: int = 256,
    on_range: Callable[[int], None] = lambda n: None,
    confirm_seconds: float = 0.0,
) -> ReconcileReport:
    """Every row the two sides disagree on.

    The first round reads each table once: ranges of up to MAX_BUCKETS leaves, every leaf's
    checksum in the same answer. A leaf that differs is compared row by row; on a table
    larger than that, a differing bucket wider than a leaf is split the same way next round.

    With `confirm_seconds`, differing leaves are compared again for up to that long, and only
    keys that differ every time are reported: under live writes a row can differ for a moment
    because its event is still on the way, which is lag, not a lost write.
    """
    report = ReconcileReport(source=source.base_url, target=target.base_url)
    with ThreadPoolExecutor(max_workers=1) as pool:
        asked = pool.submit(target.bounds, count=False)  # the first round counts the rows
        a, b = source.bounds(count=False), asked.result()
    hash_name = common_hash(a["hashes"], b["hashes"])
    lows = [v for v in (a["min"], b["min"]) if v is not None]
    highs = [v for v in (a["max"], b["max"]) if v is not None]
    if not lows:
        return report
    low, high = min(lows), max(highs) + 1
    pending = split_range(low, high, -(-(high - low) // (leaf_size * MAX_BUCKETS)))
    leaves: list[tuple[int, int]] = []
    first_round = True
    while pending:
        sums_a, sums_b = _both_sides(source, target, pending, hash_name, leaf_size)
        report.ranges_checked += len(sums_a)
        on_range(len(sums_a))
        if first_round:  # it covers every key either side holds
            report.rows_source = sum(x["count"] for x in sums_a)
            report.rows_target = sum(y["count"] for y in sums_b)
            first_round = False
        next_round: list[tuple[int, int]] = []
        differing: list[tuple[int, int]] = []
        for x, y in zip(sums_a, sums_b, strict=True):
            if (x["lo"], x["hi"]) != (y["lo"], y["hi"]):
                raise ValueError(f"the sides split {x['lo']}..{x['hi']} differently")
            if (x["count"], x["checksum"]) == (y["count"], y["checksum"]):
                continue
            lo, hi = x["lo"], x["hi"]
            (differing if hi - lo <= leaf_size else next_round).append((lo, hi))
        compared = _compare(source, target, differing, hash_name)
        for leaf, found in zip(differing, compared, strict=True):
            if found:
                leaves.append(leaf)
            report.differences.extend(found)
        pending = next_round
    deadline = time.monotonic() + confirm_seconds
    while report.differences and time.monotonic() < deadline:
        time.sleep(min(0.25, confirm_seconds))
        again = {d.key: d for found in _compare(source, target, leaves, hash_name) for d in found}
        report.differences = [again[d.key] for d in report.differences if d.key in again]
    report.differences.sort(key=lambda d: d.key)
    return report


def compared_direction(phase: Phase) -> SyncDirection:
    """Which way a reconcile compares when not told: the way the phase syncs, or, when
    nothing syncs, from the side that takes the writes (the only side a repair may use)."""
    routing = routing_of(phase)
    if routing.sync is not None:
        return routing.sync
    return SyncDirection.FORWARD if routing.writes is Side.MONOLITH else SyncDirection.REVERSE


def source_side(direction: SyncDirection) -> Side:
    """The side that is the source when comparing in `direction`."""
    return Side.MONOLITH if direction is SyncDirection.FORWARD else Side.SERVICE


def repair_refusal(started: Phase, now: Phase, source: Side) -> str | None:
    """Why a repair from `source` may not run now, or None when it may.

    `started` is the phase the reconcile began in, `now` the phase read again just before
    repairing. A phase change in between may have moved the writes: the differences were
    found against the sides as they were, and the source may no longer hold the newest
    acknowledged writes. And a source that does not take the writes never may: its re-emitted
    rows, at versions above both sides', would overwrite newer writes.
    """
    if now is not started:
        return (
            f"the phase changed from {started.value} to {now.value} since the reconcile "
            "started; its differences describe the sides as they were, and the side that "
            "takes the writes may have changed. Nothing was repaired."
        )
    writer = routing_of(now).writes
    if source is not writer:
        return (
            f"a repair from the {source.value} would re-emit its rows over the {writer.value}'s, "
            f"but in phase {now.value} the {writer.value} takes the writes: the {source.value}'s "
            "rows may be older than acknowledged writes, and would overwrite them. Nothing was "
            "repaired."
        )
    return None


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
