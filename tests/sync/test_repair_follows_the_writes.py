"""A repair re-emits rows only from the side that takes the writes, in the phase the sides were
compared in: from the other side, or after a switch, it would carry stale rows over
acknowledged newer writes, and win by version (issue 16, finding 3).

The rules are plain functions, tested first; then the CLI and the sync API are held to them
through real processes on both databases."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text

from strangler.db import create_db_engine
from strangler.phases import PHASES, Phase, Side, SyncDirection, routing_of
from strangler.supervisor import die_with_parent
from strangler.sync.api import reemit_refusal
from strangler.sync.reconcile import compared_direction, repair_refusal, source_side
from tests.support.factories import new_account, new_product
from tests.support.fault_proxy import FaultProxy, fault_proxy
from tests.support.problems import assert_problem
from tests.support.waiting import wait_until
from tests.sync.conftest import SQLITE_EVERYDAY, STRANGLER, SYNC_TOKEN, SyncSystem

# -- the rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", PHASES)
def test_only_the_side_the_phase_gives_the_writes_may_re_emit(phase: Phase) -> None:
    writer = routing_of(phase).writes
    other = Side.SERVICE if writer is Side.MONOLITH else Side.MONOLITH
    assert reemit_refusal("products", phase, writer) is None
    refusal = reemit_refusal("products", phase, other)
    assert refusal is not None
    assert phase.value in refusal and f"written by the {writer.value}" in refusal
    assert "strangler reconcile products --repair" in refusal  # what to do


@pytest.mark.parametrize("phase", PHASES)
def test_a_reconcile_compares_from_the_writer_unless_told(phase: Phase) -> None:
    assert source_side(compared_direction(phase)) is routing_of(phase).writes


def test_a_repair_is_refused_after_a_phase_change_even_from_the_writer() -> None:
    assert repair_refusal(Phase.SHADOW, Phase.SHADOW, Side.MONOLITH) is None
    changed = repair_refusal(Phase.SHADOW, Phase.CANARY, Side.MONOLITH)
    assert changed is not None and "changed from shadow to canary" in changed


def test_a_repair_from_the_side_without_the_writes_is_refused() -> None:
    refused = repair_refusal(Phase.WRITES_CUTOVER, Phase.WRITES_CUTOVER, Side.MONOLITH)
    assert refused is not None and "the service takes the writes" in refused
    assert source_side(SyncDirection.REVERSE) is Side.SERVICE


# -- through real processes ---------------------------------------------------------------------


def _versions(database_url: str) -> dict[int, int]:
    """Each product's version, a deleted one's as its tombstone's (negative)."""
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, version FROM products"))
            held: dict[int, int] = {int(key): int(version) for key, version in rows}
            for key, version in connection.execute(
                text("SELECT entity_key, version FROM products_tombstones")
            ):
                held.setdefault(int(key), -int(version))
    finally:
        engine.dispose()
    return held


def _unwrapped(output: str) -> str:
    """The CLI's words with the terminal's line wrapping undone."""
    return " ".join(output.split())


def _outbox_size(database_url: str) -> int:
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            count: int = connection.execute(
                text("SELECT count(*) FROM products_outbox")
            ).scalar_one()
            return count
    finally:
        engine.dispose()


def _stale_copy_in_reads_cutover(system: SyncSystem) -> int:
    """Products on both sides, one changed on the monolith while the phase was rolled back to
    `monolith` (no change event recorded), then the phase brought to reads_cutover: the
    service's copy of it is stale. Returns its id."""
    with system.monolith_client() as client:
        account = new_account(client)
        ids: list[int] = [new_product(client, account, stock=5)["id"] for _ in range(3)]
        system.set_phase("dual_write")
        backfill = system.cli("backfill", "products")
        assert backfill.returncode == 0, backfill.stdout + backfill.stderr
        system.set_phase("monolith")
        changed = client.patch(
            f"/products/{ids[1]}",
            json={"name": "changed while rolled back"},
            headers=account.headers,
        )
        assert changed.status_code == 200, changed.text
    for phase in ("dual_write", "backfilled", "shadow", "canary", "reads_cutover"):
        system.set_phase(phase)
    return ids[1]


