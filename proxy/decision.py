"""Which side answers a request: pure functions over the compiled config, no I/O.

Stickiness: a user's bucket is a stable hash of (capability, key) in [0, 2**32), nginx's
murmur2 of `"<capability>:<key>"` (`strangler.split`), so an nginx edge exported from the same
routing.toml (`strangler export nginx`, whose split_clients hashes the same string) puts every
user on the same side. The service gets the buckets below the threshold nginx derives from
`canary_percent` (two decimals), so raising the percentage only ever adds buckets to the
service side: no user moves back to the monolith while a rollout grows.

The key itself (`subject_of`, `cookie_of`) is read by rules an nginx edge's njs module
(strangler.nginx_njs) applies identically, each chosen because both languages can hold it
exactly: ASCII whitespace only (space and tab) is trimmed, a token payload must be base64url
that decodes to strict UTF-8 (no BOM) holding strict JSON (no NaN, no lax numbers, at most
JSON_DEPTH_LIMIT levels deep), a cookie value must be visible ASCII, and a subject or cookie
longer than KEY_BYTES_LIMIT bytes counts as absent.
"""

from __future__ import annotations

import base64
import json
import random
import re
from dataclasses import dataclass
from typing import NoReturn

from strangler.phases import Phase, PhaseRouting, Side, routing_of
from strangler.split import HASH_SPACE, KEY_BYTES_LIMIT, key_bytes, split_threshold, sticky_hash

__all__ = [
    "BUCKETS",
    "READ_METHODS",
    "CapabilityPolicy",
    "Decision",
    "bucket_of",
    "canary_threshold",
    "cookie_of",
    "decide",
    "subject_of",
]

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BUCKETS = HASH_SPACE

JSON_DEPTH_LIMIT = 31
"""njs's JSON.parse refuses a document nested deeper than this (arrays and objects)."""

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_COOKIE_VALUE = re.compile(rf"[!-~]{{1,{KEY_BYTES_LIMIT}}}")  # visible ASCII
_OWS = " \t"


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not JSON")


# Strict JSON as JSON.parse reads it: NaN and Infinity refused; an integer of any length read
# (as a float: Python's int() refuses more than 4,300 digits, JSON.parse does not).
_JSON = json.JSONDecoder(parse_int=float, parse_constant=_not_json)
_JSON_STRINGS = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"')


def _nesting_at_most(depth: int) -> re.Pattern[str]:
    """JSON text with its strings taken out that nests at most `depth` arrays and objects."""
    pattern = r"[^\[\]{}]*+"
    for _ in range(depth):
        pattern = r"(?:[^\[\]{}]++|[\[{]" + pattern + r"[\]}])*+"
    return re.compile(pattern)


_SHALLOW_JSON = _nesting_at_most(JSON_DEPTH_LIMIT)


@dataclass(frozen=True)
class CapabilityPolicy:
    """The routing facts of one capability, computed once per config load."""

    name: str
    phase: Phase
    routing: PhaseRouting
    canary_threshold: int  # reads of users whose bucket is below it go to the service
    shadow_percent: float
    shadow_during_canary: bool
    sticky_key: str

    @classmethod
    def build(
        cls,
        name: str,
        phase: Phase,
        canary_percent: float,
        shadow_percent: float,
        shadow_during_canary: bool,
        sticky_key: str,
    ) -> CapabilityPolicy:
        return cls(
            name=name,
            phase=phase,
            routing=routing_of(phase),
            canary_threshold=split_threshold(canary_percent),
            shadow_percent=shadow_percent,
            shadow_during_canary=shadow_during_canary,
            sticky_key=sticky_key,
        )

    @property
    def splits_reads(self) -> bool:
        return self.routing.reads is None

    @staticmethod
    def sticky_cookie(header: str | None, name: str) -> str | None:
        """`cookie_of`, reachable from the policy the forwarder holds for a route."""
        return cookie_of(header, name)


@dataclass(frozen=True)
class Decision:
    primary: Side
    shadow: Side | None
    fallback_to_monolith: bool


