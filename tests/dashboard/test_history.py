"""The dashboard's history: a bounded ring per capability, rates from counter increases
(resets included), mismatch rate and relay lag per interval, and the sampler's timer that
runs only while someone looks. Plain data in, plain data out; the sampler with a fake reading
and a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from proxy.dashboard.history import (
    KEEP,
    History,
    Sample,
    increase,
    mismatch_rate,
    rates,
    recent_rates,
    relay_seconds,
    trend,
    trend_view,
)
from proxy.dashboard.sampler import Sampler
from tests.support.waiting import eventually_async

QUIET = {"pending": 0, "oldest_age_seconds": None, "dead_letters": 0}


def sample(
    at: float,
    monolith: float = 0.0,
    service: float = 0.0,
    *,
    errors: float = 0.0,
    compared: int = 0,
    mismatched: int = 0,
    relay: Mapping[str, Mapping[str, Any]] | None = None,
) -> Sample:
    """One capability's reading; `errors` are the service's 5xx."""
    return Sample(
        at=at,
        requests={"monolith": (monolith, 0.0), "service": (service, errors)},
        compared=compared,
        mismatched=mismatched,
        relay=relay
        if relay is not None
        else {"monolith_to_service": QUIET, "service_to_monolith": QUIET},
    )


def test_a_full_ring_drops_its_oldest_samples() -> None:
    history = History(keep=3)
    for second in range(5):
        history.add({"products": sample(float(second))})
    assert [s.at for s in history.of("products")] == [2.0, 3.0, 4.0]
    assert KEEP == 152  # five minutes every two seconds, the base before them and one spare


def test_a_capability_that_left_the_routing_config_leaves_the_history() -> None:
    history = History(keep=3)
    history.add({"products": sample(0.0), "orders": sample(0.0)})
    history.add({"orders": sample(2.0)})
    assert history.of("products") == [] and len(history.of("orders")) == 2


def test_a_ring_too_small_for_a_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        History(keep=1)


def test_requests_per_second_are_counter_increases_over_the_time_between_samples() -> None:
    measured = rates([sample(10.0, 100, 0), sample(12.0, 140, 10, errors=2)])
    assert measured is not None
    assert measured["monolith"].per_second == 20.0
    assert (measured["service"].per_second, measured["service"].errors_per_second) == (5.0, 1.0)
    assert measured["monolith"].window_seconds == 2.0


def test_no_rate_from_one_sample_or_from_no_time_between_two() -> None:
    assert rates([sample(1.0, 5)]) is None
    assert rates([sample(1.0, 5), sample(1.0, 9)]) is None


def test_a_counter_that_went_down_was_reset_and_counts_from_zero() -> None:
    assert increase(100, 130) == 30
    assert increase(100, 7) == 7  # reset, then 7 more: never a negative rate
    # Each step on its own: 100 -> 110 (+10), reset to 5 (+5), 5 -> 15 (+10).
    steps = [sample(0.0, 100), sample(2.0, 110), sample(4.0, 5), sample(6.0, 15)]
    measured = rates(steps)
    assert measured is not None and measured["monolith"].per_second == 25 / 6


def test_the_current_rate_spans_the_last_few_seconds() -> None:
    ring = [sample(float(at), monolith=at * 10) for at in range(0, 21, 2)]  # 10 requests/s
    ring[-1] = sample(20.0, monolith=260)  # the last two seconds: 30 requests/s
    current = recent_rates(ring, over=6.0)
    assert current is not None
    assert current["monolith"].window_seconds == 6.0
    assert current["monolith"].per_second == pytest.approx((260 - 140) / 6)


def test_after_a_quiet_spell_the_current_rate_is_the_average_since_the_last_sample() -> None:
    """The first look after nobody watched (or since the proxy started) shows a real figure
    over the whole gap, never "no figure yet"."""
    current = recent_rates([sample(0.0), sample(600.0, monolith=1200)], over=6.0)
    assert current is not None
    assert (current["monolith"].per_second, current["monolith"].window_seconds) == (2.0, 600.0)
    assert recent_rates([sample(0.0)]) is None


def test_the_mismatch_rate_is_per_interval_and_unknown_when_nothing_was_compared() -> None:
    before = sample(0.0, compared=100, mismatched=1)
    assert mismatch_rate(before, sample(2.0, compared=150, mismatched=6)) == 0.1
    assert mismatch_rate(before, sample(2.0, compared=100, mismatched=1)) is None
    assert mismatch_rate(before, sample(2.0, compared=4, mismatched=1)) == 0.25  # reset


@pytest.mark.parametrize(
    ("answer", "seconds"),
    [
        ({"pending": 3, "oldest_age_seconds": 1.5, "dead_letters": 0}, 1.5),
        ({"pending": 0, "oldest_age_seconds": None, "dead_letters": 0}, 0.0),
        ({"pending": 3, "oldest_age_seconds": None, "dead_letters": 0}, None),
        ({"pending": 3, "oldest_age_seconds": float("nan"), "dead_letters": 0}, None),
        ({"error": "unreachable"}, None),
        ({"pending": False, "dead_letters": 0}, None),
    ],
    ids=["waiting", "nothing-waits", "age-unknown", "nan", "error", "not-a-count"],
)
def test_relay_lag_is_the_oldest_wait_and_unknown_when_the_side_did_not_say(
    answer: dict[str, Any], seconds: float | None
) -> None:
    assert relay_seconds(answer) == seconds


def test_the_trend_is_one_point_per_interval_within_the_window_oldest_first() -> None:
    lagging = {"monolith_to_service": {"error": "unreachable"}, "service_to_monolith": QUIET}
    ring = [
        sample(0.0),  # before the window: only the base of the first point
        sample(700.0, monolith=1400),
        sample(702.0, monolith=1410, compared=10, mismatched=1, relay=lagging),
        sample(704.0, monolith=1420, compared=10, mismatched=1),
    ]
    points = trend(ring, now=1001.0, window=300.0)
    assert [p.at for p in points] == [702.0, 704.0]  # 700 ended more than 300 s before 1001
    assert [p.requests["monolith"] for p in points] == [5.0, 5.0]
    assert [p.mismatch_rate for p in points] == [0.1, None]
    assert points[0].relay == {"monolith_to_service": None, "service_to_monolith": 0.0}
    view = trend_view(points, now=1001.0, window=300.0)
    assert view["window_seconds"] == 300.0
    assert [p["age_seconds"] for p in view["points"]] == [299.0, 297.0]
    assert view["points"][1] == {
        "age_seconds": 297.0,
        "requests": {"monolith": 5.0, "service": 0.0},
        "mismatch_rate": None,
        "relay": {"monolith_to_service": 0.0, "service_to_monolith": 0.0},
    }


class FakeReadings:
    """What the sampler reads, counted, and a clock the test moves by hand; `failing` makes
    the next reading raise."""

    def __init__(self) -> None:
        self.now = 0.0
        self.taken = 0
        self.failing = False

    def clock(self) -> float:
        return self.now

    async def take(self) -> dict[str, Sample]:
        if self.failing:
            self.failing = False
            raise RuntimeError("the side answered nonsense")
        self.taken += 1
        return {"products": sample(float(self.taken), monolith=10.0 * self.taken)}


def test_the_first_look_samples_at_once_then_the_timer_keeps_sampling() -> None:
    fake, history = FakeReadings(), History(keep=KEEP)

    async def scenario() -> None:
        sampler = Sampler(fake.take, history, interval=0.01, idle=60.0, clock=fake.clock)
        assert not sampler.running and fake.taken == 0  # nobody looked: nothing read
        await sampler.watched()
        assert fake.taken == 1 and sampler.running  # the look has figures already
        await sampler.watched()
        assert fake.taken == 1  # a second look does not read again
        await eventually_async(lambda: _at_least(history, 3), "three samples", timeout=15)

    asyncio.run(scenario())


def test_the_sampler_stops_when_nobody_looks_and_the_next_look_starts_it_again() -> None:
    fake, history = FakeReadings(), History(keep=KEEP)

    async def scenario() -> None:
        sampler = Sampler(fake.take, history, interval=0.01, idle=60.0, clock=fake.clock)
        await sampler.watched()
        await eventually_async(lambda: _at_least(history, 2), "two samples", timeout=15)
        fake.now += 61.0  # nobody looked for longer than `idle`
        await eventually_async(lambda: _stopped(sampler), "the sampler stopped", timeout=15)
        stopped_at = fake.taken
        await sampler.watched()
        assert fake.taken == stopped_at + 1 and sampler.running

    asyncio.run(scenario())


def test_a_failed_sample_is_skipped_and_the_timer_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    fake, history = FakeReadings(), History(keep=KEEP)

    async def scenario() -> None:
        sampler = Sampler(fake.take, history, interval=0.01, idle=60.0, clock=fake.clock)
        fake.failing = True
        await sampler.watched()
        assert history.of("products") == [] and sampler.running
        await eventually_async(
            lambda: _at_least(history, 1), "a sample after the failed one", timeout=15
        )

    asyncio.run(scenario())
    assert "taking a sample failed" in caplog.text


async def _at_least(history: History, count: int) -> list[Sample]:
    samples = history.of("products")
    assert len(samples) >= count, f"{len(samples)} samples"
    return samples


async def _stopped(sampler: Sampler) -> None:
    assert not sampler.running
