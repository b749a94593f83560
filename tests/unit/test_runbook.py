"""The committed runbook is exactly what the phase definitions generate."""

from __future__ import annotations

from pathlib import Path

from strangler.phases import PHASES, Phase
from strangler.runbook import STEPS, next_command, render

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_runbook_matches_the_code() -> None:
    committed = (ROOT / "runbooks" / "products.md").read_text()
    assert committed == render("products"), (
        "runbooks/products.md is stale: run `strangler runbook products --write`"
    )


def test_every_phase_has_a_step_with_a_check_and_a_rollback() -> None:
    assert set(STEPS) == set(PHASES)
    for step in STEPS.values():
        assert step.check and step.watch and step.rollback


def test_the_current_step_is_marked_and_the_next_command_named() -> None:
    text = render("products", Phase.SHADOW)
    assert "`shadow` ← you are here" in text
    assert text.count("(current)") == 1
    assert next_command("products", Phase.SHADOW) == "strangler advance products --percent 10"
    assert next_command("products", Phase.DECOMMISSIONED) is None
