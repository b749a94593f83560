"""A stateful property test of the whole sync against the real monolith and service.

Hypothesis interleaves, at random: product writes and deletes on the side that takes writes in
the current phase (and writes refused by the other side), relay batches, relays that crash
after the target applied a batch but before marking it delivered, redeliveries of events
already delivered, backfill chunks (each backfill run stopped after a chunk, as if killed),
and phase changes (monolith, dual_write, writes_cutover and back) made the way the runbook
makes them; the writes move between the sides as the write switch moves them (the barriers,
the drain, the gate) while up to three clients go on writing straight at the apps, around any
proxy, so the switch runs concurrently with writes, not between them. The model is simply
what clients were told: every acknowledged write, each the next version of its product. At the end
of each run, the sync is brought to rest as an operator would (drain the relay; when the
service never had a complete copy, advance to dual_write and finish the backfill), reconcile
must find nothing, and both databases must hold exactly the model. (This model found that a
backfill carried rows but not deletes: a product deleted after a rollback to `monolith`
stayed on the service. The backfill now carries the source's tombstones too.)

The relay and the backfill run in this process (the product's Relay and Backfill classes,
over the real databases and the real sync APIs); the apps are real processes. The random runs
go where their draws take them, so that writes really do move to the service and back is shown
by a directed run of the same model, not by hoping a walk went there.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, MetaData, select

from strangler.db import create_db_engine
from strangler.sync.backfill import Backfill
from strangler.sync.client import SyncClient
from strangler.sync.events import ApplyOutcome, ChangeEvent
from strangler.sync.reconcile import reconcile
from strangler.sync.relay import Relay
from strangler.sync.tables import SyncTables, sync_tables
from tests.support.factories import Account, new_account, unique
from tests.support.waiting import wait_until
from tests.sync.conftest import SYNC_TOKEN, SyncSystem

FIELDS = ("sku", "name", "price", "stock", "version")
WRITER = {"monolith": "monolith", "dual_write": "monolith", "writes_cutover": "service"}
FORWARD, REVERSE = ("monolith", "service"), ("service", "monolith")
DIRECTION = {"monolith": None, "dual_write": FORWARD, "writes_cutover": REVERSE}


class _Crash(Exception):
    """A process dying at a chosen moment."""


class _CrashAfterApply:
    """A target whose answer is lost: the batch is applied, then the relay 'dies'."""

    def __init__(self, target: SyncClient) -> None:
        self._target = target

    def apply(self, events: list[ChangeEvent]) -> list[ApplyOutcome]:
        self._target.apply(events)
        raise _Crash


class _Clients:
    """Clients writing while writes change sides, each PATCHing a product of its own in a
    loop: at the side it believes takes the writes, and after a refusal (503) at the other,
    as a client told "writes moved" tries again. Each keeps every answer it was given, so
    the model learns exactly which writes were acknowledged, in the order each client sent
    them. Once told to stop, each sends two more, which the new side takes."""

    def __init__(self, urls: dict[str, str], headers: dict[str, str], keys: list[int]) -> None:
        self.urls = urls
        self.headers = headers
        self.answers: dict[int, list[tuple[int, dict[str, Any] | None]]] = {k: [] for k in keys}
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, side: str) -> None:
        for key in self.answers:
            thread = threading.Thread(target=self._write, args=(key, side), daemon=True)
            self._threads.append(thread)
            thread.start()

    def every_client_was_answered(self) -> bool:
        return all(self.answers.values())

    def _write(self, key: int, side: str) -> None:
        try:
            with httpx.Client(timeout=30, headers=self.headers) as client:
                sent_after_stop = 0
                while sent_after_stop < 2:
                    if self._stop.is_set():
                        sent_after_stop += 1
                    r = client.patch(
                        f"{self.urls[side]}/products/{key}",
                        json={"name": f"client-{key}-{len(self.answers[key])}"},
                    )
                    if r.status_code == 200:
                        self.answers[key].append((200, r.json()))
                    else:
                        assert r.status_code == 503, f"{side} PATCH {key}: {r.text}"
                        assert r.headers["content-type"] == "application/problem+json"
                        self.answers[key].append((503, None))
                        side = "service" if side == "monolith" else "monolith"
        except BaseException as failure:  # raised again in the test's thread by stop()
            self.failures.append(failure)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), "a client is still writing a minute after the stop"
        if self.failures:
            raise self.failures[0]


class SyncModel(RuleBasedStateMachine):
    system: SyncSystem  # set by the test before the machine runs
    account: Account
    engines: dict[str, Engine]
    tables: SyncTables
    runs = 0
    phases_entered: dict[str, int] = {}

    def __init__(self) -> None:
        super().__init__()
        SyncModel.runs += 1
        system = self.system
        self.urls = {"monolith": system.monolith.base_url, "service": system.service.base_url}
        self.http = {
            side: httpx.Client(base_url=url, timeout=30) for side, url in self.urls.items()
        }
        self.sync = {
            side: SyncClient(url, SYNC_TOKEN, "products") for side, url in self.urls.items()
        }
        self.model: dict[int, dict[str, Any] | None] = {}  # acknowledged state; None: deleted
        self.checkpoint = system.workdir / "state" / f"model-backfill-{uuid.uuid4().hex}.json"
        self.backfilled = False  # the service holds a complete copy of phase-monolith writes
        self.phase = "monolith"

    # --- helpers -------------------------------------------------------------------------

    @property
    def writer(self) -> str:
        return WRITER[self.phase]

    @property
    def live(self) -> list[int]:
        return sorted(k for k, v in self.model.items() if v is not None)

    def _set_phase(self, phase: str) -> None:
        SyncModel.phases_entered[phase] = SyncModel.phases_entered.get(phase, 0) + 1
        # Both apps stat routing.toml on each write, so the next request sees the phase.
        self.system.set_phase(phase)
        self.phase = phase

    def _relay(self, source: str, target: SyncClient | _CrashAfterApply, batch: int) -> Relay:
        return Relay(
            self.engines[source],
            self.tables,
            "products",
            target,  # type: ignore[arg-type]
            batch_size=batch,
        )

    def _drain(self) -> None:
        direction = DIRECTION[self.phase]
        if direction is None:
            return
        source, target = direction
        relay = self._relay(source, self.sync[target], 500)
        while relay.deliver_once():
            pass

    def _reconcile_gate(self) -> None:
        """The runbook's gate before writes move (and an operator's last check): reconcile
        finds no difference at all. No repair: a difference here is a defect."""
        report = reconcile(self.sync["monolith"], self.sync["service"])
        assert report.agree, report.differences

    def _acknowledge(self, product: dict[str, Any]) -> None:
        self.model[product["id"]] = {f: product[f] for f in FIELDS}

    # --- rules ---------------------------------------------------------------------------

    @initialize(phase=st.sampled_from(["monolith", "dual_write"]))
    def start(self, phase: str) -> None:
        """Each run starts where the last one left both sides: at rest and equal, so in
        dual_write the service's copy counts as complete."""
        for sync in self.sync.values():  # the last run may have left them set: follow
            sync.set_writes(None)  # the phase again, as both sides do before any switch
        self._set_phase(phase)
        self.backfilled = phase == "dual_write"

    @rule(stock=st.integers(0, 1000), price=st.integers(1, 99_99))
    def create(self, stock: int, price: int) -> None:
        body = {
            "sku": unique("MODEL"),
            "name": "Model",
            "price": f"{price / 100:.2f}",
            "stock": stock,
        }
        r = self.http[self.writer].post("/products", json=body, headers=self.account.headers)
        assert r.status_code == 201, r.text
        assert r.json()["version"] == 1
        self._acknowledge(r.json())

    @precondition(lambda self: self.live)
    @rule(
        data=st.data(), stock=st.integers(0, 1000), name=st.text("abcxyz", min_size=1, max_size=12)
    )
    def update(self, data: st.DataObject, stock: int, name: str) -> None:
        key = data.draw(st.sampled_from(self.live))
        r = self.http[self.writer].patch(
            f"/products/{key}", json={"stock": stock, "name": name}, headers=self.account.headers
        )
        assert r.status_code == 200, r.text
        before = self.model[key]
        assert before is not None and r.json()["version"] == before["version"] + 1
        self._acknowledge(r.json())

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.live))
        r = self.http[self.writer].delete(f"/products/{key}", headers=self.account.headers)
        assert r.status_code == 204, r.text
        self.model[key] = None

    @precondition(lambda self: self.live and self.phase != "monolith")
    @rule(data=st.data())
    def the_follower_refuses_writes(self, data: st.DataObject) -> None:
        follower = "service" if self.writer == "monolith" else "monolith"
        key = data.draw(st.sampled_from(self.live))
        r = self.http[follower].patch(
            f"/products/{key}", json={"stock": 1}, headers=self.account.headers
        )
        assert r.status_code == 503, r.text

    @precondition(lambda self: DIRECTION[self.phase] is not None)
    @rule(batch=st.integers(1, 6))
    def relay_batch(self, batch: int) -> None:
        source, target = DIRECTION[self.phase]  # type: ignore[misc]
        self._relay(source, self.sync[target], batch).deliver_once()

    @precondition(lambda self: DIRECTION[self.phase] is not None)
    @rule(batch=st.integers(1, 6))
    def relay_crashes_after_the_target_applied(self, batch: int) -> None:
        source, target = DIRECTION[self.phase]  # type: ignore[misc]
        relay = self._relay(source, _CrashAfterApply(self.sync[target]), batch)
        try:
            relay.deliver_once()
        except _Crash:
            pass  # the events stay pending: the next relay sends them again

    @precondition(lambda self: DIRECTION[self.phase] is not None)
    @rule(count=st.integers(1, 5))
    def old_events_are_delivered_again(self, count: int) -> None:
        source, target = DIRECTION[self.phase]  # type: ignore[misc]
        outbox = self.tables.outbox
        with self.engines[source].connect() as connection:
            rows = (
                connection.execute(
                    select(outbox)
                    .where(outbox.c.delivered_at.is_not(None))
                    .order_by(outbox.c.id.desc())
                    .limit(count)
                )
                .mappings()
                .all()
            )
        events = [
            ChangeEvent(
                event_id=uuid.UUID(r["event_id"]),
                entity="products",
                key=r["entity_key"],
                version=r["version"],
                op=r["op"],
                data=json.loads(r["data"]) if r["data"] is not None else None,
            )
            for r in rows
        ]
        if events:
            outcomes = self.sync[target].apply(events)
            assert {o.outcome for o in outcomes} == {"duplicate"}, outcomes

    @precondition(lambda self: self.phase == "dual_write" and not self.backfilled)
    @rule(chunk=st.integers(1, 8), killed=st.booleans())
    def backfill_chunk(self, chunk: int, killed: bool) -> None:
        backfill = Backfill(
            self.sync["monolith"], self.sync["service"], self.checkpoint, chunk_size=chunk
        )

        def after_chunk(rows: int) -> None:
            if killed:
                raise _Crash

        try:
            backfill.run(on_chunk=after_chunk)
        except _Crash:
            return
        self.backfilled = True

    @precondition(lambda self: self.phase == "monolith")
    @rule()
    def start_dual_write(self) -> None:
        self._set_phase("dual_write")
        self.checkpoint.unlink(missing_ok=True)  # the service's copy is stale: backfill anew
        self.backfilled = False

    @precondition(lambda self: self.phase == "dual_write")
    @rule()
    def roll_back_to_the_monolith(self) -> None:
        self._drain()
        self._set_phase("monolith")
        self.backfilled = False

    @precondition(lambda self: self.phase == "dual_write" and self.backfilled)
    @rule(clients=st.integers(0, 3))
    def move_writes_to_the_service(self, clients: int) -> None:
        self._switch_writes("writes_cutover", clients)

    @precondition(lambda self: self.phase == "writes_cutover")
    @rule(clients=st.integers(0, 3))
    def move_writes_back_to_the_monolith(self, clients: int) -> None:
        self._switch_writes("dual_write", clients)

    def _switch_writes(self, phase: str, clients: int) -> None:
        """Move the writes the way strangler.write_switch does (the proxy's fence aside:
        these clients write straight at the apps, around any proxy), while `clients` of
        them write: close the old side's barrier, drain its outbox, check (moving to the
        service) the runbook's reconcile gate, open the new side's barrier, change the
        phase. Then every answer the clients got goes into the model."""
        old = self.writer
        new = WRITER[phase]
        writing = _Clients(self.urls, self.account.headers, self.live[-clients:] if clients else [])
        writing.start(old)
        try:
            wait_until(writing.every_client_was_answered, "every client's first answer")
            self.sync[old].set_writes(False)  # returns once the writes in flight finished
            self._drain()
            if phase == "writes_cutover":
                self._reconcile_gate()
            self.sync[new].set_writes(True)
            self._set_phase(phase)
        finally:
            writing.stop()
        for key, answers in writing.answers.items():
            self._acknowledge_in_order(key, [body for status, body in answers if body])

    def _acknowledge_in_order(self, key: int, acknowledged: list[dict[str, Any]]) -> None:
        """A client's acknowledged writes to one product, in the order it sent them, on
        whichever side took each: each must be the next version (a refused write bumps
        nothing; two sides each taking a write at one version is the divergence the
        barrier exists to prevent)."""
        before = self.model[key]
        assert before is not None
        versions = [body["version"] for body in acknowledged]
        expected = list(range(before["version"] + 1, before["version"] + 1 + len(versions)))
        assert versions == expected, f"product {key}: acknowledged versions {versions}"
        if acknowledged:
            self._acknowledge(acknowledged[-1])

    # --- what must hold ------------------------------------------------------------------

    @invariant()
    def the_writer_holds_every_acknowledged_write(self) -> None:
        if not self.model:
            return
        key = max(self.model)  # the newest product: cheap, and the one most often in play
        self._assert_side_holds("monolith" if self.writer == "monolith" else "service", [key])

    def _assert_side_holds(self, side: str, keys: list[int]) -> None:
        for key in keys:
            r = self.http[side].get(f"/products/{key}")
            expected = self.model[key]
            if expected is None:
                assert r.status_code == 404, f"{side} still has deleted product {key}: {r.text}"
            else:
                assert r.status_code == 200, f"{side} lacks product {key}: {r.text}"
                held = {f: r.json()[f] for f in FIELDS}
                assert held == expected, f"{side} product {key}: {held} != {expected}"

    def teardown(self) -> None:
        try:
            self._drain()
            if self.phase == "monolith":
                self._set_phase("dual_write")
                self.checkpoint.unlink(missing_ok=True)
            if self.phase == "dual_write" and not self.backfilled:
                Backfill(self.sync["monolith"], self.sync["service"], self.checkpoint).run()
            self._drain()
            if self.phase == "dual_write":
                self._reconcile_gate()
            for side in ("monolith", "service"):
                self._assert_side_holds(side, sorted(self.model))
        finally:
            for client in self.http.values():
                client.close()
            for sync in self.sync.values():
                sync.close()


