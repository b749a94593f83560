"""What the migration dashboard shows, gathered at most once a second however many watch.

Everything here is read when a dashboard polls, never on the proxy's request path: requests per
second come from the proxy's own Prometheus counters (two readings a few seconds apart, not a
hook per request), relay lag from each side's sync API, the last reconcile and backfill from
the records the CLI keeps in the state directory, the rest from the running config. One
snapshot is shared by every poll within a second, so ten open browser tabs cost what one does.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from proxy.metrics import ProxyMetrics
from strangler.phases import PHASES, Phase, SyncDirection, routing_of
from strangler.runbook import STEPS, next_command

if TYPE_CHECKING:
    from proxy.app import ProxyRuntime

__all__ = ["DashboardState", "RequestRates", "Rate", "read_request_counts"]

Counts = dict[tuple[str, str], tuple[float, float]]
"""(capability, upstream) -> (requests answered, of which 5xx), since the proxy started."""


@dataclass(frozen=True)
class Rate:
    """Requests per second answered by one upstream for one capability, and the 5xx among
    them, over the last `window_seconds`."""

    per_second: float
    errors_per_second: float
    window_seconds: float


def read_request_counts(metrics: ProxyMetrics) -> Counts:
    """The proxy's request counters, summed over status classes (5xx kept apart)."""
    counts: Counts = {}
    for family in metrics.requests.collect():
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            key = (sample.labels["capability"], sample.labels["upstream"])
            total, errors = counts.get(key, (0.0, 0.0))
            failed = sample.value if sample.labels["status_class"] == "5xx" else 0.0
            counts[key] = (total + sample.value, errors + failed)
    return counts


