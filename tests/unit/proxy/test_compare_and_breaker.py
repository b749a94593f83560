"""Shadow comparison and the circuit breaker, as plain functions and objects."""

from __future__ import annotations

import json

from proxy.breaker import BreakerState, CircuitBreaker
from proxy.compare import compare_responses


def test_equal_bodies_match_whatever_their_key_order_or_decimal_form() -> None:
    left = b'{"id": 1, "price": "12.50", "tags": [1.0, 2]}'
    right = b'{"tags": [1, 2.00], "price": "12.5", "id": 1}'
    assert compare_responses(200, left, 200, right, ()).matched


def test_ignored_fields_are_left_out_wherever_they_are() -> None:
    left = b'{"id": 1, "updated_at": "a", "items": [{"updated_at": "x", "n": 1}]}'
    right = b'{"id": 1, "updated_at": "b", "items": [{"updated_at": "y", "n": 1}]}'
    assert compare_responses(200, left, 200, right, {"updated_at"}).matched
    assert not compare_responses(200, left, 200, right, ()).matched


def test_a_mismatch_comes_with_a_readable_diff() -> None:
    result = compare_responses(
        200,
        b'{"id": 1, "stock": 5}',
        200,
        b'{"id": 1, "stock": 4}',
        (),
        labels=("monolith", "service"),
    )
    assert not result.matched
    assert "--- monolith" in result.diff and "+++ service" in result.diff
    assert '-  "stock": {' in result.diff or '-    "$number": "5"' in result.diff


def test_status_alone_can_differ() -> None:
    assert not compare_responses(200, b"{}", 404, b"{}", ()).matched


def test_non_json_bodies_are_compared_as_text() -> None:
    assert compare_responses(200, b"hello", 200, b"hello", ()).matched
    assert not compare_responses(200, b"hello", 200, b"hullo", ()).matched


def test_a_decimal_looking_sku_is_not_mistaken_for_a_different_number() -> None:
    assert not compare_responses(200, b'{"sku": "1.10"}', 200, b'{"sku": "1.2"}', ()).matched


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_consecutive_failures_and_probes_after_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    breaker.record_success()
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now = 10
    assert breaker.allow() and breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()  # one probe at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_a_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=5, clock=clock)
    breaker.allow()
    breaker.record_failure()
    clock.now = 5
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now = 9
    assert not breaker.allow()
    assert breaker.times_opened == 2


def test_an_abandoned_probe_lets_the_next_request_probe_at_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=5, clock=clock)
    breaker.allow()
    breaker.record_failure()
    clock.now = 6
    assert breaker.allow()
    breaker.record_abandoned()
    assert breaker.state is BreakerState.OPEN
    assert breaker.allow()  # no new cool-down to wait out


def test_answers_about_different_versions_are_stale_not_mismatched() -> None:
    primary = b'{"id": 1, "stock": 4, "version": 7}'
    lagging = b'{"id": 1, "stock": 5, "version": 6}'
    result = compare_responses(200, primary, 200, lagging, (), version_field="version")
    assert result.stale and not result.matched
    page = b'{"items": [{"id": 1, "version": 2}, {"id": 2, "version": 9}]}'
    old_page = b'{"items": [{"id": 1, "version": 2}, {"id": 2, "version": 8}]}'
    assert compare_responses(200, page, 200, old_page, (), version_field="version").stale
    diverged = b'{"id": 1, "stock": 9, "version": 7}'  # same version, other data: a real one
    same_version = compare_responses(200, primary, 200, diverged, (), version_field="version")
    assert not same_version.matched and not same_version.stale
    assert not compare_responses(200, primary, 200, lagging, ()).stale  # only when asked


def test_lag_on_one_row_does_not_hide_a_difference_elsewhere() -> None:
    def page(*items: tuple[int, int, str]) -> bytes:
        rows = [{"id": i, "version": v, "price": p} for i, v, p in items]
        return json.dumps({"items": rows}).encode()

    primary = page((1, 3, "1.00"), (2, 5, "2.00"))
    wrong_price = page((1, 2, "1.00"), (2, 5, "9.99"))
    result = compare_responses(200, primary, 200, wrong_price, (), version_field="version")
    assert not result.stale and not result.matched
    reordered = page((2, 5, "2.00"), (1, 3, "1.00"))
    reorder = compare_responses(200, primary, 200, reordered, (), version_field="version")
    assert not reorder.stale and not reorder.matched
