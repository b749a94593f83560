"""The steps the CLI and the dashboard share: where a step goes, what it checks, what it asks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from strangler.gates import GateResult, canary_healthy, gates_for
from strangler.migration_steps import (
    GatesUnchecked,
    StepRefused,
    advance_changes,
    check_gates,
    gate_context,
    plan_advance,
    plan_rollback,
    rollback_changes,
)
from strangler.phases import Phase
from strangler.settings import CliSettings


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
        "gates": "passed",
    }


def test_entering_canary_starts_at_ten_percent_unless_told() -> None:
    plan = plan_advance("products", Phase.SHADOW)
    assert advance_changes(plan, [], "dashboard: go")["canary_percent"] == 10.0


def test_a_change_past_failing_gates_says_so_in_its_reason() -> None:
    plan = plan_advance("products", Phase.SHADOW)
    results = [GateResult("shadow reads agree", False, "0 compared"), GateResult("x", True, "")]
    changes = advance_changes(plan, results, "checked by hand")
    assert changes["reason"] == "FORCED past failing gates (shadow reads agree): checked by hand"
    assert changes["gates"] == "forced"


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


def _settings(tmp_path: Path) -> CliSettings:
    return CliSettings(
        sync_token=SecretStr("t"),
        state_dir=tmp_path / "state",
        monolith_url="http://127.0.0.1:9",
        service_url="http://127.0.0.1:9",
    )


def test_a_gate_that_cannot_read_its_boundaries_file_says_which_and_how_to_fix_it(
    tmp_path: Path,
) -> None:
    plan = plan_advance("products", Phase.MONOLITH)  # dual_write: the coupling gate first
    ctx = gate_context(_settings(tmp_path), "products", {}, "", source_root=tmp_path)
    with pytest.raises(GatesUnchecked, match="'no coupling' could not be checked") as unchecked:
        check_gates(plan, ctx)
    assert str(tmp_path / "boundaries.toml") in str(unchecked.value)
    assert "PROXY_SOURCE_ROOT" in unchecked.value.hint
    assert isinstance(unchecked.value, StepRefused)  # callers that catch refusals catch it


def test_the_boundaries_file_may_live_apart_from_the_source_root(tmp_path: Path) -> None:
    elsewhere = tmp_path / "config" / "boundaries.toml"
    ctx = gate_context(
        _settings(tmp_path), "products", {}, "", source_root=tmp_path, boundaries_file=elsewhere
    )
    ctx.monolith.close()
    ctx.service.close()
    assert (ctx.source_root, ctx.boundaries_file) == (tmp_path, elsewhere)


def test_a_corrupt_record_is_unchecked_not_a_crash(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    settings.state_dir.mkdir()
    (settings.state_dir / "backfill-products.json").write_text('{"rows": 4')  # cut short
    plan = plan_advance("products", Phase.DUAL_WRITE)  # backfilled: backfill finished first
    with pytest.raises(GatesUnchecked, match="'backfill finished' could not be checked") as bad:
        check_gates(plan, gate_context(settings, "products", {}, ""))
    assert "backfill-products.json" in bad.value.hint
