"""Which side answers a request: pure functions over the compiled config, no I/O.

Stickiness: a user's bucket is a stable hash of (capability, key) in [0, 2**32), nginx's
murmur2 of `"<capability>:<key>"` (`strangler.split`), so an nginx edge exported from the same
routing.toml (`strangler export nginx`, whose split_clients hashes the same string) puts every
user on the same side. The service gets the buckets below the threshold nginx derives from
`canary_percent` (two decimals), so raising the percentage only ever adds buckets to the
service side: no user moves back to the monolith while a rollout grows.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass

from strangler.phases import Phase, PhaseRouting, Side, routing_of
from strangler.split import HASH_SPACE, split_threshold, sticky_hash

__all__ = [
    "BUCKETS",
    "READ_METHODS",
    "CapabilityPolicy",
    "Decision",
    "bucket_of",
    "canary_threshold",
    "decide",
    "subject_of",
]

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BUCKETS = HASH_SPACE


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
    subject buys nothing but a choice of which of two equivalent answers to get.
    """
    if not authorization or not authorization[:7].lower() == "bearer ":
        return None
    parts = authorization[7:].strip().split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    subject = payload.get("sub") if isinstance(payload, dict) else None
    return subject if isinstance(subject, str) and subject else None


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
