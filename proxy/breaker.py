"""A circuit breaker per upstream: stop sending traffic to a service that keeps failing.

closed --(threshold consecutive failures)--> open --(cool-down)--> half_open (one probe)
half_open --probe ok--> closed;  half_open --probe fails or is abandoned--> open.

Only upstream failures count (connect errors, timeouts, 502/503/504); the proxy's own overflow
(pool exhausted) does not. A probe that is cancelled before it finishes re-opens the breaker
with the cool-down already spent, so the next request probes again instead of waiting forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self.times_opened = 0

    def allow(self) -> bool:
        """Whether a request may go to the upstream now; in half-open, only one probe."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self._clock() - self.opened_at >= self.cooldown_seconds:
                self.state = BreakerState.HALF_OPEN
                return True
            return False
        return False  # a probe is already in flight

    def record_success(self) -> None:
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if self.state is BreakerState.HALF_OPEN or (
            self.consecutive_failures >= self.failure_threshold
        ):
            self._open(self._clock())

    def record_abandoned(self) -> None:
        """The request ended without a verdict (e.g. the client went away)."""
        if self.state is BreakerState.HALF_OPEN:
            self._open(self._clock() - self.cooldown_seconds)

    def _open(self, at: float) -> None:
        if self.state is not BreakerState.OPEN:
            self.times_opened += 1
        self.state = BreakerState.OPEN
        self.opened_at = at

    def snapshot(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "consecutive_failures": self.consecutive_failures,
            "times_opened": self.times_opened,
        }
