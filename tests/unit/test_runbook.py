"""The committed runbook is exactly what the phase definitions generate."""

from __future__ import annotations

from pathlib import Path

from strangler.gates import Thresholds
from strangler.phases import PHASES, Phase
from strangler.runbook import (
    MIN_CANARY_READS,
    MIN_SHADOW_READS,
    STEPS,
    NextStep,
    next_command,
    next_step,
    render,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_runbook_matches_the_code() -> None:
    committed = (ROOT / "runbooks" / "products.md").read_text()
    assert committed == render("products"), (
        "runbooks/products.md is stale: run `strangler runbook products --write`"
    )


def test_every_phase_has_a_step_with_a_check_and_a_rollback() -> None:
    assert set(STEPS) == set(PHASES)
    for step in STEPS.values():
        assert step.check and step.watch and step.rollback and step.after_rollback


def test_the_current_step_is_marked_and_the_next_command_named() -> None:
    text = render("products", Phase.SHADOW)
    assert "`shadow` ← you are here" in text
    assert text.count("(current)") == 1
    assert next_command("products", Phase.DECOMMISSIONED) is None


def test_the_next_step_names_what_the_gates_will_want_first() -> None:
    """Each hint is the real next action: the backfill before the backfilled gate, the reads
    the shadow and canary gates count, the next percentage, and no decommission the
    reference shop cannot pass."""
    steps = {
        phase: next_step("products", phase, 10.0, "/products")
        for phase in PHASES
        if phase is not Phase.DECOMMISSIONED
    }
    assert steps[Phase.MONOLITH] == NextStep("strangler advance products")
    dual_write = steps[Phase.DUAL_WRITE]
    assert dual_write and "strangler backfill products" in str(dual_write.first)
    shadow = steps[Phase.SHADOW]
    assert shadow and shadow.command == "strangler advance products --percent 10"
    assert f"at least {MIN_SHADOW_READS} reads to /products" in str(shadow.first)
    canary = steps[Phase.CANARY]
    assert canary and canary.command == "strangler advance products --percent 50"
    assert f"at least {MIN_CANARY_READS} reads" in str(canary.first)
    at_fifty = next_step("products", Phase.CANARY, 50.0)
    assert at_fifty and at_fifty.command == "strangler advance products --percent 100"
    at_all = next_step("products", Phase.CANARY, 100.0)
    assert at_all and at_all.command == "strangler advance products"
    writes = steps[Phase.WRITES_CUTOVER]
    assert writes and writes.command is None
    assert "drop its tables" in str(writes.first) and "strangler rollback" in str(writes.first)
    assert str(dual_write) == (
        "copy the existing rows: `strangler backfill products`; then `strangler advance products`"
    )


def test_the_gates_ask_for_the_sample_the_hints_name() -> None:
    assert Thresholds().min_shadow_sample == MIN_SHADOW_READS
    assert Thresholds().min_canary_requests == MIN_CANARY_READS


def test_each_rollback_says_how_to_check_it_in_its_own_words() -> None:
    texts = [STEPS[phase].after_rollback for phase in PHASES[1:]]
    assert len(set(texts)) == len(texts)
    assert all(text != STEPS[phase].rollback for phase, text in zip(PHASES[1:], texts, strict=True))
