"""The phases of one capability's journey out of the monolith, defined once.

Every part that follows the migration state (the proxy now; the monolith, the service and the
relay in later steps) reads where reads and writes go from here, so the phases cannot drift
apart between them. Order matters: a phase may advance only to the next one, and may roll back.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

__all__ = [
    "PHASES",
    "Phase",
    "PhaseFile",
    "PhaseRouting",
    "Side",
    "SyncDirection",
    "gated_step",
    "routing_of",
]


class Side(StrEnum):
    """Which implementation of a capability answers."""

    MONOLITH = "monolith"
    SERVICE = "service"


class Phase(StrEnum):
    MONOLITH = "monolith"
    DUAL_WRITE = "dual_write"
    BACKFILLED = "backfilled"
    SHADOW = "shadow"
    CANARY = "canary"
    READS_CUTOVER = "reads_cutover"
    WRITES_CUTOVER = "writes_cutover"
    DECOMMISSIONED = "decommissioned"

    @property
    def position(self) -> int:
        return PHASES.index(self)


PHASES: tuple[Phase, ...] = tuple(Phase)


class SyncDirection(StrEnum):
    """Which way change events flow for a capability."""

    FORWARD = "monolith_to_service"
    REVERSE = "service_to_monolith"


@dataclass(frozen=True)
class PhaseRouting:
    """Where a phase sends a capability's traffic.

    `reads` is None in canary, where the rollout percentage splits users between the sides.
    `shadow_reads` mirrors reads to the other side for comparison. `monolith_holds_data` says
    whether the monolith may answer a read when the service fails (fallback). `sync` is the
    direction change events flow (None: nothing is synced).
    """

    reads: Side | None
    writes: Side
    shadow_reads: bool
    monolith_holds_data: bool
    sync: SyncDirection | None


_M, _S, _F, _R = Side.MONOLITH, Side.SERVICE, SyncDirection.FORWARD, SyncDirection.REVERSE
_ROUTING = {
    Phase.MONOLITH: PhaseRouting(_M, _M, False, True, None),
    Phase.DUAL_WRITE: PhaseRouting(_M, _M, False, True, _F),
    Phase.BACKFILLED: PhaseRouting(_M, _M, False, True, _F),
    Phase.SHADOW: PhaseRouting(_M, _M, True, True, _F),
    Phase.CANARY: PhaseRouting(None, _M, False, True, _F),
    Phase.READS_CUTOVER: PhaseRouting(_S, _M, False, True, _F),
    # The reverse relay keeps the monolith's copy current after writes move: the way back.
    Phase.WRITES_CUTOVER: PhaseRouting(_S, _S, False, True, _R),
    Phase.DECOMMISSIONED: PhaseRouting(_S, _S, False, False, None),
}


def routing_of(phase: Phase) -> PhaseRouting:
    return _ROUTING[phase]


def gated_step(
    old_phase: Phase, new_phase: Phase, old_percent: float, new_percent: float
) -> str | None:
    """What a change does that the runbook's gates guard, in words; None when it is ungated.

    Moving a phase forward is gated by the target phase's gates, and raising the rollout
    inside canary by the canary's health. Going back (a phase or a percentage) never is: the
    way back must always be open.
    """
    if new_phase.position > old_phase.position:
        return f"{old_phase.value} -> {new_phase.value}"
    if old_phase is Phase.CANARY and new_phase is Phase.CANARY and new_percent > old_percent:
        return f"raising the canary from {old_percent:g} % to {new_percent:g} %"
    return None


class PhaseFile:
    """The current phase of one capability, read from routing.toml as it changes.

    Apps that must follow the migration (the monolith writing its outbox, the service writing
    its reverse outbox) ask it on each write; it re-reads the file only when its mtime changed.
    A missing or unreadable file, or a capability it does not name, reads as `monolith`: the
    safe default, in which nothing is synced and nothing moved. One instance serves all of an
    app's request threads: a thread never sees the new file as read while the old phase is
    still the one held.
    """

    def __init__(self, path: Path | None, capability: str) -> None:
        self._path = path
        self._capability = capability
        self._seen: tuple[int, int] | None = None
        self._phase = Phase.MONOLITH

    def current(self) -> Phase:
        if self._path is None:
            return Phase.MONOLITH
        try:
            stat = self._path.stat()
        except OSError:
            return self._phase
        signature = (stat.st_mtime_ns, stat.st_size)
        if signature != self._seen:
            try:
                data = tomllib.loads(self._path.read_text())
                raw = data.get("capabilities", {}).get(self._capability, {}).get("phase")
                self._phase = Phase(raw) if raw else Phase.MONOLITH
            except (OSError, tomllib.TOMLDecodeError, ValueError):
                pass  # a bad edit: keep the last phase read (the proxy refuses it too)
            # Only now: a request thread that finds the new signature seen must also find
            # the new phase (marking it seen first let one read the old phase as current).
            self._seen = signature
        return self._phase

    def reread(self) -> Phase:
        """Read the file now, whatever its mtime says.

        Two edits within one filesystem timestamp tick that leave the size alone look
        unchanged to `current`; a caller just told by the other side that the phase moved
        asks this instead.
        """
        self._seen = None
        return self.current()

    def sync(self) -> SyncDirection | None:
        return routing_of(self.current()).sync
