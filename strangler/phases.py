"""The phases of one capability's journey out of the monolith, defined once.

Every part that follows the migration state (the proxy now; the monolith, the service and the
relay in later steps) reads where reads and writes go from here, so the phases cannot drift
apart between them. Order matters: a phase may advance only to the next one, and may roll back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["PHASES", "Phase", "PhaseRouting", "Side", "routing_of"]


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


@dataclass(frozen=True)
class PhaseRouting:
    """Where a phase sends a capability's traffic.

    `reads` is None in canary, where the rollout percentage splits users between the sides.
    `shadow_reads` mirrors reads to the other side for comparison. `monolith_holds_data` says
    whether the monolith may answer a read when the service fails (fallback).
    """

    reads: Side | None
    writes: Side
    shadow_reads: bool
    monolith_holds_data: bool


_ROUTING = {
    Phase.MONOLITH: PhaseRouting(Side.MONOLITH, Side.MONOLITH, False, True),
    Phase.DUAL_WRITE: PhaseRouting(Side.MONOLITH, Side.MONOLITH, False, True),
    Phase.BACKFILLED: PhaseRouting(Side.MONOLITH, Side.MONOLITH, False, True),
    Phase.SHADOW: PhaseRouting(Side.MONOLITH, Side.MONOLITH, True, True),
    Phase.CANARY: PhaseRouting(None, Side.MONOLITH, False, True),
    Phase.READS_CUTOVER: PhaseRouting(Side.SERVICE, Side.MONOLITH, False, True),
    # The reverse relay keeps the monolith's copy current after writes move: the way back.
    Phase.WRITES_CUTOVER: PhaseRouting(Side.SERVICE, Side.SERVICE, False, True),
    Phase.DECOMMISSIONED: PhaseRouting(Side.SERVICE, Side.SERVICE, False, False),
}


def routing_of(phase: Phase) -> PhaseRouting:
    return _ROUTING[phase]
