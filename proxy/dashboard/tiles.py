"""The five tiles of a capability's card: traffic, shadow reads, relay lag, the data checks,
health. Colours follow the gates' own thresholds, so a figure turns amber or red exactly where
the gate that reads it would refuse. The first three end with a chart of their last minutes
(proxy.dashboard.charts) when the state carries a trend."""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Mapping
from typing import Any

from proxy.dashboard.charts import mismatch_chart, relay_chart, requests_chart
from proxy.dashboard.html import Child, Html, tag
from strangler.gates import Thresholds

__all__ = [
    "ago",
    "duration",
    "health_tile",
    "records_tile",
    "relay_tile",
    "requests_tile",
    "shadow_tile",
]

_LIMITS = Thresholds()
"""What the gates allow."""


def _number(value: object) -> float | None:
    """A figure from a record or another process, or None when it is not a finite number
    (missing, null, text): shown as "unknown", never a crash of the whole page."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _tile(title: str, *body: Child, testid: str | None = None) -> Html:
    return tag("div", tag("h3", title), *body, class_="tile", data_testid=testid)


def _figure(
    label: Child,
    value: Child,
    *,
    state: str = "",
    detail: Child = None,
    testid: str | None = None,
) -> Html:
    """One labelled number; `detail` goes on a small line of its own under both."""
    return tag(
        "div",
        tag("span", label, class_="label"),
        tag("span", value, class_=f"value {state}".strip(), data_testid=testid),
        tag("span", detail, class_="detail") if detail is not None else None,
        class_="figure",
    )


def requests_tile(requests: Mapping[str, Any], trend: Mapping[str, Any] | None = None) -> Html:
    """Requests per second by side now, the service's share, and the last minutes' chart.

    The figures are never a placeholder once the proxy has a reading to compare with (it keeps
    one from its start): "no reading yet" shows only for a capability the routing config
    gained within the last two sampling intervals (it has no earlier reading to compare)."""
    chart = requests_chart(trend) if trend is not None else None
    sides = requests.get("sides") or {}
    if not sides:
        return _tile(
            "requests / s", tag("p", "no reading yet", class_="muted"), chart, testid="requests"
        )
    total = sum(s["per_second"] for s in sides.values()) or 0.0
    figures = []
    for side, rate in sides.items():
        errors = rate["errors_per_second"]
        upstream = rate["upstream"]
        figures.append(
            _figure(
                side if upstream == side else f"{side} · {upstream}",
                f"{rate['per_second']:.1f}",
                state="bad" if errors else "",
                detail=f"5xx {errors:.1f} / s" if errors else None,
                testid=f"rps-{side}",
            )
        )
    share = sides.get("service", {}).get("per_second", 0.0) / total if total else 0.0
    window = requests.get("window_seconds")
    return _tile(
        "requests / s",
        *figures,
        tag("meter", value=f"{share:.3f}", min="0", max="1", title="share served by the service"),
        tag(
            "p",
            f"service share {share:.0%}" + (f" · last {duration(window)}" if window else ""),
            class_="small muted",
        ),
        chart,
        testid="requests",
    )


def shadow_tile(
    shadow: Mapping[str, Any], phase: str, trend: Mapping[str, Any] | None = None
) -> Html:
    compared = int(shadow.get("compared", 0) or 0)
    rate = float(shadow.get("mismatch_rate", 0.0) or 0.0)
    state = "bad" if rate > _LIMITS.max_mismatch_rate else "ok" if compared else ""
    note = "" if phase in ("shadow", "canary") else "compares run in phase shadow"
    return _tile(
        "shadow reads",
        _figure("compared", compared),
        _figure(
            "mismatches",
            f"{rate:.2%}",
            state=state,
            detail=f"{shadow.get('mismatched', 0)} mismatched · {_dotted(shadow)}",
            testid="mismatch-rate",
        ),
        tag("p", note, class_="small muted") if note else None,
        mismatch_chart(trend) if trend is not None else None,
        testid="shadow",
    )


def _dotted(shadow: Mapping[str, Any]) -> str:
    return " · ".join(f"{shadow.get(k, 0) or 0} {k}" for k in ("errors", "stale", "dropped"))


def relay_tile(relay: Mapping[str, Any], trend: Mapping[str, Any] | None = None) -> Html:
    rows = []
    for direction, label in (
        ("monolith_to_service", "monolith → service"),
        ("service_to_monolith", "service → monolith"),
    ):
        lag = relay.get(direction) or {"error": "not asked"}
        active = tag("span", "active", class_="pill") if lag.get("active") else None
        if "error" in lag:
            rows.append(_figure([label, " ", active], "?", detail=lag["error"], state="muted"))
            continue
        pending = _number(lag.get("pending"))
        age = _number(lag.get("oldest_age_seconds"))
        dead = _number(lag.get("dead_letters"))
        behind = (pending is not None and pending > _LIMITS.max_relay_pending) or (
            age is not None and age > _LIMITS.max_relay_age_seconds
        )
        state = "bad" if dead else "warn" if behind else ""
        dead_text = f"{dead:.0f}" if dead is not None else "unknown"
        if age is not None:
            oldest = f"oldest {age:.2f} s"
        elif pending == 0 and lag.get("oldest_age_seconds") is None:
            oldest = "nothing waiting"
        else:
            oldest = "oldest unknown"
        rows.append(
            _figure(
                [label, " ", active],
                f"{pending:.0f} pending" if pending is not None else "unknown",
                state=state,
                detail=f"{oldest} · {dead_text} dead letters",
                testid=f"relay-{direction}",
            )
        )
    chart = relay_chart(trend) if trend is not None else None
    return _tile("relay lag", *rows, chart, testid="relay")


def duration(seconds: float) -> str:
    """A span in the unit a reader expects: seconds, then minutes, then hours."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def ago(seconds: float) -> str:
    return f"{duration(seconds)} ago"


