"""The dashboard's pure parts: request rates from counter readings, escaping, rendering."""

from __future__ import annotations

import time

from proxy.dashboard.html import Html, tag
from proxy.dashboard.render import render_live
from proxy.dashboard.state import Counts, RequestRates, _phase_view
from strangler.cli import _dashboard_url
from strangler.phases import Phase


class FakeCounters:
    """Counter readings and a clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0
        self.counts: Counts = {}
        self.reads = 0

    def read(self) -> Counts:
        self.reads += 1
        return dict(self.counts)


def test_no_rate_from_one_reading_then_the_difference_over_the_window() -> None:
    fake = FakeCounters()
    rates = RequestRates(fake.read, window=5.0, min_interval=1.0, clock=lambda: fake.now)
    assert rates.rates() is None  # first poll: measuring
    fake.now += 2.0
    fake.counts = {("products", "monolith"): (40.0, 2.0)}
    measured = rates.rates()
    assert measured is not None
    rate = measured[("products", "monolith")]
    assert (rate.per_second, rate.errors_per_second, rate.window_seconds) == (20.0, 1.0, 2.0)


def test_counters_are_read_at_most_once_a_second_however_often_asked() -> None:
    fake = FakeCounters()
    rates = RequestRates(fake.read, min_interval=1.0, clock=lambda: fake.now)
    for _ in range(10):
        rates.rates()
        fake.now += 0.05
    assert fake.reads == 1


def test_old_readings_leave_the_window_and_a_quiet_spell_starts_measuring_again() -> None:
    fake = FakeCounters()
    rates = RequestRates(fake.read, window=5.0, min_interval=1.0, clock=lambda: fake.now)
    for second in range(10):
        fake.counts = {("products", "service"): (10.0 * second, 0.0)}
        rates.rates()
        fake.now += 1.0
    fake.now -= 1.0
    latest = rates.rates()
    assert latest is not None and latest[("products", "service")].per_second == 10.0
    assert latest[("products", "service")].window_seconds == 5.0
    fake.now += 600  # nobody watched for ten minutes: no rate averaged over them
    assert rates.rates() is None


def test_text_is_escaped_and_only_built_markup_passes() -> None:
    hostile = '<img src=x onerror="alert(1)">'
    built = tag("p", hostile, title=hostile, data_x=None, hidden=True)
    assert built == (
        '<p title="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" hidden>'
        '&lt;img src=x onerror="alert(1)"&gt;</p>'
    )
    assert tag("div", built, [1, None, 2.5]) == f"<div>{built}12.5</div>"
    assert isinstance(built, Html) and not isinstance(str(hostile), Html)


def _state(reason: str, diff: str) -> dict[str, object]:
    cap = {
        **_phase_view("products", Phase.SHADOW),
        "reads": "monolith",
        "writes": "monolith",
        "canary_percent": 0.0,
        "shadow_percent": 100.0,
        "requests": {"measuring": True, "window_seconds": None, "sides": {}},
        "shadow": {
            "compared": 10,
            "mismatched": 1,
            "mismatch_rate": 0.1,
            "samples": [
                {
                    "at": time.time(),
                    "request": "GET /products/1",
                    "primary": {"side": "monolith", "status": 200},
                    "shadow": {"side": "service", "status": 200},
                    "diff": diff,
                }
            ],
        },
        "relay": {"monolith_to_service": {"active": True, "error": "unreachable"}},
        "reconcile": None,
        "backfill": None,
        "breakers": {"monolith": {"upstream": "monolith", "state": "open", "times_opened": 1}},
        "fence": {"closed": False, "last_pause_ms": None},
    }
    return {
        "config_version": 3,
        "last_reload_error": None,
        "relay_known": True,
        "capabilities": {"products": cap},
        "audit": [
            {
                "at": "2026-01-01T00:00:00Z",
                "capability": "products",
                "old": {"phase": "backfilled"},
                "new": {"phase": "shadow"},
                "who": "dashboard@127.0.0.1",
                "reason": reason,
            }
        ],
    }


def test_diffs_and_reasons_from_elsewhere_render_as_text_never_as_markup() -> None:
    page = render_live(
        _state(reason="<script>steal()</script>", diff='-  "name": "<b onclick=x>mug</b>"')
    )
    assert "<script>" not in page and "<b onclick" not in page
    assert "&lt;script&gt;steal()&lt;/script&gt;" in page
    assert "&lt;b onclick=x&gt;mug&lt;/b&gt;" in page
    assert 'data-phase="shadow"' in page and 'data-to="backfilled"' in page
    assert '<span class="value bad" data-testid="breaker-monolith">open</span>' in page
    assert "<code>strangler status</code>" in page  # the runbook's commands


def test_up_prints_a_one_click_url_only_for_a_token_it_keeps_in_a_file() -> None:
    kept = _dashboard_url("http://127.0.0.1:8000", "s3cret", "var/admin-token")
    assert kept.startswith("http://127.0.0.1:8000/_strangler/dashboard#token=s3cret ")
    given = _dashboard_url("http://127.0.0.1:8000", "s3cret", "STRANGLER_ADMIN_TOKEN")
    assert "s3cret" not in given and "$STRANGLER_ADMIN_TOKEN" in given
