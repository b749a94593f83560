"""Read your own writes across the two sides of a capability.

The relay lags: in canary or after reads cut over, a user whose write the monolith just took
could read the service's older copy a moment later. So a write through the proxy pins its
user (the stickiness key: token subject or cookie) to the side that took it, and that user's
reads of the capability go there, unshadowed and without fallback to a side that may be stale,
until the sync has carried the write over.

"Carried over" is decided from the write side's outbox, without the apps having to report
positions: the first poll of the side's sync lag that starts after the write was acknowledged
sees the write's event (it committed before the answer), so every event of the user's is at or
below that poll's `last_id`; once a later poll's first undelivered id is above that mark (or
nothing is pending), the target has applied them. A pin that outlives `max_seconds` (relay
stopped, no sync token) expires and is counted: reads then go where the phase says.

Pins live in this proxy process; several proxy processes need users kept on one of them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from strangler.phases import Side

__all__ = ["Pin", "ReadYourWrites"]


@dataclass
class Pin:
    side: Side
    acked_at: float
    mark: int | None = None


class ReadYourWrites:
    """The pinned users of every capability, bounded in number and in age.

    Pins are kept in the order their writes were acknowledged (a new write moves its user to
    the end), which makes a poll cost what it changes, not what is pinned: expired pins are a
    prefix; the pins a poll marks are a suffix (every older pin was marked by an earlier
    poll); and because marks grow along the order, released pins are a prefix too.
    """

    def __init__(self, max_pins: int, max_seconds: float) -> None:
        self.max_pins = max_pins
        self.max_seconds = max_seconds
        self._pins: dict[str, OrderedDict[str, Pin]] = {}
        self._sides: dict[str, dict[Side, int]] = {}
        self.expired = 0
        self.evicted = 0
        self.settled = 0

    def _drop(self, capability: str, pin: Pin) -> None:
        self._sides[capability][pin.side] -= 1

    def pin(self, capability: str, user: str, side: Side) -> None:
        pins = self._pins.get(capability)
        if pins is None:
            pins = self._pins[capability] = OrderedDict()
            self._sides[capability] = dict.fromkeys(Side, 0)
        now = time.monotonic()
        old = pins.pop(user, None)
        if old is not None:
            self._drop(capability, old)
        pins[user] = Pin(side, now)
        self._sides[capability][side] += 1
        self._expire(capability, pins, now)
        if len(pins) > self.max_pins:
            self._drop(capability, pins.popitem(last=False)[1])
            self.evicted += 1

    def _expire(self, capability: str, pins: OrderedDict[str, Pin], now: float) -> None:
        """Drop expired pins, oldest first (nobody may read again to expire them)."""
        while pins:
            oldest = next(iter(pins.values()))
            if now - oldest.acked_at <= self.max_seconds:
                return
            self._drop(capability, pins.popitem(last=False)[1])
            self.expired += 1

    def has_pins(self, capability: str) -> bool:
        return bool(self._pins.get(capability))

    def side_for(self, capability: str, user: str) -> Side | None:
        """The side this user's reads must go to, or None when nothing holds them."""
        pins = self._pins.get(capability)
        if not pins:
            return None
        pin = pins.get(user)
        if pin is None:
            return None
        if time.monotonic() - pin.acked_at > self.max_seconds:
            del pins[user]
            self._drop(capability, pin)
            self.expired += 1
            return None
        return pin.side

    def pinned(self) -> dict[str, set[Side]]:
        """Which sides of which capabilities have pins waiting on the sync."""
        return {
            name: {side for side, count in self._sides[name].items() if count}
            for name, pins in self._pins.items()
            if pins
        }

    def settle(
        self,
        capability: str,
        side: Side,
        poll_started: float,
        first_pending_id: int | None,
        last_id: int | None,
    ) -> None:
        """Apply one poll of `side`'s outbox, started at `poll_started` (monotonic)."""
        pins = self._pins.get(capability)
        if not pins:
            return
        self._expire(capability, pins, time.monotonic())
        # Newest first: the pins acknowledged before this poll began have seen their write
        # in it; stop at the first one an earlier poll already marked.
        for pin in reversed(pins.values()):
            if pin.acked_at >= poll_started or pin.side is not side:
                continue
            if pin.mark is not None:
                break
            pin.mark = last_id if last_id is not None else 0
        # Oldest first: release while everything up to the mark is delivered.
        done = []
        for user, pin in pins.items():
            if pin.side is not side:
                continue
            if pin.mark is None or not (first_pending_id is None or first_pending_id > pin.mark):
                break
            done.append(user)
        for user in done:
            self._drop(capability, pins.pop(user))
            self.settled += 1

    def snapshot(self) -> dict[str, object]:
        return {
            "pinned_users": {name: len(pins) for name, pins in self._pins.items()},
            "settled": self.settled,
            "expired": self.expired,
            "evicted": self.evicted,
        }