@contextmanager
def _machine_over(system: SyncSystem) -> Iterator[None]:
    """Point SyncModel at this system (its class attributes) for the runs made inside."""
    engines = {
        "monolith": create_db_engine(system.monolith_db),
        "service": create_db_engine(system.service_db),
    }
    with httpx.Client(base_url=system.monolith.base_url, timeout=30) as client:
        SyncModel.account = new_account(client)
    SyncModel.system = system
    SyncModel.engines = engines
    SyncModel.tables = sync_tables(MetaData(), "products")
    SyncModel.runs = 0
    SyncModel.phases_entered = {}
    try:
        yield
    finally:
        for engine in engines.values():
            engine.dispose()


def _run_model(system: SyncSystem, examples: int, steps: int) -> None:
    """Random walks of the model. Whether an example is drawn afresh each run is the
    hypothesis profile's choice (tests/conftest.py): everyday runs walk the same walks, the
    chaos run new ones. The verdict is the model's alone, wherever the walks went; that writes
    do move to the service and back is the directed test's to show."""
    with _machine_over(system):
        run_state_machine_as_test(
            SyncModel,
            settings=settings(
                max_examples=examples,
                stateful_step_count=steps,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
        assert SyncModel.runs >= examples
        print(
            f"\n[model] {system.backend}: {SyncModel.runs} runs of up to {steps} steps, "
            f"phases entered {SyncModel.phases_entered}"
        )


class _Pick:
    """Stands in for hypothesis' `data` in a directed run: the key to write is chosen."""

    def __init__(self, key: int) -> None:
        self.key = key

    def draw(self, _strategy: object) -> int:
        return self.key


def test_writes_move_to_the_service_and_back_and_both_sides_end_equal(
    system: SyncSystem,
) -> None:
    """The walk the random runs may or may not take, taken on purpose: writes in phase
    monolith, dual_write with a killed backfill finished by the next, writes moved to the
    service (behind the reconcile gate) and written there, a relay lost after applying and its
    events redelivered, and writes moved back. The model's invariant holds after each step,
    and its teardown finds both sides equal."""
    with _machine_over(system):
        machine = SyncModel()
        steps: list[Callable[[], object]] = [
            lambda: machine.start(phase="monolith"),
            lambda: machine.create(stock=5, price=1_00),
            lambda: machine.start_dual_write(),
            lambda: machine.create(stock=7, price=2_50),
            lambda: machine.backfill_chunk(chunk=1, killed=True),
            lambda: machine.backfill_chunk(chunk=8, killed=False),
            lambda: machine.relay_batch(batch=6),
            lambda: machine.move_writes_to_the_service(clients=2),
            lambda: machine.create(stock=9, price=3_75),
            lambda: machine.update(data=_Pick(machine.live[0]), stock=1, name="moved"),
            lambda: machine.delete(data=_Pick(machine.live[-1])),
            lambda: machine.the_follower_refuses_writes(data=_Pick(machine.live[0])),
            lambda: machine.relay_crashes_after_the_target_applied(batch=2),
            lambda: machine.relay_batch(batch=6),  # sends the two again: applied once
            lambda: machine.old_events_are_delivered_again(count=2),
            lambda: machine.move_writes_back_to_the_monolith(clients=3),
            lambda: machine.update(data=_Pick(machine.live[0]), stock=2, name="back"),
        ]
        try:
            for step in steps:
                step()
                machine.the_writer_holds_every_acknowledged_write()
            assert machine.phase == "dual_write" and machine.backfilled
        finally:
            machine.teardown()
    assert SyncModel.phases_entered == {"monolith": 1, "dual_write": 2, "writes_cutover": 1}


def test_random_interleavings_of_writes_relays_backfills_crashes_and_phases_end_equal(
    system: SyncSystem,
) -> None:
    _run_model(system, examples=10, steps=25)


@pytest.mark.chaos
def test_the_sync_model_at_length(system: SyncSystem) -> None:
    _run_model(system, examples=80, steps=50)


@pytest.fixture(autouse=True)
def _state_dir(system: SyncSystem) -> Iterator[None]:
    (system.workdir / "state").mkdir(exist_ok=True)
    yield