def records_tile(
    reconcile: Mapping[str, Any] | None, backfill: Mapping[str, Any] | None, now: float
) -> Html:
    if reconcile is None:
        verdict = _figure("last reconcile", "never", state="muted")
    else:
        at = str(reconcile.get("at", ""))
        try:
            when = f"{ago(now - calendar.timegm(time.strptime(at, '%Y-%m-%dT%H:%M:%SZ')))}, {at}"
        except ValueError:
            when = at
        differences = _number(reconcile.get("differences"))
        verdict = _figure(
            "last reconcile",
            f"{differences:.0f} differences" if differences is not None else "unknown",
            state="ok" if reconcile.get("agree") else "bad",
            detail=when,
            testid="reconcile",
        )
    if backfill is None:
        copied = _figure("backfill", "not run", state="muted")
    else:
        clean = backfill["finished"] and not backfill["rejected"]
        copied = _figure(
            "backfill",
            "finished" if backfill["finished"] else "in progress",
            state="ok" if clean else "",
            detail=f"{backfill['rows']} rows, {backfill['rejected']} rejected",
        )
    return _tile("data checks", verdict, copied, testid="records")


def health_tile(breakers: Mapping[str, Any], fence: Mapping[str, Any]) -> Html:
    rows = []
    for side, breaker in breakers.items():
        state = str(breaker["state"])
        opened = int(breaker.get("times_opened", 0))
        rows.append(
            _figure(
                f"breaker {breaker['upstream']}",
                state.replace("_", "-"),
                state={"closed": "ok", "half_open": "warn", "open": "bad"}.get(state, ""),
                detail=f"opened {opened} times" if opened else None,
                testid=f"breaker-{side}",
            )
        )
    last = fence.get("last_pause_ms")
    if fence.get("closed"):
        rows.append(_figure("write fence", "closed", state="warn", detail=f"{fence['held']} held"))
    else:
        pause = f"last pause {last:.0f} ms" if last is not None else None
        rows.append(_figure("write fence", "open", detail=pause))
    return _tile("health", *rows, testid="health")
