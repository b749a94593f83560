"""Routing decisions: stickiness, monotonic rollout, the split, phases. No I/O."""

from __future__ import annotations

import base64
import json
import random
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.decision import (
    JSON_DEPTH_LIMIT,
    CapabilityPolicy,
    bucket_of,
    cookie_of,
    decide,
    subject_of,
)
from proxy.forward import Forwarder
from proxy.headers import IncomingHeaders
from strangler.phases import PHASES, Phase, Side, routing_of
from strangler.split import KEY_BYTES_LIMIT

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


def _token(payload: bytes) -> str:
    return f"Bearer e30.{base64.urlsafe_b64encode(payload).rstrip(b'=').decode()}.sig"


def _headers(authorization: str | None = None, *cookies: str) -> IncomingHeaders:
    raw = [(b"cookie", cookie.encode("latin-1")) for cookie in cookies]
    if authorization is not None:
        raw.insert(0, (b"authorization", authorization.encode("latin-1")))
    return IncomingHeaders.parse(raw)


def _known_keys(incoming: IncomingHeaders, sticky_key: str = "subject") -> list[str]:
    """The proxy's own key derivation (proxy/forward.py) for a canary capability."""
    policy = CapabilityPolicy.build("products", Phase.CANARY, 50, 0, False, sticky_key)
    return Forwarder._known_keys(SimpleNamespace(policy=policy), incoming, "c")  # type: ignore[arg-type]


def test_a_subject_or_cookie_over_256_bytes_is_no_key() -> None:
    """A long key would cost pure-Python murmur2 time on the event loop (a 32 KiB cookie took
    1.6 ms): over KEY_BYTES_LIMIT bytes it counts as absent, as strangler.js counts it."""
    at_limit, over = "s" * KEY_BYTES_LIMIT, "s" * (KEY_BYTES_LIMIT + 1)
    both = _headers(_token(json.dumps({"sub": at_limit}).encode()), f"c={at_limit}")
    assert _known_keys(both) == [f"sub:{at_limit}", f"cookie:{at_limit}"]
    long_subject = _headers(_token(json.dumps({"sub": over}).encode()), "c=short")
    assert _known_keys(long_subject) == ["cookie:short"]
    long_cookie = _headers(_token(json.dumps({"sub": "42"}).encode()), f"c={over}")
    assert _known_keys(long_cookie) == ["sub:42"]
    assert _known_keys(_headers(None, f"c={'v' * 32 * 1024}"), "cookie") == []
    # Bytes, not characters: é is two, a lone surrogate three (U+FFFD, as njs hands it over).
    assert subject_of(_token(json.dumps({"sub": "é" * 128}).encode())) == "é" * 128
    assert subject_of(_token(json.dumps({"sub": "é" * 128 + "s"}).encode())) is None
    assert subject_of(_token(b'{"sub": "' + b"\\ud800" * 85 + b's"}')) == "\ud800" * 85 + "s"
    assert subject_of(_token(b'{"sub": "' + b"\\ud800" * 86 + b'"}')) is None


def test_a_long_key_is_refused_before_it_is_hashed() -> None:
    """A made-up key is what a user without a usable one gets: the long cookie is not hashed."""
    incoming = _headers(None, f"c={'v' * 32 * 1024}")
    policy = CapabilityPolicy.build("products", Phase.CANARY, 50, 0, False, "cookie")
    key, made = Forwarder._sticky_key(SimpleNamespace(policy=policy), incoming, "c")  # type: ignore[arg-type]
    assert made is not None and key == f"cookie:{made}" and len(made) == 32


@pytest.mark.parametrize(
    ("payload", "subject"),
    [
        (b'{"sub": "plain"}', "plain"),
        (b' \n{"sub": "ws"}\t\r\n', "ws"),  # JSON whitespace
        (b'{"sub": "caf\xe9"}', None),  # not UTF-8 (njs would read caf\ufffd)
        (b'\xef\xbb\xbf{"sub": "bom"}', None),  # a BOM (JSON.parse refuses it)
        ('{"sub": "u16"}'.encode("utf-16"), None),  # Python's json.loads(bytes) read UTF-16
        (b'{"sub": "a\xed\xa0\x80"}', None),  # an encoded surrogate
        (b'{"sub": "nan", "x": NaN}', None),  # JSON.parse refuses NaN and Infinity
        (b'{"sub": "inf", "x": [Infinity]}', None),
        (b'{"sub": "lz", "x": 01}', None),  # not JSON; njs's JSON.parse takes it, not strangler.js
        (b'{"sub": "big", "x": ' + b"9" * 5000 + b"}", "big"),  # int() stops at 4,300 digits
        (b'{"sub": "x"} trailing', None),
        (b'{"a": {"sub": "nested"}}', None),
        (b'{"sub": "a\\u0000b"}', "a\x00b"),
    ],
)
def test_a_payload_is_strict_utf8_json(payload: bytes, subject: str | None) -> None:
    assert subject_of(_token(payload)) == subject


