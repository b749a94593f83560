"""Moving a capability's writes to the other side, behind the proxy's write fence and the
sides' write barriers.

The order matters (docs/architecture.md, "The write switch"):
1. refuse while the side that holds the writes has unresolved dead letters: the other side
   lacks those writes, and taking over from it would lose them or reuse their versions;
2. close the proxy's fence: new writes through the proxy wait, the ones in flight finish;
3. close the old side's write barrier (strangler.sync.barrier), in its database: it answers
   once the writes in flight there finished, and from then on no write of the capability
   commits there, whatever path it came by (a write the proxy gave up on, one sent around it);
4. wait until the relay has delivered every event of the old side: with the barrier closed,
   no new one can appear, so the new side then holds every acknowledged write;
5. open the new side's barrier, change the phase naming the fence, open the fence: the held
   writes go to the new side.
Any failure before the phase changed puts both barriers back as they were, opens the fence,
and changes nothing.
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
    """The switch did not happen (unless the message says the phase changed); the message
    says why, the hint what to do."""

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
    "if that side is down and you must move writes anyway, edit the phase in the routing file "
    "by hand (applied with a warning, without the fence), set the barriers with `strangler "
    "barrier <capability> --writes-to <side>`, then run `strangler reconcile <capability> "
    "--repair` once it is back"
)


def _drain(source: SyncClient, deadline: float) -> int:
    """Wait until `source`'s outbox has nothing undelivered; return how many were pending.

    A dead letter is an event the other side refused: counted as delivered by the outbox, it
    is a write the new side lacks, so one that appears while draining stops the switch (there
    were none when it started: `_refuse_dead_letters`).
    """
    first: int | None = None
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
        if dead:
            raise SwitchFailed(
                f"{dead} event(s) went to dead letters while draining; writes were released, "
                "nothing changed",
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


def _refuse_dead_letters(source: SyncClient, capability: str, side: Side) -> None:
    """Item 1 of the order: the old side's unresolved dead letters are writes the new side
    lacks; name them and how to resolve them."""
    try:
        letters = source.dead_letters(limit=5)
    except SyncApiError as exc:
        raise SwitchFailed(
            f"cannot read the dead letters of the {side.value}: {exc}; nothing changed",
            f"is it running? `strangler status` shows both sides; {_ESCAPE}",
        ) from exc
    if not letters:
        return
    named = ", ".join(f"key {d['key']} v{d['version']} ({d['reason']})" for d in letters)
    raise SwitchFailed(
        f"the {side.value} has unresolved dead letters: events the other side refused, whose "
        f"writes it lacks ({named}{', ...' if len(letters) == 5 else ''}); nothing changed",
        f"fix what refused them (the relay's log says), then `strangler reconcile {capability} "
        "--repair`: once both sides agree it marks them resolved; then switch again",
    )


def _set(client: SyncClient, here: bool | None, side: Side, wait_seconds: float) -> None:
    try:
        client.set_writes(here, wait_seconds=wait_seconds)
    except SyncApiError as exc:
        raise SwitchFailed(
            f"could not set the write barrier of the {side.value} to {here}: {exc}",
            f"is it running? `strangler status` shows both sides; {_ESCAPE}",
        ) from exc


def switch_writes(
    admin: AdminClient,
    settings: CliSettings,
    capability: str,
    current: Phase,
    changes: dict[str, object],
    *,
    drain_seconds: float,
) -> SwitchReport:
    """Change the phase (moving writes) behind the write fence and the write barriers; raise
    SwitchFailed if not (see the module docstring for the order and why)."""
    token = settings.sync_token_value()
    if token is None:
        raise SwitchFailed(
            "no sync token to watch the relay drain with",
            "set STRANGLER_SYNC_TOKEN, or run where `strangler up` wrote "
            f"{settings.sync_token_file}",
        )
    old_side = routing_of(current).writes
    new_side = Side.SERVICE if old_side is Side.MONOLITH else Side.MONOLITH
    urls = {Side.MONOLITH: settings.monolith_url, Side.SERVICE: settings.service_url}
    source = SyncClient(urls[old_side], token, capability, timeout=5)
    target = SyncClient(urls[new_side], token, capability, timeout=5)
    try:
        _refuse_dead_letters(source, capability, old_side)
        try:
            before = (source.writes(), target.writes())
        except SyncApiError as exc:
            raise SwitchFailed(
                f"cannot read the write barriers: {exc}; nothing changed",
                f"are both sides running and at their latest migration? {_ESCAPE}",
            ) from exc
        try:
            fence = admin.close_fence(
                capability, lease_seconds=drain_seconds + 15, drain_seconds=drain_seconds
            )
        except AdminApiError as exc:
            raise SwitchFailed(f"{exc}; nothing changed", exc.hint) from exc
        fence_id = str(fence["fence_id"])
        flipped = False
        try:
            try:
                deadline = time.monotonic() + drain_seconds
                _set(source, False, old_side, drain_seconds)
                drained = _drain(source, deadline)
                _set(target, True, new_side, drain_seconds)
                try:
                    changed = admin.change(capability, {**changes, "fence": fence_id})
                except AdminApiError as exc:
                    released = (
                        f"the phase change failed: {exc}; writes were released (if the proxy "
                        "was unreachable, `strangler status` shows whether the phase changed)"
                    )
                    raise SwitchFailed(released, exc.hint) from exc
                flipped = True
            finally:
                if not flipped:
                    _restore(source, target, before, old_side, new_side)
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
        target.close()
    return SwitchReport(
        changed=changed,
        paused_ms=float(opened.get("paused_ms", 0.0)),
        held_requests=int(opened.get("held_requests", 0)),
        drained_events=drained,
    )


def _restore(
    source: SyncClient,
    target: SyncClient,
    before: tuple[bool | None, bool | None],
    old_side: Side,
    new_side: Side,
) -> None:
    """Put both barriers back as they were before a switch that did not happen (the new
    side's first, so that at no moment both sides take writes)."""
    for client, here, side in ((target, before[1], new_side), (source, before[0], old_side)):
        try:
            client.set_writes(here, wait_seconds=10)
        except SyncApiError as exc:
            raise SwitchFailed(
                f"the switch failed, and the write barrier of the {side.value} could not be "
                f"put back ({exc}): writes of the capability may be refused there",
                f"once it answers, `strangler barrier <capability> --writes-to "
                f"{old_side.value}` opens the {old_side.value} and closes the other again",
            ) from exc
