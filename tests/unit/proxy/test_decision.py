"""Routing decisions: stickiness, monotonic rollout, the split, phases. No I/O."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.decision import CapabilityPolicy, bucket_of, decide, subject_of
from strangler.phases import PHASES, Phase, Side, routing_of

keys = st.text(min_size=1, max_size=40)
percents = st.floats(min_value=0, max_value=100, allow_nan=False)


def _policy(
    phase: Phase = Phase.CANARY, percent: float = 0, shadow: float = 0, during_canary: bool = False
) -> CapabilityPolicy:
    return CapabilityPolicy.build("products", phase, percent, shadow, during_canary, "subject")


@given(key=keys, percent=percents)
def test_a_user_always_lands_on_the_same_side(key: str, percent: float) -> None:
    policy = _policy(percent=percent)
    sides = {decide(policy, "GET", key).primary for _ in range(3)}
    assert len(sides) == 1


@given(key=keys, low=percents, high=percents)
def test_raising_the_percentage_never_moves_a_user_back_to_the_monolith(
    key: str, low: float, high: float
) -> None:
    low, high = sorted((low, high))
    if decide(_policy(percent=low), "GET", key).primary is Side.SERVICE:
        assert decide(_policy(percent=high), "GET", key).primary is Side.SERVICE


@settings(max_examples=20, deadline=None)
@given(percent=st.integers(min_value=0, max_value=100), salt=st.integers())
def test_the_split_stays_within_two_points_over_ten_thousand_users(percent: int, salt: int) -> None:
    policy = _policy(percent=percent)
    users = [f"user-{salt}-{n}" for n in range(10_000)]
    share = sum(decide(policy, "GET", u).primary is Side.SERVICE for u in users) / len(users)
    assert abs(share * 100 - percent) <= 2


def test_zero_and_hundred_percent_are_exact() -> None:
    users = [f"u{n}" for n in range(2000)]
    assert {decide(_policy(percent=0), "GET", u).primary for u in users} == {Side.MONOLITH}
    assert {decide(_policy(percent=100), "GET", u).primary for u in users} == {Side.SERVICE}


def test_buckets_differ_per_capability() -> None:
    users = [f"u{n}" for n in range(1000)]
    assert [bucket_of("products", u) for u in users] != [bucket_of("orders", u) for u in users]


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"])
def test_reads_and_writes_follow_the_phase(phase: Phase, method: str) -> None:
    decision = decide(_policy(phase=phase, percent=100), method, "someone")
    routing = routing_of(phase)
    if method in ("GET", "HEAD", "OPTIONS"):
        assert decision.primary is (routing.reads or Side.SERVICE)
        assert decision.fallback_to_monolith == (
            decision.primary is Side.SERVICE and routing.monolith_holds_data
        )
    else:
        assert decision.primary is routing.writes
        assert decision.fallback_to_monolith is False
        assert decision.shadow is None


def test_shadow_mirrors_only_gets_to_the_other_side_at_the_sampled_rate() -> None:
    policy = _policy(phase=Phase.SHADOW, shadow=25)
    rng = random.Random(7)
    mirrored = [decide(policy, "GET", None, rng=rng).shadow for _ in range(4000)]
    assert set(mirrored) == {Side.SERVICE, None}
    assert abs(mirrored.count(Side.SERVICE) / 4000 - 0.25) < 0.03
    assert decide(_policy(phase=Phase.SHADOW, shadow=100), "HEAD", None).shadow is None
    assert decide(_policy(phase=Phase.SHADOW, shadow=100), "POST", None).shadow is None


def test_canary_shadows_the_other_side_only_when_asked() -> None:
    on = _policy(percent=100, shadow=100, during_canary=True)
    off = _policy(percent=100, shadow=100, during_canary=False)
    assert decide(on, "GET", "u").shadow is Side.MONOLITH
    assert decide(off, "GET", "u").shadow is None


def test_a_forced_side_wins_and_is_not_shadowed() -> None:
    decision = decide(_policy(phase=Phase.SHADOW, shadow=100), "GET", None, forced=Side.SERVICE)
    assert (decision.primary, decision.shadow) == (Side.SERVICE, None)


@pytest.mark.parametrize(
    ("header", "subject"),
    [
        ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.sig", "42"),
        ("bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.sig", "42"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjQyfQ.sig", None),  # sub is a number
        ("Bearer not-a-jwt", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer a.!!!.c", None),
        (None, None),
    ],
)
def test_the_subject_is_read_without_trusting_anything_else(
    header: str | None, subject: str | None
) -> None:
    assert subject_of(header) == subject