@pytest.mark.parametrize(
    ("header", "subject"),
    [
        ("Bearer \t e30.eyJzdWIiOiJ0In0.sig \t", "t"),  # spaces and tabs trimmed
        ("Bearer\te30.eyJzdWIiOiJ0In0.sig", None),  # the scheme's space is a space
        ("Bearer e30.eyJzdWIiOiJ0In0===.sig", "t"),  # padding, any amount
        ("Bearer e30.eyJzdWIiOiJ0In0!.sig", None),  # outside base64url (Python skipped it)
        ("Bearer e30.eyJzdWIiOiAifn5+In0.sig", None),  # the standard alphabet's +
        ("Bearer e30.eyJzdWIiOiAifn5-In0.sig", "~~~"),
        ("Bearer e30.eyJzdWIiOiAiYmFuZyJ9A.sig", None),  # 4n + 1 characters decode to nothing
        ("Bearer e30.\x1ceyJzdWIiOiJ0In0.sig", None),
    ],
)
def test_a_token_is_read_by_the_rules_njs_shares(header: str, subject: str | None) -> None:
    assert subject_of(header) == subject


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("c=abc", "abc"),
        ("a=1;\tc=tab\t; b=2", "tab"),  # spaces and tabs trimmed
        ("a=1;\x1cc=fs", None),  # only those: str.strip and JS trim() differ on the others
        ("c=nel\x85", None),
        ("c=caf\xe9", None),  # visible ASCII only
        ("c=a b", None),
        ('c="q"', '"q"'),
        ("a=\xe9; c=ok", "ok"),  # another cookie's bytes do not matter
        ("c=; c=later", "later"),  # the first non-empty value counts, usable or not
        (f"c={'v' * 257}; c=short", None),
        (None, None),
    ],
)
def test_the_cookie_is_read_by_the_rules_njs_shares(header: str | None, value: str | None) -> None:
    assert cookie_of(header, "c") == value


def test_only_the_first_cookie_field_counts() -> None:
    """nginx joins Cookie fields for njs; strangler.js reads the first, as the proxy does."""
    assert _known_keys(_headers(None, "a=1", "c=second"), "cookie") == []
    assert _known_keys(_headers(None, "c=first", "c=second"), "cookie") == ["cookie:first"]


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_leaves = st.one_of(
    st.integers(), st.text(alphabet='[]{}"\\ab,:'), st.none(), st.booleans(), st.just([])
)


@st.composite
def _nested_payloads(draw: st.DrawFn) -> dict[str, object]:
    """A payload with `sub` and a spine 25 to 40 containers deep, with siblings on the way."""
    value: object = draw(_leaves)
    for _ in range(draw(st.integers(min_value=24, max_value=39))):
        siblings = draw(st.lists(_leaves, max_size=2))
        if draw(st.booleans()):
            value = [*siblings, value]
        else:
            value = {**{f"k{n}[": s for n, s in enumerate(siblings)}, "v{": value}
    return {"sub": "deep", "a": value}


@settings(max_examples=60, deadline=None)
@given(payload=_nested_payloads(), indent=st.sampled_from([None, 1]))
def test_a_payload_nested_deeper_than_njs_reads_has_no_subject(
    payload: dict[str, object], indent: int | None
) -> None:
    """njs's JSON.parse refuses 32 levels; the proxy reads the subject exactly up to 31."""
    token = _token(json.dumps(payload, indent=indent).encode())
    assert (subject_of(token) == "deep") is (_depth(payload) <= JSON_DEPTH_LIMIT)


def test_nesting_is_counted_exactly_at_the_limit() -> None:
    for depth, subject in ((31, "deep"), (32, None), (2000, None)):
        inner = "[" * (depth - 1) + "]" * (depth - 1)
        assert subject_of(_token(f'{{"sub": "deep", "a": {inner}}}'.encode())) == subject
    assert subject_of(_token(json.dumps({"sub": "s", "a": "[" * 100}).encode())) == "s"
