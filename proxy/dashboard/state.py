"""What the migration dashboard shows, gathered at most once a second however many watch.

Nothing here runs on the proxy's request path. Requests per second, shadow mismatches and
relay lag come from the sampled history (proxy.dashboard.history, filled by
proxy.dashboard.sampler while someone watches): the current figures are its newest samples,
the charts its last five minutes. The last reconcile and backfill come from the records the
CLI keeps in the state directory, the rest from the running config. One snapshot is shared by
every poll within a second, so ten open browser tabs cost what one does.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from proxy.dashboard.history import (
    SIDES,
    History,
    Rate,
    Sample,
    recent_rates,
    trend,
    trend_view,
)
from proxy.dashboard.sampler import Sampler
from proxy.metrics import ProxyMetrics
from strangler.phases import PHASES, Phase, SyncDirection, routing_of
from strangler.runbook import STEPS, next_command

if TYPE_CHECKING:
    from proxy.app import ProxyRuntime

__all__ = ["DashboardState", "Rate", "read_request_counts"]

Counts = dict[tuple[str, str], tuple[float, float]]
"""(capability, upstream) -> (requests answered, of which 5xx), since the proxy started."""


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


_OUTBOXES = ((SyncDirection.FORWARD, "monolith"), (SyncDirection.REVERSE, "service"))
"""Where each direction's events wait: in the outbox of the side they come from."""
_MAX_SAMPLES = 3
_MAX_DIFF_CHARS = 4000
_AUDIT_ENTRIES = 15
_LAG_TIMEOUT = 1.0


class DashboardState:
    """Builds the dashboard's snapshot; shared by every poll within `max_age` seconds.

    The history starts with a reading taken when the proxy is built (its counters are zero
    then), so the first look already has a rate: the average since the proxy started, shown
    as such, rather than a placeholder.
    """

    def __init__(self, runtime: ProxyRuntime, *, max_age: float = 1.0) -> None:
        self._runtime = runtime
        self._max_age = max_age
        self._history = History()
        self._history.add(self._read(time.monotonic(), read_request_counts(runtime.metrics), {}))
        self._sampler = Sampler(self._take, self._history)
        self._lock = asyncio.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    async def snapshot(self) -> dict[str, Any]:
        async with self._lock:  # concurrent polls wait for one build instead of each building
            await self._sampler.watched()
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._max_age:
                return self._cached[1]
            built = await self._build()
            self._cached = (time.monotonic(), built)
            return built

    async def _take(self) -> dict[str, Sample]:
        """One sample of every capability: counters first (their time is the sample's), then
        both sides' lag, asked at once."""
        at = time.monotonic()
        counts = read_request_counts(self._runtime.metrics)
        return self._read(at, counts, await self._relay_lags())

    def _read(
        self, at: float, counts: Counts, lags: Mapping[tuple[str, str], dict[str, Any]]
    ) -> dict[str, Sample]:
        samples: dict[str, Sample] = {}
        for name, route in self._runtime.state.current.capabilities.items():
            stats = self._runtime.shadow.stats.get(name)
            upstreams = {"monolith": route.monolith.name, "service": route.service.name}
            samples[name] = Sample(
                at=at,
                requests={side: counts.get((name, upstreams[side]), (0.0, 0.0)) for side in SIDES},
                compared=stats.compared if stats else 0,
                mismatched=stats.mismatched if stats else 0,
                relay={
                    direction.value: lags.get((name, side), {"error": "not asked"})
                    for direction, side in _OUTBOXES
                },
            )
        return samples

    async def _build(self) -> dict[str, Any]:
        runtime = self._runtime
        compiled = runtime.state.current
        status = runtime.status()
        names = list(compiled.capabilities)
        records = await anyio.to_thread.run_sync(self._read_records, names)
        now = time.monotonic()
        capabilities: dict[str, Any] = {}
        for name, route in compiled.capabilities.items():
            view: dict[str, Any] = status["capabilities"][name]  # type: ignore[index]
            phase = route.policy.phase
            sides = {"monolith": route.monolith.name, "service": route.service.name}
            samples = self._history.of(name)
            latest = samples[-1].relay if samples else {}
            capabilities[name] = {
                **_phase_view(name, phase, route.config.canary_percent, route.config.prefixes[0]),
                "reads": view["reads"],
                "writes": view["writes"],
                "canary_percent": view["canary_percent"],
                "shadow_percent": view["shadow_percent"],
                "requests": _requests_view(sides, recent_rates(samples)),
                "shadow": self._shadow_view(name, view.get("shadow")),
                "relay": {
                    direction.value: {
                        "active": routing_of(phase).sync is direction,
                        **latest.get(direction.value, {"error": "not asked yet"}),
                    }
                    for direction in (SyncDirection.FORWARD, SyncDirection.REVERSE)
                },
                "trend": trend_view(trend(samples, now=now), now=now),
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


def _phase_view(
    name: str, phase: Phase, canary_percent: float = 0.0, prefix: str = "/"
) -> dict[str, Any]:
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
        "next_command": next_command(name, phase, canary_percent, prefix),
        "previous_phase": previous.value if previous else None,
        # The runbook's step for a phase says how to roll back *out of* it.
        "rollback_note": STEPS[phase].rollback if previous else None,
    }


def _requests_view(sides: Mapping[str, str], rates: Mapping[str, Rate] | None) -> dict[str, Any]:
    """The current requests per second by side, and over how long they were measured. No
    rates (`sides` empty) only before a capability's second sample: at most two intervals
    after it first appears in the routing config."""
    if rates is None:
        return {"window_seconds": None, "sides": {}}
    per_side = {}
    for side, upstream in sides.items():
        rate = rates.get(side)
        per_side[side] = {
            "upstream": upstream,
            "per_second": round(rate.per_second, 2) if rate else 0.0,
            "errors_per_second": round(rate.errors_per_second, 2) if rate else 0.0,
        }
    window = max((r.window_seconds for r in rates.values()), default=None)
    return {"window_seconds": window, "sides": per_side}


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
