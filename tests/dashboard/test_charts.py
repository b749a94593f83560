"""The dashboard's charts, rendered from plain trend data: what a reader and a screen reader
get (title, axis bounds, latest values), where lines break, and the tiles around them."""

from __future__ import annotations

import re
from typing import Any

import pytest

from proxy.dashboard.charts import (
    BOTTOM,
    Series,
    line_chart,
    mismatch_chart,
    nice_ceiling,
    relay_chart,
    requests_chart,
)
from proxy.dashboard.tiles import requests_tile


def _trend(*points: dict[str, Any]) -> dict[str, Any]:
    return {"window_seconds": 300.0, "points": list(points)}


def _point(age: float, monolith: float, service: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {
        "age_seconds": age,
        "requests": {"monolith": monolith, "service": service},
        "mismatch_rate": extra.get("mismatch_rate"),
        "relay": extra.get("relay", {"monolith_to_service": 0.0, "service_to_monolith": None}),
    }


def _polylines(svg: str, series: str) -> list[tuple[list[tuple[float, float]], list[float]]]:
    """Each line drawn for `series`: its points and the values it says it draws."""
    found = []
    for attributes in re.findall(r"<polyline ([^>]*)>", svg):
        if f'data-series="{series}"' not in attributes:
            continue
        points = re.search(r'points="([^"]*)"', attributes)
        values = re.search(r'data-values="([^"]*)"', attributes)
        assert points and values
        pairs = [tuple(float(n) for n in pair.split(",")) for pair in points.group(1).split()]
        found.append(([(x, y) for x, y in pairs], [float(v) for v in values.group(1).split()]))
    return found


def test_a_chart_has_a_title_axis_bounds_and_a_text_alternative_with_the_latest_values() -> None:
    chart = requests_chart(_trend(_point(10, 4.0, 1.0), _point(8, 6.0, 2.0), _point(6, 12.5, 3.0)))
    assert '<figure class="chart" data-chart="requests">' in chart
    assert '<span class="chart-title">requests / s</span>' in chart
    alt = (
        "requests / s over the last 5 min, scale 0/s to 20/s; "
        "latest: monolith 12.5/s, service 3.0/s"
    )
    assert f'role="img" aria-label="{alt}"' in chart and f"<title>{alt}</title>" in chart
    for bound in (">20/s</text>", ">0/s</text>", ">−5 min</text>", ">now</text>"):
        assert bound in chart  # y max and min, x min and max
    assert '<span class="key series-0">monolith 12.5/s</span>' in chart
    [(points, values)] = _polylines(chart, "monolith")
    assert values == [4.0, 6.0, 12.5] and len(points) == 3
    assert [x for x, _ in points] == sorted(x for x, _ in points)  # oldest left, newest right
    assert all(y < BOTTOM for _, y in points)  # above the zero line


def test_an_unknown_figure_breaks_the_line_instead_of_drawing_zero() -> None:
    gaps = [
        _point(age, 1.0, mismatch_rate=rate)
        for age, rate in (
            (20, 0.01),
            (18, 0.02),
            (16, None),
            (14, 0.0),
            (12, 0.005),
            (10, None),
            (8, 0.5),
        )
    ]
    chart = mismatch_chart(_trend(*gaps))
    assert [values for _, values in _polylines(chart, "mismatch_rate")] == [
        [0.01, 0.02],
        [0.0, 0.005],
    ]
    assert 'class="dot series-0" data-series="mismatch_rate" data-values="0.5"' in chart  # alone
    assert "latest: mismatches 50.00%" in chart
    unknown_now = relay_chart(_trend(_point(2, 0.0)))
    assert "latest: monolith → service 0.00 s, service → monolith unknown" in unknown_now


def test_a_chart_with_no_figures_says_so() -> None:
    empty = relay_chart(_trend())
    assert ">no figures yet</text>" in empty and "<polyline" not in empty
    assert "latest: monolith → service no figures yet" in empty
    nothing_compared = mismatch_chart(_trend(_point(2, 1.0, mismatch_rate=None)))
    assert "latest: mismatches none compared" in nothing_compared


def test_the_scale_ends_on_a_round_number_never_below_the_gate() -> None:
    assert [nice_ceiling(v) for v in (0.3, 1.0, 1.2, 2.2, 4.0, 7.0, 12.5, 0.0011)] == [
        0.5,
        1.0,
        2.0,
        2.5,
        5.0,
        10.0,
        20.0,
        0.002,
    ]
    with pytest.raises(ValueError):
        nice_ceiling(0.0)
    quiet = mismatch_chart(_trend(_point(2, 1.0, mismatch_rate=0.0)))
    assert "scale 0% to 0.1%" in quiet  # the gate (0.1 %) is the top: "how close" at a glance
    assert 'class="limit"' in quiet and ">gate</text>" in quiet
    lagging = relay_chart(
        _trend(_point(2, 0.0, relay={"monolith_to_service": 7.5, "service_to_monolith": 0.0}))
    )
    assert "scale 0 s to 10 s" in lagging  # past the 5 s gate, the scale grows past it


def test_series_labels_are_text_never_markup() -> None:
    chart = line_chart(
        "<b>t</b>",
        [Series("x", '<img src=x onerror="1">', [(1.0, 1.0), (0.0, 2.0)])],
        window=60.0,
        floor=1.0,
        axis=str,
        figure=str,
        chart="x",
    )
    assert "<b>" not in chart and "<img" not in chart and "&lt;img src=x" in chart


def test_the_requests_tile_shows_figures_and_its_chart_never_a_placeholder() -> None:
    tile = requests_tile(
        {
            "window_seconds": 5400.0,  # the first look, an hour and a half after the start
            "sides": {
                "monolith": {"upstream": "monolith", "per_second": 0.0, "errors_per_second": 0},
                "service": {
                    "upstream": "products_service",
                    "per_second": 0.0,
                    "errors_per_second": 0,
                },
            },
        },
        _trend(_point(2, 0.0)),
    )
    assert "measuring" not in tile and "no reading yet" not in tile
    assert 'data-testid="rps-monolith">0.0<' in tile and "last 1.5 h" in tile
    assert 'data-chart="requests"' in tile
