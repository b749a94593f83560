"""Small line charts of the last minutes, as inline SVG rendered on the server.

Nothing to build and no script to add: the page swaps the charts in with the rest of the live
part, and the page's CSP (no inline style) holds because colours come from classes in
dashboard.css. Each chart is a <figure> whose caption is its title and each line's latest
value; its SVG has role="img" and an aria-label (and a <title>, the tooltip) saying what a
screen reader cannot see: the span, the scale and the latest values. Both axes are labelled
with their minimum and maximum. Where a gate has a threshold for the figure, it is drawn as a
dashed line, and the scale never ends below it, so "how close to the gate" reads at a glance.

A line breaks where a figure is unknown (nothing compared, a side that did not answer) rather
than drawing a made-up zero; each line carries its values in `data-values`, which is what the
browser test reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.dashboard.history import WINDOW_SECONDS
from proxy.dashboard.html import Html, tag
from strangler.gates import Thresholds

__all__ = [
    "Series",
    "line_chart",
    "mismatch_chart",
    "nice_ceiling",
    "relay_chart",
    "requests_chart",
]

_LIMITS = Thresholds()
"""What the gates allow."""

WIDTH, HEIGHT = 240, 100
LEFT, RIGHT, TOP, BOTTOM = 40, 234, 6, 78
"""The plot area inside the viewBox: the y labels sit left of it, the x labels under it."""


@dataclass(frozen=True)
class Series:
    """One line: `key` names it for the page (data-series), `label` for the reader; `values`
    are (age in seconds, figure or None when unknown), oldest first; `unknown` is what the
    caption says when the latest figure is None."""

    key: str
    label: str
    values: Sequence[tuple[float, float | None]]
    unknown: str = "unknown"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value` (> 0): a
    scale whose top label reads as a round number."""
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"a scale needs a positive top, not {value!r}")
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0):
        top = round(step * power, 12)
        if value <= top:
            return top
    return round(10.0 * power, 12)


