"""The dashboard's trends: a bounded ring of samples per capability, and the figures drawn
from it (requests per second by side, shadow mismatch rate, relay lag).

Why the proxy keeps the history and not the page: a ring in the page would be lost on every
reload and built again by every open tab; one ring in the proxy survives a reload, is shared
by every watcher, and is bounded once and for all. Why it costs the request path nothing: a
sample is a reading of counters the proxy keeps anyway (its Prometheus request counters, the
shadow stats) plus each side's outbox lag, taken on a timer by `proxy.dashboard.sampler`; all
rates are differences between two readings, never a hook per request.

The bound: `KEEP` (152) samples per capability, one every `INTERVAL_SECONDS` (2 s), enough for
`WINDOW_SECONDS` (5 min) of history and the reading before it. A sample is a handful of
numbers and the two lag answers, about 1.5 kB as tracemalloc measures it, so a capability's
ring never holds more than about 230 kB, however long the proxy runs. Rings of capabilities
that leave the routing config are dropped with them.

Everything here is plain functions over plain data; `tests/dashboard/test_history.py` pins it
without I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

__all__ = [
    "DIRECTIONS",
    "INTERVAL_SECONDS",
    "KEEP",
    "RATE_SECONDS",
    "SIDES",
    "WINDOW_SECONDS",
    "History",
    "Point",
    "Rate",
    "Sample",
    "increase",
    "mismatch_rate",
    "rates",
    "recent_rates",
    "relay_seconds",
    "trend",
    "trend_view",
]

SIDES = ("monolith", "service")
DIRECTIONS = ("monolith_to_service", "service_to_monolith")

WINDOW_SECONDS = 300.0
"""How far back the charts reach."""
INTERVAL_SECONDS = 2.0
"""How often the sampler reads: a 5-minute chart gets 150 points, and the current figures on
the page (which poll every 1.5 s) are at most one interval old."""
RATE_SECONDS = 6.0
"""The current requests per second are averaged over about this long (a few intervals), so
one slow interval does not make the figure jump."""
KEEP = math.ceil(WINDOW_SECONDS / INTERVAL_SECONDS) + 2
"""Samples kept per capability: the window's, the one before it (the first point's base) and
one spare for the sample that takes longer than an interval."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One capability as the sampler saw it at `at` (seconds on a monotonic clock).

    `requests` maps each side to (requests answered, of which 5xx) and `compared` /
    `mismatched` are the shadow stats: counters since the proxy started, which only a reset
    (a restart, a side moved to another upstream) makes go down. `relay` maps each direction
    to that side's outbox lag as it answered ({"pending", "oldest_age_seconds",
    "dead_letters"}) or {"error": why not}.
    """

    at: float
    requests: Mapping[str, tuple[float, float]]
    compared: int
    mismatched: int
    relay: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Rate:
    """Requests per second answered by one side, and the 5xx among them, over the last
    `window_seconds`."""

    per_second: float
    errors_per_second: float
    window_seconds: float


@dataclass(frozen=True, slots=True)
class Point:
    """What one interval between two samples shows, placed at its end (`at`): requests per
    second by side, the share of shadow compares that mismatched (None: nothing compared),
    and each direction's relay lag in seconds (None: the side did not say)."""

    at: float
    requests: Mapping[str, float]
    mismatch_rate: float | None
    relay: Mapping[str, float | None]


class History:
    """The last `keep` samples of each capability, oldest first."""

    def __init__(self, *, keep: int = KEEP) -> None:
        if keep < 2:
            raise ValueError("a rate needs two samples: keep at least 2")
        self._keep = keep
        self._rings: dict[str, deque[Sample]] = {}

    def add(self, samples: Mapping[str, Sample]) -> None:
        """One reading of every configured capability; the oldest sample of a full ring goes,
        and so does the ring of a capability that is no longer configured."""
        for name in self._rings.keys() - samples.keys():
            del self._rings[name]
        for name, sample in samples.items():
            self._rings.setdefault(name, deque(maxlen=self._keep)).append(sample)

    def of(self, name: str) -> list[Sample]:
        return list(self._rings.get(name, ()))