class RequestRates:
    """Requests per second from counter readings taken at most once per `min_interval`.

    A reading is taken only when someone asks (a dashboard poll), so an unwatched proxy does no
    work at all; the rate is the difference between the newest reading and the oldest one
    still inside `window` seconds. Until two readings exist (the first poll after a quiet
    spell) there is no rate: None, which the page shows as "measuring".
    """

    def __init__(
        self,
        read: Callable[[], Counts],
        *,
        window: float = 5.0,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._window = window
        self._min_interval = min_interval
        self._clock = clock
        self._readings: deque[tuple[float, Counts]] = deque()

    def rates(self) -> dict[tuple[str, str], Rate] | None:
        now = self._clock()
        if not self._readings or now - self._readings[-1][0] >= self._min_interval:
            self._readings.append((now, self._read()))
        while len(self._readings) > 1 and self._readings[0][0] < now - self._window:
            self._readings.popleft()
        (since, base), (until, latest) = self._readings[0], self._readings[-1]
        elapsed = until - since
        if elapsed <= 0:
            return None
        rates: dict[tuple[str, str], Rate] = {}
        for key, (total, errors) in latest.items():
            # A label seen for the first time after `base` was taken: all of it is new.
            old_total, old_errors = base.get(key, (0.0, 0.0))
            rates[key] = Rate(
                per_second=max(0.0, total - old_total) / elapsed,
                errors_per_second=max(0.0, errors - old_errors) / elapsed,
                window_seconds=elapsed,
            )
        return rates


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


@dataclass(frozen=True)
class _Records:
    """What the state directory and the audit log say, read in one worker thread."""

    reconcile: dict[str, dict[str, Any] | None]
    backfill: dict[str, dict[str, Any] | None]
    audit: list[dict[str, Any]]


_MAX_SAMPLES = 3
_MAX_DIFF_CHARS = 4000
_AUDIT_ENTRIES = 15
_LAG_TIMEOUT = 1.0


class DashboardState:
    """Builds the dashboard's snapshot; shared by every poll within `max_age` seconds."""

    def __init__(self, runtime: ProxyRuntime, *, max_age: float = 1.0) -> None:
        self._runtime = runtime
        self._max_age = max_age
        self._rates = RequestRates(lambda: read_request_counts(runtime.metrics))
        self._lock = asyncio.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    async def snapshot(self) -> dict[str, Any]:
        async with self._lock:  # concurrent polls wait for one build instead of each building
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._max_age:
                return self._cached[1]
            built = await self._build()
            self._cached = (time.monotonic(), built)
            return built

    async def _build(self) -> dict[str, Any]:
        runtime = self._runtime
        compiled = runtime.state.current
        status = runtime.status()
        rates = self._rates.rates()
        names = list(compiled.capabilities)
        records = await anyio.to_thread.run_sync(self._read_records, names)
        lags = await self._relay_lags()
        capabilities: dict[str, Any] = {}
        for name, route in compiled.capabilities.items():
            view: dict[str, Any] = status["capabilities"][name]  # type: ignore[index]
            phase = route.policy.phase
            sides = {"monolith": route.monolith.name, "service": route.service.name}
            capabilities[name] = {
                **_phase_view(name, phase),
                "reads": view["reads"],
                "writes": view["writes"],
                "canary_percent": view["canary_percent"],
                "shadow_percent": view["shadow_percent"],
                "requests": _requests_view(name, sides, rates),
                "shadow": self._shadow_view(name, view.get("shadow")),
                "relay": {
                    direction.value: {
                        "active": routing_of(phase).sync is direction,
                        **lags.get((name, side), {"error": "not asked"}),
                    }
                    for direction, side in (
                        (SyncDirection.FORWARD, "monolith"),
                        (SyncDirection.REVERSE, "service"),
                    )
                },
                "reconcile": records.reconcile.get(name),
                "backfill": records.backfill.get(name),
                "breakers": {
                    side: {
                        "upstream": upstream,
                        **compiled.upstreams[upstream].breaker.snapshot(),
                    }
                    for side, upstream in sides.items()
                },
                "fence": view["fence"],
            }
        return {
            "generated_at": time.time(),
            "config_version": compiled.version,
            "last_reload_error": runtime.last_reload_error,
            "relay_known": runtime.sync_token is not None,
            "capabilities": capabilities,
            "audit": records.audit,
        }

    def _read_records(self, names: list[str]) -> _Records:
        state_dir = self._runtime.settings.state_dir
        audit = self._runtime.routing_file.audit_tail(_AUDIT_ENTRIES)
        return _Records(
            reconcile={n: _read_json(state_dir / f"reconcile-{n}.json") for n in names},
            backfill={
                n: _backfill_view(_read_json(state_dir / f"backfill-{n}.json")) for n in names
            },
            audit=list(reversed(audit)),
        )

    def _shadow_view(self, name: str, stats: object) -> dict[str, Any]:
        recorded = self._runtime.shadow.stats.get(name)
        samples = list(recorded.samples)[-_MAX_SAMPLES:] if recorded else []
        return {
            **(stats if isinstance(stats, dict) else {}),
            "samples": [
                {
                    "at": sample.get("at"),
                    "request": sample.get("request"),
                    "primary": _side_of(sample.get("primary")),
                    "shadow": _side_of(sample.get("shadow")),
                    "diff": str(sample.get("diff", ""))[:_MAX_DIFF_CHARS],
                }
                for sample in reversed(samples)
            ],
        }

    async def _relay_lags(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Each side's outbox (pending, oldest, dead letters) per capability, asked of both
        sides at once with a short deadline: a stalled side shows as such, the page goes on."""
        token = self._runtime.sync_token
        if token is None:
            return {}
        compiled = self._runtime.state.current
        asks: list[tuple[tuple[str, str], str]] = []
        for name, route in compiled.capabilities.items():
            for side, upstream in (("monolith", route.monolith), ("service", route.service)):
                asks.append(((name, side), f"{upstream.config.origin}/internal/sync/{name}/lag"))
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            timeout=_LAG_TIMEOUT, trust_env=False, headers=headers
        ) as client:
            answers = await asyncio.gather(*(_ask_lag(client, url) for _, url in asks))
        return {key: answer for (key, _), answer in zip(asks, answers, strict=True)}


async def _ask_lag(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """One side's outbox lag, or {"error": ...} saying why not: whatever the side answers
    (or fails to), the page goes on."""
    try:
        response = await client.get(url)
    except httpx.TimeoutException:
        return {"error": f"no answer within {_LAG_TIMEOUT:g} s"}
    except httpx.TransportError:
        return {"error": "unreachable"}
    except httpx.HTTPError as exc:  # a broken answer: bad encoding, too many redirects, ...
        return {"error": f"answered something unreadable ({type(exc).__name__})"}
    if response.status_code != 200:
        return {"error": f"answered {response.status_code}"}
    try:
        body = response.json()
        if not isinstance(body, dict):
            raise TypeError("not an object")
        age = body.get("oldest_age_seconds")
        return {
            "pending": _count(body["pending"]),
            "oldest_age_seconds": None if age is None else _seconds(age),
            "dead_letters": _count(body["dead_letters"]),
        }
    except (ValueError, KeyError, TypeError):  # ValueError: not JSON, or not UTF-8
        return {"error": "answered something else than its lag"}


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"not a count: {value!r}")
    return value


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number of seconds: {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a number of seconds: {value!r}")
    return float(value)


def _phase_view(name: str, phase: Phase) -> dict[str, Any]:
    """The ladder of phases with this one marked, and what the runbook says about the next."""
    ladder = []
    for step in PHASES:
        routing = routing_of(step)
        ladder.append(
            {
                "phase": step.value,
                "title": STEPS[step].title,
                "reads": routing.reads.value if routing.reads else "split",
                "writes": routing.writes.value,
                "sync": routing.sync.value if routing.sync else None,
                "state": (
                    "current"
                    if step is phase
                    else "done"
                    if step.position < phase.position
                    else "todo"
                ),
            }
        )
    following = PHASES[phase.position + 1] if phase is not PHASES[-1] else None
    previous = PHASES[phase.position - 1] if phase is not PHASES[0] else None
    return {
        "phase": phase.value,
        "title": STEPS[phase].title,
        "ladder": ladder,
        "next_phase": following.value if following else None,
        "next_checks": [c.replace("<capability>", name) for c in STEPS[following].check]
        if following
        else [],
        "next_command": next_command(name, phase),
        "previous_phase": previous.value if previous else None,
        # The runbook's step for a phase says how to roll back *out of* it.
        "rollback_note": STEPS[phase].rollback if previous else None,
    }


def _requests_view(
    name: str, sides: Mapping[str, str], rates: dict[tuple[str, str], Rate] | None
) -> dict[str, Any]:
    if rates is None:
        return {"measuring": True, "window_seconds": None, "sides": {}}
    window = max((r.window_seconds for r in rates.values()), default=None)
    per_side = {}
    for side, upstream in sides.items():
        rate = rates.get((name, upstream))
        per_side[side] = {
            "upstream": upstream,
            "per_second": round(rate.per_second, 2) if rate else 0.0,
            "errors_per_second": round(rate.errors_per_second, 2) if rate else 0.0,
        }
    return {"measuring": False, "window_seconds": window, "sides": per_side}


def _backfill_view(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "rows": record.get("rows", 0),
        "rejected": record.get("rejected", 0),
        "finished": bool(record.get("finished")),
    }


def _side_of(answer: object) -> dict[str, Any]:
    if not isinstance(answer, dict):
        return {}
    return {"side": answer.get("side"), "status": answer.get("status")}