def _span(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _runs(values: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """The stretches of known figures, split where one is unknown."""
    runs: list[list[tuple[float, float]]] = [[]]
    for age, value in values:
        if value is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((age, value))
    return [run for run in runs if run]


def _latest(line: Series, figure: Callable[[float], str]) -> str:
    if not line.values:
        return f"{line.label} no figures yet"
    last = line.values[-1][1]
    return f"{line.label} {figure(last) if last is not None else line.unknown}"


def _marks(
    index: int,
    line: Series,
    x: Callable[[float], float],
    y: Callable[[float], float],
) -> list[Html]:
    """A polyline per stretch of known figures (a dot for a stretch of one), each carrying
    the figures it draws."""
    marks = []
    for run in _runs(line.values):
        drawn = {
            "data_series": line.key,
            "data_values": " ".join(f"{value:g}" for _, value in run),
        }
        if len(run) == 1:
            age, value = run[0]
            marks.append(
                tag("circle", cx=x(age), cy=y(value), r=2, class_=f"dot series-{index}", **drawn)
            )
        else:
            points = " ".join(f"{x(age):g},{y(value):g}" for age, value in run)
            marks.append(tag("polyline", points=points, class_=f"line series-{index}", **drawn))
    return marks


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    window: float,
    floor: float,
    axis: Callable[[float], str],
    figure: Callable[[float], str],
    limit: float | None = None,
    chart: str,
) -> Html:
    """One chart over the last `window` seconds, y from 0 to a round number at least `floor`
    (and at least `limit`, the gate's threshold, drawn dashed). `axis` writes the axis labels,
    `figure` the latest values; `chart` names it for the page (data-chart)."""
    known = [value for line in series for _, value in line.values if value is not None]
    top = nice_ceiling(max([floor, *([limit] if limit else []), *known]))

    def x(age: float) -> float:
        return round(RIGHT - min(max(age, 0.0), window) / window * (RIGHT - LEFT), 1)

    def y(value: float) -> float:
        return round(BOTTOM - min(max(value, 0.0), top) / top * (BOTTOM - TOP), 1)

    latest = [_latest(line, figure) for line in series]
    alt = (
        f"{title} over the last {_span(window)}, scale {axis(0.0)} to {axis(top)}; "
        f"latest: {', '.join(latest)}"
    )
    marks = [mark for index, line in enumerate(series) for mark in _marks(index, line, x, y)]
    gate = (
        [
            tag("line", x1=LEFT, y1=y(limit), x2=RIGHT, y2=y(limit), class_="limit"),
            tag("text", "gate", x=RIGHT, y=y(limit) + 10, text_anchor="end", class_="tick limit"),
        ]
        if limit
        else []
    )
    empty = (
        tag(
            "text",
            "no figures yet",
            x=(LEFT + RIGHT) / 2,
            y=(TOP + BOTTOM) / 2,
            text_anchor="middle",
            class_="tick",
        )
        if not known
        else None
    )
    svg = tag(
        "svg",
        tag("title", alt),
        tag("line", x1=LEFT, y1=TOP, x2=RIGHT, y2=TOP, class_="grid"),
        tag("line", x1=LEFT, y1=BOTTOM, x2=RIGHT, y2=BOTTOM, class_="axis"),
        tag("text", axis(top), x=LEFT - 4, y=TOP + 4, text_anchor="end", class_="tick"),
        tag("text", axis(0.0), x=LEFT - 4, y=BOTTOM, text_anchor="end", class_="tick"),
        tag("text", f"−{_span(window)}", x=LEFT, y=HEIGHT - 8, class_="tick"),
        tag("text", "now", x=RIGHT, y=HEIGHT - 8, text_anchor="end", class_="tick"),
        gate,
        marks,
        empty,
        viewBox=f"0 0 {WIDTH} {HEIGHT}",
        role="img",
        aria_label=alt,
    )
    keys = [tag("span", text, class_=f"key series-{index}") for index, text in enumerate(latest)]
    return tag(
        "figure",
        tag("figcaption", tag("span", title, class_="chart-title"), keys),
        svg,
        class_="chart",
        data_chart=chart,
    )


def _points(trend: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    points = trend.get("points")
    return points if isinstance(points, list) else []


def _window(trend: Mapping[str, Any]) -> float:
    window = trend.get("window_seconds")
    return float(window) if isinstance(window, int | float) and window > 0 else WINDOW_SECONDS


def requests_chart(trend: Mapping[str, Any]) -> Html:
    """Requests per second answered by each side."""
    points = _points(trend)
    return line_chart(
        "requests / s",
        [
            Series(side, side, [(p["age_seconds"], p["requests"].get(side)) for p in points])
            for side in ("monolith", "service")
        ],
        window=_window(trend),
        floor=1.0,
        axis=lambda v: f"{v:g}/s",
        figure=lambda v: f"{v:.1f}/s",
        chart="requests",
    )


def mismatch_chart(trend: Mapping[str, Any]) -> Html:
    """The share of shadow compares that mismatched, per interval (a gap: nothing compared)."""
    points = _points(trend)
    return line_chart(
        "shadow mismatch rate",
        [
            Series(
                "mismatch_rate",
                "mismatches",
                [(p["age_seconds"], p["mismatch_rate"]) for p in points],
                unknown="none compared",
            )
        ],
        window=_window(trend),
        floor=_LIMITS.max_mismatch_rate,
        limit=_LIMITS.max_mismatch_rate,
        axis=lambda v: f"{v * 100:g}%",
        figure=lambda v: f"{v:.2%}",
        chart="mismatch-rate",
    )


def relay_chart(trend: Mapping[str, Any]) -> Html:
    """How long the oldest waiting event has waited, each direction (a gap: the side did not
    say)."""
    points = _points(trend)
    return line_chart(
        "relay lag",
        [
            Series(
                direction, label, [(p["age_seconds"], p["relay"].get(direction)) for p in points]
            )
            for direction, label in (
                ("monolith_to_service", "monolith → service"),
                ("service_to_monolith", "service → monolith"),
            )
        ],
        window=_window(trend),
        floor=_LIMITS.max_relay_age_seconds,
        limit=_LIMITS.max_relay_age_seconds,
        axis=lambda v: f"{v:g} s",
        figure=lambda v: f"{v:.2f} s",
        chart="relay-lag",
    )