def increase(old: float, new: float) -> float:
    """How much a counter grew from `old` to `new`. A counter that went down was reset and
    counted again from zero since, as Prometheus' rate() reads it: `new`, never a negative
    rate."""
    return new - old if new >= old else new


def _increases(samples: Sequence[Sample], side: str, field: int) -> float:
    return sum(
        increase(
            older.requests.get(side, (0.0, 0.0))[field], newer.requests.get(side, (0.0, 0.0))[field]
        )
        for older, newer in pairwise(samples)
    )


def rates(samples: Sequence[Sample]) -> dict[str, Rate] | None:
    """Requests per second by side from the first to the last of `samples` (consecutive
    readings: each step's increase is taken on its own, so a reset in between loses only that
    step's count). None for fewer than two samples or no time between them."""
    if len(samples) < 2:
        return None
    elapsed = samples[-1].at - samples[0].at
    if elapsed <= 0:
        return None
    return {
        side: Rate(
            per_second=_increases(samples, side, 0) / elapsed,
            errors_per_second=_increases(samples, side, 1) / elapsed,
            window_seconds=elapsed,
        )
        for side in SIDES
    }


def recent_rates(
    samples: Sequence[Sample], *, over: float = RATE_SECONDS
) -> dict[str, Rate] | None:
    """The current requests per second: over the samples of the last `over` seconds, or, when
    the newest has no sample that recent before it, since the one right before it however old
    (the first look after a quiet spell: the average since then is still a true figure, where
    "no figure yet" would not be)."""
    if len(samples) < 2:
        return None
    start = len(samples) - 2
    while start > 0 and samples[-1].at - samples[start - 1].at <= over:
        start -= 1
    return rates(samples[start:])


def mismatch_rate(older: Sample, newer: Sample) -> float | None:
    """The share of the shadow compares between two samples that mismatched; None when none
    were compared (no figure, not a perfect one). The two counters are one set of stats: when
    `compared` was reset, `mismatched` was too, even if it happens to read as no less."""
    compared, mismatched = float(newer.compared), float(newer.mismatched)
    if newer.compared >= older.compared:  # not reset
        compared -= older.compared
        mismatched = increase(older.mismatched, newer.mismatched)
    return min(1.0, mismatched / compared) if compared > 0 else None


def relay_seconds(answer: Mapping[str, Any]) -> float | None:
    """How long the oldest event waiting in one direction's outbox has waited: 0 when nothing
    waits, None when the side did not say (unreachable, garbled, not asked)."""
    if "error" in answer:
        return None
    age = answer.get("oldest_age_seconds")
    if isinstance(age, int | float) and not isinstance(age, bool) and math.isfinite(age):
        return float(age)
    pending = answer.get("pending")
    return 0.0 if pending == 0 and not isinstance(pending, bool) else None


def _point(older: Sample, newer: Sample) -> Point | None:
    per_side = rates((older, newer))
    if per_side is None:
        return None
    return Point(
        at=newer.at,
        requests={side: rate.per_second for side, rate in per_side.items()},
        mismatch_rate=mismatch_rate(older, newer),
        relay={d: relay_seconds(newer.relay.get(d, {"error": "not asked"})) for d in DIRECTIONS},
    )


def trend(samples: Sequence[Sample], *, now: float, window: float = WINDOW_SECONDS) -> list[Point]:
    """One point per interval between consecutive samples that ended within the last `window`
    seconds before `now`, oldest first."""
    points = (
        _point(older, newer) for older, newer in pairwise(samples) if now - newer.at <= window
    )
    return [point for point in points if point is not None]


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def trend_view(
    points: Iterable[Point], *, now: float, window: float = WINDOW_SECONDS
) -> dict[str, Any]:
    """The points as the dashboard's JSON carries them: each placed by its age in seconds
    (a monotonic clock means nothing outside this process)."""
    return {
        "window_seconds": window,
        "points": [
            {
                "age_seconds": round(max(0.0, now - point.at), 2),
                "requests": {side: round(value, 3) for side, value in point.requests.items()},
                "mismatch_rate": _rounded(point.mismatch_rate, 6),
                "relay": {d: _rounded(value, 3) for d, value in point.relay.items()},
            }
            for point in points
        ],
    }
