"""Moving a capability's writes to the other side behind the proxy's write fence.

The order matters (docs/architecture.md, "The write switch"): close the fence so no new
write reaches either side and the ones in flight finish; wait until the relay has delivered
every event of the side that held the writes, so the new side holds every acknowledged write;
change the phase naming the fence; open the fence, and the held writes go to the new side.
Any failure before the flip opens the fence and changes nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from strangler.admin_client import AdminApiError, AdminClient
from strangler.phases import Phase, Side, routing_of
from strangler.settings import CliSettings
from strangler.sync.client import SyncApiError, SyncClient

__all__ = ["SwitchFailed", "SwitchReport", "moves_writes", "switch_writes"]


class SwitchFailed(Exception):
    """The switch did not happen; the message says why and nothing changed."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class SwitchReport:
    changed: dict[str, Any]
    paused_ms: float
    held_requests: int
    drained_events: int


def moves_writes(current: Phase, target: Phase) -> bool:
    return routing_of(current).writes is not routing_of(target).writes


_ESCAPE = (
    "if that side is down and you must move writes anyway, edit the phase in routing.toml by "
    "hand (applied with a warning, without the fence), then run `strangler reconcile "
    "<capability> --repair` once it is back"
)


def _drain(source: SyncClient, deadline: float) -> int:
    """Wait until `source`'s outbox has nothing undelivered; return how many were pending.

    A dead letter is an event the other side refused: counted as delivered by the outbox, it
    is a write the new side lacks, so one that appears while draining stops the switch.
    """
    first: int | None = None
    dead_before: int | None = None
    while True:
        try:
            lag = source.lag()
        except SyncApiError as exc:
            raise SwitchFailed(
                f"cannot read the outbox of the side that held the writes: {exc}; writes were "
                "released, nothing changed",
                f"is it running? `strangler status` shows both sides; {_ESCAPE}",
            ) from exc
        pending, dead = int(lag["pending"]), int(lag["dead_letters"])
        first = pending if first is None else first
        dead_before = dead if dead_before is None else dead_before
        if dead > dead_before:
            raise SwitchFailed(
                f"{dead - dead_before} event(s) went to dead letters while draining; writes "
                "were released, nothing changed",
                "look at the relay's log, fix the cause, `strangler reconcile <capability> "
                "--repair`, and switch again",
            )
        if pending == 0:
            return first
        if time.monotonic() > deadline:
            raise SwitchFailed(
                f"the relay did not deliver the last {pending} event(s) in time; writes were "
                "released, nothing changed",
                "is `strangler relay <capability>` running? `strangler status` shows the lag; "
                + _ESCAPE,
            )
        time.sleep(0.05)


def switch_writes(
    admin: AdminClient,
    settings: CliSettings,
    capability: str,
    current: Phase,
    changes: dict[str, object],
    *,
    drain_seconds: float,
) -> SwitchReport:
    """Change the phase (moving writes) behind the write fence; raise SwitchFailed if not."""
    token = settings.sync_token_value()
    if token is None:
        raise SwitchFailed(
            "no sync token to watch the relay drain with",
            "set STRANGLER_SYNC_TOKEN, or run where `strangler up` wrote "
            f"{settings.sync_token_file}",
        )
    old_side = routing_of(current).writes
    source_url = settings.monolith_url if old_side is Side.MONOLITH else settings.service_url
    source = SyncClient(source_url, token, capability, timeout=5)
    try:
        try:
            fence = admin.close_fence(
                capability, lease_seconds=drain_seconds + 15, drain_seconds=drain_seconds
            )
        except AdminApiError as exc:
            raise SwitchFailed(f"{exc}; nothing changed", exc.hint) from exc
        fence_id = str(fence["fence_id"])
        flipped = False
        try:
            drained = _drain(source, time.monotonic() + drain_seconds)
            try:
                changed = admin.change(capability, {**changes, "fence": fence_id})
            except AdminApiError as exc:
                released = (
                    f"the phase change failed: {exc}; writes were released (if the proxy was "
                    "unreachable, `strangler status` shows whether the phase changed)"
                )
                raise SwitchFailed(released, exc.hint) from exc
            flipped = True
        finally:
            try:
                opened = admin.open_fence(capability, fence_id)
            except AdminApiError as exc:
                lease = f"it opens by itself when its lease ends ({drain_seconds + 15:g} s)"
                if flipped:
                    raise SwitchFailed(
                        f"the phase changed, but the write fence could not be opened: {exc}",
                        lease,
                    ) from exc
                raise SwitchFailed(  # the original error was lost: say both
                    f"the switch failed and the write fence could not be opened: {exc}; "
                    "the phase did not change",
                    lease,
                ) from exc
    finally:
        source.close()
    return SwitchReport(
        changed=changed,
        paused_ms=float(opened.get("paused_ms", 0.0)),
        held_requests=int(opened.get("held_requests", 0)),
        drained_events=drained,
    )