def bucket_of(capability: str, key: str) -> int:
    """Stable bucket in [0, BUCKETS) of a user for a capability: nginx's split_clients hash."""
    return sticky_hash(capability, key)


def canary_threshold(percent: float) -> int:
    """The canary's bucket boundary at `percent` (two decimals count), as nginx computes it."""
    return split_threshold(percent)


def subject_of(authorization: str | None) -> str | None:
    """The `sub` of a bearer JWT, unverified.

    Used only to keep a user on one side; both sides verify the token themselves, so a forged
    subject buys nothing but a choice of which of two equivalent answers to get. Read exactly
    as strangler.js reads it at an nginx edge (module docstring); anything else is no subject.
    """
    if not authorization or authorization[:7].lower() != "bearer ":
        return None
    parts = authorization[7:].strip(_OWS).split(".")
    if len(parts) != 3:
        return None
    segment = parts[1].rstrip("=")
    if len(segment) % 4 == 1 or not _BASE64URL.fullmatch(segment):
        return None
    try:
        text = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode()
        payload = _JSON.decode(text)
    except (ValueError, RecursionError):  # RecursionError: nested hundreds of levels deep
        return None
    if not isinstance(payload, dict) or _nested_too_deep(text):
        return None
    subject = payload.get("sub")
    if not isinstance(subject, str) or not subject or _too_long(subject):
        return None
    return subject


def cookie_of(header: str | None, name: str) -> str | None:
    """The value of the cookie `name` in a Cookie header, as strangler.js reads it.

    The first `name=` with a non-empty value counts; a value that is not 1 to KEY_BYTES_LIMIT
    visible ASCII characters (a byte outside ASCII, a space, an overlong value) is no cookie.
    """
    if not header:
        return None
    for part in header.split(";"):
        key, _, value = part.strip(_OWS).partition("=")
        if key == name and value:
            return value if _COOKIE_VALUE.fullmatch(value) else None
    return None


def _too_long(subject: str) -> bool:
    return len(subject) > KEY_BYTES_LIMIT or len(key_bytes(subject)) > KEY_BYTES_LIMIT


def _nested_too_deep(text: str) -> bool:
    """Whether a JSON document (valid: it parsed) nests deeper than JSON_DEPTH_LIMIT.

    On the text, by one possessive regex that never backtracks: a payload of thousands of
    containers costs a fraction of a millisecond, less than parsing it did.
    """
    if text.count("[") + text.count("{") <= JSON_DEPTH_LIMIT:
        return False  # the common case: too few brackets (strings' included) to nest so deep
    return _SHALLOW_JSON.fullmatch(_JSON_STRINGS.sub("", text)) is None


def _other(side: Side) -> Side:
    return Side.SERVICE if side is Side.MONOLITH else Side.MONOLITH


def decide(
    policy: CapabilityPolicy,
    method: str,
    sticky_key: str | None,
    forced: Side | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """Where this request goes, whether a copy is shadowed, and whether fallback is allowed.

    `sticky_key` is needed only when `policy.splits_reads` and the request is a read.
    """
    is_read = method in READ_METHODS
    routing = policy.routing
    if forced is not None:
        primary = forced
    elif not is_read:
        primary = routing.writes
    elif routing.reads is not None:
        primary = routing.reads
    else:
        in_service = sticky_key is not None and (
            bucket_of(policy.name, sticky_key) < policy.canary_threshold
        )
        primary = Side.SERVICE if in_service else Side.MONOLITH
    shadow: Side | None = None
    if method == "GET" and forced is None:
        mirrors = routing.shadow_reads or (policy.splits_reads and policy.shadow_during_canary)
        if mirrors and (rng or random).random() * 100 < policy.shadow_percent:
            shadow = _other(primary)
    fallback = is_read and primary is Side.SERVICE and routing.monolith_holds_data
    return Decision(primary=primary, shadow=shadow, fallback_to_monolith=fallback)
