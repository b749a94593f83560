"""The steps the CLI and the dashboard share: where a step goes, what it checks, what it asks."""

from __future__ import annotations

import pytest

from strangler.gates import GateResult, canary_healthy, gates_for
from strangler.migration_steps import (
    StepRefused,
    advance_changes,
    plan_advance,
    plan_rollback,
    rollback_changes,
)
from strangler.phases import Phase


def test_advance_goes_one_phase_forward_with_that_phases_gates() -> None:
    plan = plan_advance("products", Phase.BACKFILLED)
    assert (plan.target, plan.checks, plan.raising) == (
        Phase.SHADOW,
        gates_for(Phase.SHADOW),
        False,
    )
    assert plan.title == "products: backfilled -> shadow"


def test_a_percentage_in_canary_raises_the_rollout_gated_by_the_canary_health() -> None:
    plan = plan_advance("products", Phase.CANARY, 50)
    assert (plan.target, plan.checks, plan.raising) == (Phase.CANARY, (canary_healthy,), True)
    assert plan.title == "products: canary -> canary at 50 %"
    assert advance_changes(plan, []) == {
        "phase": "canary",
        "canary_percent": 50,
        "reason": "gates passed",
    }


def test_entering_canary_starts_at_ten_percent_unless_told() -> None:
    plan = plan_advance("products", Phase.SHADOW)
    assert advance_changes(plan, [], "dashboard: go")["canary_percent"] == 10.0


def test_a_change_past_failing_gates_says_so_in_its_reason() -> None:
    plan = plan_advance("products", Phase.SHADOW)
    results = [GateResult("shadow reads agree", False, "0 compared"), GateResult("x", True, "")]
    changes = advance_changes(plan, results, "checked by hand")
    assert changes["reason"] == "FORCED past failing gates (shadow reads agree): checked by hand"


def test_there_is_nothing_past_the_last_phase_or_before_the_first() -> None:
    with pytest.raises(StepRefused, match="already decommissioned"):
        plan_advance("products", Phase.DECOMMISSIONED)
    with pytest.raises(StepRefused, match="is in monolith") as refused:
        plan_rollback("products", Phase.MONOLITH)
    assert refused.value.hint == "there is no phase before it"


def test_rollback_goes_one_phase_back_with_no_gates() -> None:
    plan = plan_rollback("products", Phase.WRITES_CUTOVER)
    assert (plan.target, plan.checks) == (Phase.READS_CUTOVER, ())
    assert rollback_changes(plan) == {"phase": "reads_cutover", "reason": "rollback"}