def _both_sides(system: SyncSystem) -> tuple[dict[int, int], dict[int, int], int, int]:
    return (
        _versions(system.monolith_db),
        _versions(system.service_db),
        _outbox_size(system.monolith_db),
        _outbox_size(system.service_db),
    )


@SQLITE_EVERYDAY
def test_the_repair_re_emits_from_the_writer(system: SyncSystem) -> None:
    stale = _stale_copy_in_reads_cutover(system)
    before = _versions(system.monolith_db)[stale]
    fixed = system.cli("reconcile", "products", "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "repaired 1; now 0 difference(s)" in fixed.stdout
    assert _versions(system.monolith_db)[stale] == _versions(system.service_db)[stale] > before
    with system.monolith_client() as monolith, system.service_client() as service:
        assert service.get(f"/products/{stale}").json() == monolith.get(f"/products/{stale}").json()


@SQLITE_EVERYDAY
def test_re_emitting_on_the_side_without_the_writes_is_refused_and_changes_nothing(
    system: SyncSystem,
) -> None:
    stale = _stale_copy_in_reads_cutover(system)
    before = _both_sides(system)
    auth = {"Authorization": f"Bearer {SYNC_TOKEN}"}
    with system.service_client() as service:
        refused = service.post(
            "/internal/sync/products/reemit", json={"keys": [stale]}, headers=auth
        )
    body = assert_problem(refused, 409, "written by the monolith in phase reads_cutover")
    assert (body["code"], body["phase"], body["writes"]) == (
        "not_the_writer",
        "reads_cutover",
        "monolith",
    )
    assert "strangler reconcile products --repair" in body["detail"]
    system.set_phase("writes_cutover")
    with system.monolith_client() as monolith:
        refused = monolith.post(
            "/internal/sync/products/reemit", json={"keys": [stale]}, headers=auth
        )
    assert_problem(refused, 409, "written by the service in phase writes_cutover")
    assert _both_sides(system) == before


@SQLITE_EVERYDAY
def test_a_forward_repair_while_the_service_takes_the_writes_is_refused(
    system: SyncSystem,
) -> None:
    _stale_copy_in_reads_cutover(system)
    system.set_phase("writes_cutover")
    before = _both_sides(system)
    refused = system.cli("reconcile", "products", "--repair", "--direction", "forward")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = _unwrapped(refused.stderr)
    assert "repair refused" in said
    assert "in phase writes_cutover the service takes the writes" in said
    assert "leave out --direction" in said  # what to do
    assert _both_sides(system) == before


@contextmanager
def _cli_through_a_watch(
    system: SyncSystem, *args: str
) -> Iterator[tuple[subprocess.Popen[str], FaultProxy]]:
    """Run the CLI with its calls to the service through a fault proxy, passing everything:
    its connection count tells the test when the command has begun talking to the sides,
    which it does only after reading the phase it starts in."""
    service_port = int(system.service.base_url.rsplit(":", 1)[1])
    with fault_proxy(service_port) as watch:
        process = subprocess.Popen(
            [*STRANGLER, *args],
            env={**system.cli_env(), "STRANGLER_SERVICE_URL": watch.url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent,
        )
        try:
            yield process, watch
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()


@SQLITE_EVERYDAY
def test_a_switch_between_the_reconcile_and_the_repair_stops_the_repair(
    system: SyncSystem,
) -> None:
    """The reconcile looks again for 5 s (the stale row keeps differing); the writes switch to
    the service as soon as it has started. The repair, from the monolith as the reconcile
    began, must not run: the CLI reads the phase again and stops."""
    _stale_copy_in_reads_cutover(system)
    before = _both_sides(system)
    args = ("reconcile", "products", "--repair", "--confirm-seconds", "5")
    with _cli_through_a_watch(system, *args) as (cli, watch):
        wait_until(lambda: watch.connections_accepted > 0, "the reconcile to reach the service")
        system.set_phase("writes_cutover")
        out, err = cli.communicate(timeout=120)
    assert cli.returncode == 2, out + err
    said = _unwrapped(err)
    assert "the phase changed from reads_cutover to writes_cutover" in said
    assert "Nothing was repaired" in said
    assert _both_sides(system) == before
