"""The write fence: holding a capability's writes while they move from one side to the other.

When writes switch sides (reads_cutover <-> writes_cutover) the old side may still have writes
in flight, and its outbox events not yet applied on the new side; a write taken by the new side
on top of a stale version would make the relay lose one of the two. So the switch is: close the
fence (new writes wait here), let the writes in flight finish, drain the old side's outbox
(the CLI watches the relay), flip the phase, open the fence. Held writes then go to the new
side; one held longer than `hold_seconds` is answered 503 with Retry-After instead.

A fence has a lease: if whoever closed it goes away, it opens by itself, and the phase change
that names it is refused, so an abandoned fence can neither block writes for long nor let a
flip through unfenced.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

__all__ = ["FenceClosed", "FenceReport", "WriteFence", "WriteFences"]


class FenceClosed(Exception):
    """A held write waited longer than the fence's hold bound."""


@dataclass(frozen=True)
class FenceReport:
    """What one closing of a fence cost: how long writes paused and how many waited."""

    fence_id: str
    paused_seconds: float
    held_requests: int
    expired: bool


class WriteFence:
    """The fence of one capability: open by default; counts the writes passing through it."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.in_flight = 0
        self.fence_id: str | None = None
        self.closed_at: float | None = None
        self.hold_seconds = 5.0
        self.held = 0
        self._lease: asyncio.TimerHandle | None = None
        self.last: FenceReport | None = None

    @property
    def is_closed(self) -> bool:
        return not self._open.is_set()

    async def admit(self) -> bool:
        """Let one write through, waiting while the fence is closed; False past the bound.

        The caller must call `leave()` once the write is finished when this returns True.
        """
        if self._open.is_set():
            self._enter()
            return True
        self.held += 1
        deadline = asyncio.get_running_loop().time() + self.hold_seconds
        try:
            async with asyncio.timeout_at(deadline):
                # Woken by an opening, the fence may already be closed again (a new switch
                # began before this write resumed): it must wait for that one too.
                while not self._open.is_set():
                    await self._open.wait()
        except TimeoutError:
            return False
        self._enter()
        return True

    def _enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def close(self, hold_seconds: float, lease_seconds: float, drain_seconds: float) -> str:
        """Hold new writes and wait for those in flight; returns the fence id.

        Raises TimeoutError (the fence opened again) when writes in flight outlast
        `drain_seconds`, and RuntimeError when the fence is already closed.
        """
        if self.is_closed:
            raise RuntimeError(f"already closed by fence {self.fence_id}")
        self.fence_id = uuid.uuid4().hex
        self.closed_at = time.monotonic()
        self.hold_seconds = hold_seconds
        self.held = 0
        self._open.clear()
        self._lease = asyncio.get_running_loop().call_later(lease_seconds, self._expire)
        fence_id = self.fence_id
        try:
            async with asyncio.timeout(drain_seconds):
                await self._idle.wait()
        except TimeoutError:
            self.open()
            raise
        if not self.holds(fence_id):
            raise TimeoutError("the lease ended while writes in flight drained")
        return fence_id

    def _expire(self) -> None:
        self._lease = None
        self.open(expired=True)

    def holds(self, fence_id: str) -> bool:
        return self.is_closed and self.fence_id == fence_id

    def open(self, *, expired: bool = False) -> FenceReport | None:
        """Release the held writes; None when the fence was not closed."""
        if not self.is_closed or self.fence_id is None or self.closed_at is None:
            return None
        if self._lease is not None:
            self._lease.cancel()
            self._lease = None
        report = FenceReport(
            fence_id=self.fence_id,
            paused_seconds=time.monotonic() - self.closed_at,
            held_requests=self.held,
            expired=expired,
        )
        self.last = report
        self._open.set()
        return report

    def snapshot(self) -> dict[str, object]:
        last = self.last
        return {
            "closed": self.is_closed,
            "fence_id": self.fence_id if self.is_closed else None,
            "in_flight_writes": self.in_flight,
            "held": self.held if self.is_closed else 0,
            "last_pause_ms": round(last.paused_seconds * 1000, 1) if last else None,
            "last_held_requests": last.held_requests if last else None,
            "last_expired": last.expired if last else None,
        }


class WriteFences:
    """One fence per capability, kept across config reloads (a reload must not open one)."""

    def __init__(self) -> None:
        self._fences: dict[str, WriteFence] = {}

    def of(self, capability: str) -> WriteFence:
        fence = self._fences.get(capability)
        if fence is None:
            fence = self._fences[capability] = WriteFence()
        return fence
