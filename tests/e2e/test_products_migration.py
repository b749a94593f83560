"""End to end: products move out of the monolith under live traffic, and nothing is lost.

One real system per database backend (`strangler up`: proxy, monolith, products service and
relay on loopback). Simulated users shop through the proxy the whole time: they list and read
products, create products, edit their own, and order anyone's. Meanwhile the main thread walks
products through every phase with the `strangler` CLI, as the runbook says, rolls the writes
back twice and forward again, and decommissions the monolith's copy. Then it checks what a
migration promises: no client saw a 5xx, every acknowledged write reads back with its latest
value, every user always read its own writes, both sides reconcile to zero differences, and
every unit of stock is accounted for by acknowledged orders.

What goes wrong on the way (a 5xx, a stale read, a gate that never passes under live writes, a
step that lands in another phase than the runbook says) is collected with its evidence and
reported together at the end: one run shows everything, not only the first problem. A gate
that keeps refusing is forced (with the reason in the audit log) only so the later phases are
still exercised; the refusal itself fails the test.
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.decision import BUCKETS, bucket_of, canary_threshold, subject_of
from strangler.gates import Thresholds
from tests.support.databases import BACKENDS, database
from tests.support.factories import Account, product_body, register, unique
from tests.support.processes import monolith_env, service_env, wait_until_healthy
from tests.support.up import (
    ROOT,
    STRANGLER,
    free_up_ports,
    routing_for,
    start_up,
    stop_up,
    up_argv,
    wait_for_banner,
)

CAPABILITY = "products"
ADMIN_TOKEN = "e2e-admin-token"
SEEDED_PRODUCTS = 200

# A gate may refuse for a moment under live writes (relay lag, a write in flight during a
# reconcile); it is asked again for this long before the refusal counts as a failure. Under
# this traffic a reconcile finds a write in flight more often than not, so the budget allows
# several attempts (each takes about 2 s).
GATE_RETRY_SECONDS = 20.0
GATE_RETRY_PAUSE = 0.5
# An idempotent write (PATCH with absolute values, an order with an Idempotency-Key) answered
# 5xx is sent again until it gets a real answer, so the ledger of acknowledged writes is exact.
WRITE_SETTLE_SECONDS = 10.0

# Which canary bucket ranges the simulated users must cover: one in the first 10 %, two more in
# the first 50 %, three above, so every canary step sends real users' reads to the service and
# the canary gate has something to measure.
_TEN, _HALF = canary_threshold(10), canary_threshold(50)
BUCKET_BANDS = [
    (0, _TEN),
    (0, _HALF),
    (0, _HALF),
    (_HALF, BUCKETS),
    (_HALF, BUCKETS),
    (_HALF, BUCKETS),
]

PHASE_LINE = re.compile(r"products: (\w+) -> (\w+)")


# --------------------------------------------------------------------------------------------
# The system under test
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CliRun:
    """One `strangler ...` invocation and everything it printed."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def text(self) -> str:
        return (
            f"$ strangler {' '.join(self.args)}  (exit {self.returncode}, {self.seconds:.1f} s)\n"
            f"{self.stdout.rstrip()}\n{self.stderr.rstrip()}".rstrip()
        )

    def gates(self) -> list[str]:
        """The gate table rows, each "gate: verdict: evidence"."""
        rows = []
        for line in self.stdout.splitlines():
            cells = [c.strip() for c in line.strip().strip("│").split("│")]
            if len(cells) == 3 and cells[1] in ("pass", "FAIL"):
                rows.append(": ".join(cells))
        return rows

    def failed_gates(self) -> list[str]:
        """The gate rows that say FAIL: the evidence of a refusal."""
        return [row for row in self.gates() if ": FAIL: " in row]


@dataclass(frozen=True)
class System:
    process: subprocess.Popen[bytes]
    log: Path
    proxy: str
    monolith: str
    service: str
    env: dict[str, str]
    audit_log: Path
    sync_token_file: Path

    def cli(self, *args: str, timeout: float = 180) -> CliRun:
        """Run the CLI as an operator would: from the repository, with the system's env."""
        started = time.monotonic()
        result = subprocess.run(
            [*STRANGLER, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return CliRun(
            args, result.returncode, result.stdout, result.stderr, time.monotonic() - started
        )

    def admin(self, path: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.proxy}/_strangler{path}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )
        assert response.status_code == 200, f"GET /_strangler{path}: {response.text}"
        body: dict[str, Any] = response.json()
        return body

    def capability(self) -> dict[str, Any]:
        state: dict[str, Any] = self.admin("/status")["capabilities"][CAPABILITY]
        return state

    def pending(self) -> dict[str, int]:
        """Undelivered events in each side's outbox, read from its sync API."""
        token = self.sync_token_file.read_text().strip()
        counts = {}
        for side, url in (("monolith", self.monolith), ("service", self.service)):
            response = httpx.get(
                f"{url}/internal/sync/{CAPABILITY}/lag",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert response.status_code == 200, f"{side} lag: {response.text}"
            counts[side] = int(response.json()["pending"])
        return counts


@contextmanager
def running_system(backend: str, tmp_path: Path) -> Iterator[System]:
    """`strangler up` on free ports, two fresh databases, every file inside tmp_path."""
    with (
        database(backend, tmp_path / "monolith-db") as monolith_db,
        database(backend, tmp_path / "service-db") as service_db,
    ):
        ports = free_up_ports()
        routing = routing_for(ports, tmp_path)
        env = {
            **monolith_env(monolith_db, tmp_path),
            **{
                k: v
                for k, v in service_env(service_db, tmp_path, tmp_path / "jwt-public.pem").items()
                if k.startswith("PRODUCTS_SERVICE_")
            },
            "STRANGLER_SYNC_TOKEN_FILE": str(tmp_path / "sync-token"),
            "STRANGLER_ADMIN_TOKEN_FILE": str(tmp_path / "admin-token"),
            "STRANGLER_STATE_DIR": str(tmp_path / "state"),
            # The CLI follows the phase of *this* system's routing file (reconcile, backfill).
            "STRANGLER_ROUTING_FILE": str(routing),
            "PYTHONUNBUFFERED": "1",
            "STRANGLER_ADMIN_TOKEN": ADMIN_TOKEN,
            **ports.cli_env(),
            "PROXY_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
            "COLUMNS": "200",
        }
        log = tmp_path / "up.log"
        process = start_up(up_argv(ports, routing, SEEDED_PRODUCTS), env, log, cwd=ROOT)
        try:
            wait_for_banner(process, log, ports.proxy, timeout=120)
            wait_until_healthy(ports.proxy_url, process, log, "/_strangler/health")
            yield System(
                process,
                log,
                ports.proxy_url,
                ports.monolith_url,
                ports.service_url,
                env,
                tmp_path / "audit.jsonl",
                tmp_path / "sync-token",
            )
        finally:
            stop_up(process)


# --------------------------------------------------------------------------------------------
# The simulated users and what they saw
# --------------------------------------------------------------------------------------------


class PhaseClock:
    """What the migration is doing right now, as the users' records name it."""

    def __init__(self) -> None:
        self.label = "monolith"


@dataclass
class TrackedProduct:
    """A product a simulated user created, with the last acknowledged value of each field."""

    id: int
    owner: int
    initial_stock: int
    fields: dict[str, str]
    created_in: str


@dataclass
class Ledger:
    """Everything the users were told, shared by their threads under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter[str] = field(default_factory=Counter)
    by_phase: Counter[str] = field(default_factory=Counter)
    writes: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    ryw_violations: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    products: dict[int, TrackedProduct] = field(default_factory=dict)
    ordered: Counter[int] = field(default_factory=Counter)
    # Every acknowledged write: (phase, user, kind, product id, what it set or took).
    acked: list[tuple[str, int, str, int, dict[str, Any]]] = field(default_factory=list)
    orders: int = 0
    # Fields whose last write never got an answer: any of these values may be the latest.
    uncertain: dict[int, dict[str, set[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(set))
    )

    def product_ids(self) -> list[int]:
        with self.lock:
            return list(self.products)


def _route(path: str) -> str:
    return re.sub(r"/\d+", "/{id}", path.split("?", 1)[0])


def _price(rng: random.Random) -> str:
    cents = rng.randint(100, 99_999)
    return f"{cents // 100}.{cents % 100:02d}"


def _retry_pause(response: httpx.Response | None) -> float:
    """Honour Retry-After (capped, so a long one cannot stall the run), else a short pause."""
    if response is not None:
        try:
            return min(float(response.headers.get("retry-after", "0.2")), 1.0)
        except ValueError:
            pass
    return 0.2


class SimulatedUser:
    """One shopper with its own account, cookie jar and products, on a thread of its own."""

    def __init__(
        self,
        index: int,
        account: Account,
        proxy: str,
        ledger: Ledger,
        clock: PhaseClock,
    ) -> None:
        self.index = index
        self.account = account
        self.proxy = proxy
        self.ledger = ledger
        self.clock = clock
        self.rng = random.Random(1000 + index)
        self.own: list[int] = []
        self.completed = 0

    # -- one request, recorded --------------------------------------------------------------
    def _call(
        self,
        http: httpx.Client,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response | None:
        phase = self.clock.label
        response: httpx.Response | None = None
        status: int | None = None
        upstream = "-"
        try:
            response = http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            detail = repr(exc)
        else:
            status, detail = response.status_code, response.text[:400]
            upstream = response.headers.get("x-strangler-upstream", "-")
        key = f"{method} {_route(path)} {status}"
        with self.ledger.lock:
            self.ledger.requests[key] += 1
            self.ledger.by_phase[phase] += 1
            if status is None or status >= 500:
                self.ledger.failures.append(
                    {
                        "phase": phase
                        if phase == self.clock.label
                        else f"{phase} .. {self.clock.label}",
                        "user": self.index,
                        "request": f"{method} {path}",
                        "body": body,
                        "status": status,
                        "upstream": upstream,
                        "answer": detail,
                    }
                )
        return response

    def _settle(
        self,
        http: httpx.Client,
        method: str,
        path: str,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> httpx.Response | None:
        """Send an idempotent write until it is answered without a 5xx (each 5xx is recorded
        as a failure); None when it never was, so its effect is unknown."""
        deadline = time.monotonic() + WRITE_SETTLE_SECONDS
        while True:
            response = self._call(http, method, path, body, headers)
            if response is not None and response.status_code < 500:
                return response
            if time.monotonic() > deadline:
                return None
            time.sleep(_retry_pause(response))

    # -- what a user does ---------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        try:
            with httpx.Client(
                base_url=self.proxy, headers=self.account.headers, timeout=30
            ) as http:
                while not stop.is_set():
                    self._one(http)
                    self.completed += 1
                    stop.wait(self.rng.uniform(0.05, 0.15))  # think time, not synchronisation
        except Exception:  # recorded and failed on by the test, never lost in a thread
            with self.ledger.lock:
                self.ledger.crashes.append(f"user {self.index}:\n{traceback.format_exc()}")

    def _one(self, http: httpx.Client) -> None:
        roll = self.rng.random()
        if not self.own or roll < 0.06:
            self._create(http)
        elif roll < 0.20:
            self._list(http)
        elif roll < 0.32:
            self._read_own(http, self.rng.choice(self.own), "later read")
        elif roll < 0.48:
            self._read_any(http)
        elif roll < 0.70:
            self._edit(http)
        else:
            self._order(http)

    def _list(self, http: httpx.Client) -> None:
        response = self._call(http, "GET", f"/products?limit={self.rng.choice([20, 50, 100])}")
        if response is not None and response.status_code == 200 and self.rng.random() < 0.3:
            cursor = response.json().get("next_cursor")
            if cursor:
                self._call(http, "GET", f"/products?limit=50&cursor={cursor}")

    def _read_any(self, http: httpx.Client) -> None:
        others = self.ledger.product_ids()
        if others and self.rng.random() < 0.6:
            product_id = self.rng.choice(others)
        else:
            product_id = self.rng.randint(1, SEEDED_PRODUCTS)
        # Another user's fresh product may not have reached the side that answers yet (404):
        # that is lag, not a lost write; only the writer is promised to read it at once.
        self._call(http, "GET", f"/products/{product_id}")

    def _read_own(self, http: httpx.Client, product_id: int, when: str) -> None:
        """Read one of this user's products and compare it with what the user last wrote."""
        response = self._call(http, "GET", f"/products/{product_id}")
        if response is None or response.status_code >= 500:
            return  # already a failure; says nothing about the data
        with self.ledger.lock:
            tracked = self.ledger.products[product_id]
            expected = dict(tracked.fields)
            unsure = {f: set(v) for f, v in self.ledger.uncertain.get(product_id, {}).items()}
        upstream = response.headers.get("x-strangler-upstream", "-")
        if response.status_code != 200:
            seen: dict[str, Any] = {"status": response.status_code, "body": response.text[:200]}
        else:
            got = response.json()
            seen = {
                f: (want, got.get(f))
                for f, want in expected.items()
                if got.get(f) != want and got.get(f) not in unsure.get(f, set())
            }
        if seen:
            with self.ledger.lock:
                self.ledger.ryw_violations.append(
                    f"[{self.clock.label}] user {self.index} {when} of product {product_id} "
                    f"(answered by {upstream}): {seen}"
                )

    def _create(self, http: httpx.Client) -> None:
        body = product_body(
            name=unique("name"), price=_price(self.rng), stock=self.rng.randint(50, 150)
        )
        phase = self.clock.label
        response = self._call(http, "POST", "/products", body)
        if response is None or response.status_code >= 500:
            # Not idempotent, so not sent again: the product may or may not exist; it is
            # left out of the ledger (nothing below depends on it).
            with self.ledger.lock:
                self.ledger.writes["create unanswered"] += 1
            return
        if response.status_code != 201:
            with self.ledger.lock:
                self.ledger.anomalies.append(
                    f"[{phase}] user {self.index} POST /products -> {response.status_code}: "
                    f"{response.text[:300]}"
                )
            return
        created = response.json()
        fields = {"sku": body["sku"], "name": body["name"], "price": body["price"]}
        wrong = {f: (v, created.get(f)) for f, v in fields.items() if created.get(f) != v}
        with self.ledger.lock:
            self.ledger.writes["create"] += 1
            self.ledger.acked.append((phase, self.index, "create", created["id"], body))
            self.ledger.products[created["id"]] = TrackedProduct(
                created["id"], self.index, body["stock"], fields, phase
            )
            if wrong or created.get("stock") != body["stock"]:
                self.ledger.anomalies.append(
                    f"[{phase}] create acknowledged {created}, sent {body}"
                )
        self.own.append(created["id"])
        self._read_own(http, created["id"], "read right after create")

    def _edit(self, http: httpx.Client) -> None:
        product_id = self.rng.choice(self.own)
        patch: dict[str, Any] = {}
        if self.rng.random() < 0.7:
            patch["name"] = unique("name")
        if not patch or self.rng.random() < 0.5:
            patch["price"] = _price(self.rng)
        phase = self.clock.label
        response = self._settle(http, "PATCH", f"/products/{product_id}", patch)
        if response is None:
            with self.ledger.lock:
                self.ledger.writes["edit unanswered"] += 1
                for f, value in patch.items():
                    self.ledger.uncertain[product_id][f].add(value)
                self.ledger.unsettled.append(
                    f"[{phase}] user {self.index} PATCH /products/{product_id} {patch}: "
                    f"no answer without 5xx in {WRITE_SETTLE_SECONDS:g} s"
                )
            return
        if response.status_code != 200:
            with self.ledger.lock:
                self.ledger.anomalies.append(
                    f"[{phase} .. {self.clock.label}] user {self.index} PATCH of its own product "
                    f"{product_id} {patch} -> {response.status_code} (answered by "
                    f"{response.headers.get('x-strangler-upstream', '-')}): {response.text[:300]}"
                )
            return
        acked = response.json()
        with self.ledger.lock:
            self.ledger.writes["edit"] += 1
            self.ledger.acked.append((phase, self.index, "edit", product_id, patch))
            tracked = self.ledger.products[product_id]
            tracked.fields.update(patch)
            for f in patch:
                self.ledger.uncertain.get(product_id, {}).pop(f, None)
            wrong = {f: (v, acked.get(f)) for f, v in patch.items() if acked.get(f) != v}
            if wrong:
                self.ledger.anomalies.append(f"[{phase}] edit acknowledged with {wrong}")
        self._read_own(http, product_id, "read right after edit")

    def _order(self, http: httpx.Client) -> None:
        candidates = self.ledger.product_ids()
        if not candidates:
            return
        chosen = self.rng.sample(candidates, k=min(len(candidates), self.rng.choice([1, 1, 2])))
        items = [{"product_id": p, "quantity": self.rng.randint(1, 3)} for p in chosen]
        phase = self.clock.label
        response = self._settle(
            http, "POST", "/orders", {"items": items}, {"Idempotency-Key": uuid.uuid4().hex}
        )
        with self.ledger.lock:
            if response is None:
                self.ledger.writes["order unanswered"] += 1
                self.ledger.unsettled.append(
                    f"[{phase}] user {self.index} POST /orders {items}: no answer without 5xx "
                    f"in {WRITE_SETTLE_SECONDS:g} s; its stock effect is unknown"
                )
            elif response.status_code == 201:
                placed = response.json()
                got = sorted((i["product_id"], i["quantity"]) for i in placed["items"])
                if got != sorted((i["product_id"], i["quantity"]) for i in items):
                    self.ledger.anomalies.append(f"[{phase}] order {items} acknowledged as {got}")
                self.ledger.writes["order placed"] += 1
                self.ledger.orders += 1
                for item in items:
                    self.ledger.ordered[item["product_id"]] += item["quantity"]
                    self.ledger.acked.append(
                        (phase, self.index, "order", item["product_id"], {"took": item["quantity"]})
                    )
            elif response.status_code == 409:
                self.ledger.writes["order out of stock (409)"] += 1
            elif response.status_code == 422:
                # Unknown product: every product here was acknowledged as created, and the
                # write switch drains the relay before orders are priced on the other side,
                # so this is not lag that may be waited out.
                self.ledger.writes["order unknown product (422)"] += 1
                self.ledger.anomalies.append(
                    f"[{phase}] user {self.index} POST /orders {items} -> 422: "
                    f"{response.text[:300]}"
                )
            else:
                self.ledger.anomalies.append(
                    f"[{phase}] user {self.index} POST /orders {items} -> "
                    f"{response.status_code}: {response.text[:300]}"
                )


class Traffic:
    """The simulated users, started and stopped together."""

    def __init__(self, users: list[SimulatedUser]) -> None:
        self.users = users
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.stalls: list[str] = []

    def start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=u.run, args=(self._stop,), name=f"user-{u.index}", daemon=True)
            for u in self.users
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            # A write held by the proxy, or a write being settled, finishes first.
            thread.join(timeout=WRITE_SETTLE_SECONDS + 60)
        stuck = [t.name for t in self._threads if t.is_alive()]
        assert not stuck, f"simulated users did not stop: {stuck}"

    def dwell(self, *, operations: int = 3, seconds: float = 1.0, timeout: float = 10.0) -> None:
        """Let every user do some work in the current phase, so each phase sees real traffic
        (exposure, not synchronisation: no assertion depends on it). A user that cannot get
        its operations done in `timeout` (stuck retrying a refused write) is recorded."""
        if self._stop.is_set() or not self._threads:
            return  # no traffic running (the system is at rest on purpose)
        before = [u.completed for u in self.users]
        started = time.monotonic()
        while True:
            done = [u.completed - b for u, b in zip(self.users, before, strict=True)]
            elapsed = time.monotonic() - started
            if min(done) >= operations and elapsed >= seconds:
                return
            dead = [t.name for t in self._threads if not t.is_alive()]
            assert not dead, f"simulated users died: {dead}"
            if elapsed > timeout:
                self.stalls.append(
                    f"[{self.users[0].clock.label}] users finished only {done} operations "
                    f"in {timeout:g} s"
                )
                return
            time.sleep(0.05)


def shoppers(proxy: str) -> list[Account]:
    """Accounts whose canary buckets cover BUCKET_BANDS, so the 10 % canary already sends a
    real user to the service. The bucket is the proxy's own stable hash of the token subject
    (the user id); only the accounts kept are logged in, since each password hash costs."""
    chosen: list[tuple[int, str] | None] = [None] * len(BUCKET_BANDS)
    with httpx.Client(base_url=proxy, timeout=30) as http:
        for _ in range(400):
            email = f"{unique('shopper')}@example.com"
            created = register(http, email=email, password="s3cret-pass")
            assert created.status_code == 201, created.text
            user_id = created.json()["id"]
            bucket = bucket_of(CAPABILITY, f"sub:{user_id}")
            for slot, (low, high) in enumerate(BUCKET_BANDS):
                if chosen[slot] is None and low <= bucket < high:
                    chosen[slot] = (user_id, email)
                    break
            if all(c is not None for c in chosen):
                break
        else:
            raise AssertionError(f"could not fill the canary bands {BUCKET_BANDS}")
        accounts = []
        for user_id, email in (c for c in chosen if c is not None):
            login = http.post("/users/login", json={"email": email, "password": "s3cret-pass"})
            assert login.status_code == 200, login.text
            token = login.json()["access_token"]
            subject = subject_of(f"Bearer {token}")
            assert subject == str(user_id), f"token subject {subject!r} is not the user id"
            accounts.append(Account(user_id, email, "s3cret-pass", token))
    return accounts


# --------------------------------------------------------------------------------------------
# The migration, walked with the CLI
# --------------------------------------------------------------------------------------------


@dataclass
class Step:
    label: str
    attempts: list[CliRun]
    forced: bool = False


class Journey:
    """Walks products through the phases with the CLI, recording every attempt."""

    def __init__(self, system: System, traffic: Traffic, clock: PhaseClock) -> None:
        self.system = system
        self.traffic = traffic
        self.clock = clock
        self.steps: list[Step] = []
        self.problems: list[str] = []
        self.phase_changes = 0
        self.drains: list[float] = []

    def attempt(self, what: str, action: Callable[[Journey], None]) -> bool:
        """Run part of the journey; a failed assertion in it is recorded (the rest of the
        evidence is still gathered and reported) and the parts that depend on it are skipped."""
        try:
            action(self)
        except AssertionError as exc:
            self.problems.append(f"{what} stopped at [{self.clock.label}]:\n{exc}")
            return False
        return True

    def _landed(self, label: str, run: CliRun, phase: str, percent: float | None) -> None:
        """Check where the step landed; name the phase for the users' records; dwell."""
        before = PHASE_LINE.search(run.stdout)
        state = self.system.capability()
        if state["phase"] != phase or (percent is not None and state["canary_percent"] != percent):
            self.problems.append(
                f"{label}: expected phase {phase}"
                + (f" at {percent:g} %" if percent is not None else "")
                + f", the proxy says {state['phase']} at {state['canary_percent']:g} %\n"
                + run.text
            )
        if before is not None and before.group(1) != before.group(2):
            self.phase_changes += 1
        shown = state["phase"]
        if shown == "canary":
            shown = f"canary {state['canary_percent']:g} %"
        self.clock.label = shown
        self.traffic.dwell()

    def advance(self, *extra: str, lands_in: str, percent: float | None = None) -> None:
        """`strangler advance products [extra]`, asked again while a gate refuses (exit 1)."""
        label = f"advance {' '.join(extra)} to {lands_in}".replace("  ", " ")
        current = self.system.capability()
        if current["phase"] == lands_in and lands_in != "canary":
            self.problems.append(f"{label}: skipped, an earlier step already landed in it")
            return
        self.clock.label = f"{self.clock.label} -> {lands_in}"
        step = Step(label, [])
        self.steps.append(step)
        deadline = time.monotonic() + GATE_RETRY_SECONDS
        while True:
            run = self.system.cli("advance", CAPABILITY, *extra)
            step.attempts.append(run)
            if run.returncode != 1 or time.monotonic() > deadline:
                break
            time.sleep(GATE_RETRY_PAUSE)
        if run.returncode == 1:
            evidence = run.text
            if any("shadow reads agree" in line for line in run.failed_gates()):
                evidence += "\nmismatch samples:\n" + self._mismatch_samples()
            self.problems.append(
                f"{label}: the gates refused {len(step.attempts)} times in "
                f"{GATE_RETRY_SECONDS:g} s under live traffic; forced to go on. Last refusal:\n"
                + evidence
            )
            reason = f"e2e: gates refused {len(step.attempts)} times; forced to test what follows"
            run = self.system.cli("advance", CAPABILITY, *extra, "--force", "--reason", reason)
            step.attempts.append(run)
            step.forced = True
        assert run.returncode == 0, run.text
        self._landed(label, run, lands_in, percent)

    def rollback(self, *, lands_in: str) -> None:
        label = f"rollback to {lands_in}"
        self.clock.label = f"{self.clock.label} -> {lands_in} (rollback)"
        run = self.system.cli("rollback", CAPABILITY, "--reason", "e2e: the way back")
        self.steps.append(Step(label, [run]))
        assert run.returncode == 0, run.text
        assert "(rolled back)" in run.stdout, run.text
        self._landed(label, run, lands_in, None)

    def backfill(self) -> None:
        run = self.system.cli("backfill", CAPABILITY)
        self.steps.append(Step("backfill", [run]))
        assert run.returncode == 0, run.text
        assert "0 rejected" in run.stdout, run.text
        self.traffic.dwell()

    def wait_for_shadow_sample(self, timeout: float = 60) -> None:
        """Poll the proxy until shadow reads reach the canary gate's minimum sample."""
        minimum = Thresholds().min_shadow_sample
        deadline = time.monotonic() + timeout
        while (self.system.capability().get("shadow") or {}).get("compared", 0) < minimum:
            assert time.monotonic() < deadline, (
                f"fewer than {minimum} shadow compares after {timeout:g} s: "
                f"{self.system.capability().get('shadow')}"
            )
            time.sleep(0.2)

    def decommission(self) -> None:
        """Decommissioned's `monolith copy dropped` gate fails by design here (the demo
        monolith keeps its tables): the refusal must say so; then it is forced."""
        self.clock.label = f"{self.clock.label} -> decommissioned"
        refused = self.system.cli("advance", CAPABILITY)
        assert refused.returncode == 1, refused.text
        failing = refused.failed_gates()
        assert any("monolith copy dropped" in line for line in failing), refused.text
        assert "still holds" in refused.stdout, refused.text
        assert "refused" in refused.stderr, refused.text
        unexpected = [line for line in failing if "monolith copy dropped" not in line]
        if unexpected:
            self.problems.append(f"decommission: other gates failed too:\n{refused.text}")
        reason = "e2e: the demo monolith keeps its products tables"
        forced = self.system.cli("advance", CAPABILITY, "--force", "--reason", reason)
        self.steps.append(Step("advance to decommissioned", [refused, forced], forced=True))
        assert forced.returncode == 0, forced.text
        self._landed("advance to decommissioned", forced, "decommissioned", None)

    def wait_drained(self, timeout: float = 60) -> None:
        """Poll both outboxes until nothing is undelivered; record how long it took."""
        started = time.monotonic()
        while True:
            pending = self.system.pending()
            if not any(pending.values()):
                self.drains.append(time.monotonic() - started)
                return
            assert time.monotonic() - started < timeout, (
                f"the relay did not drain in {timeout:g} s: {pending} pending"
            )
            time.sleep(0.1)

    def _mismatch_samples(self, limit: int = 3) -> str:
        samples = self.system.admin(f"/capabilities/{CAPABILITY}/mismatches").get("samples", [])
        return "\n".join(f"{s['request']}:\n{s['diff']}" for s in samples[:limit])


# --------------------------------------------------------------------------------------------
# Checking the end state
# --------------------------------------------------------------------------------------------


def final_state_problems(proxy: str, ledger: Ledger) -> list[str]:
    """Every acknowledged write readable with its latest value, and stock accounted for."""
    problems = []
    with httpx.Client(base_url=proxy, timeout=30) as http:
        for product in sorted(ledger.products.values(), key=lambda p: p.id):
            response = http.get(f"/products/{product.id}")
            if response.status_code != 200:
                problems.append(
                    f"product {product.id} (user {product.owner}, created in "
                    f"{product.created_in}) -> {response.status_code}: {response.text[:200]}"
                )
                continue
            got = response.json()
            unsure = ledger.uncertain.get(product.id, {})
            wrong = {
                f: {"acknowledged": v, "read": got.get(f)}
                for f, v in product.fields.items()
                if got.get(f) != v and got.get(f) not in unsure.get(f, set())
            }
            expected_stock = product.initial_stock - ledger.ordered[product.id]
            if got["stock"] != expected_stock:
                wrong["stock"] = {
                    "initial": product.initial_stock,
                    "acknowledged orders took": ledger.ordered[product.id],
                    "expected": expected_stock,
                    "read": got["stock"],
                }
            if wrong:
                problems.append(
                    f"product {product.id} (user {product.owner}, created in "
                    f"{product.created_in}, version {got['version']}): {wrong}"
                )
    return problems


def _grouped_failures(failures: list[dict[str, Any]], samples: int = 2) -> str:
    groups: dict[tuple[str, str, Any], list[dict[str, Any]]] = defaultdict(list)
    for f in failures:
        groups[
            (
                f["phase"],
                f"{f['request'].split()[0]} {_route(f['request'].split()[1])}",
                f["status"],
            )
        ].append(f)
    lines = []
    for (phase, request, status), found in groups.items():
        lines.append(f"  {len(found)} x {request} -> {status} in [{phase}]")
        for f in found[:samples]:
            lines.append(
                f"      user {f['user']} {f['request']} body={f['body']} via {f['upstream']}: "
                f"{f['answer'][:300]}"
            )
    return "\n".join(lines)


def _audit_phases(audit_log: Path) -> list[str]:
    entries = [json.loads(line) for line in audit_log.read_text().splitlines() if line.strip()]
    return [e["new"]["phase"] for e in entries if e.get("new", {}).get("phase")]


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


def walk_to_writes_cutover(journey: Journey) -> None:
    """The runbook forward to writes_cutover, the writes rolled back twice, forward again."""
    journey.traffic.dwell()
    journey.advance(lands_in="dual_write")
    journey.backfill()
    journey.advance(lands_in="backfilled")
    journey.advance(lands_in="shadow")
    journey.wait_for_shadow_sample()
    journey.advance(lands_in="canary", percent=10)
    journey.advance("--percent", "50", lands_in="canary", percent=50)
    journey.advance("--percent", "100", lands_in="canary", percent=100)
    journey.advance(lands_in="reads_cutover")
    journey.advance(lands_in="writes_cutover")
    journey.rollback(lands_in="reads_cutover")
    journey.rollback(lands_in="canary")
    journey.advance(lands_in="reads_cutover")
    journey.advance(lands_in="writes_cutover")


def reconcile_at_rest(journey: Journey) -> None:
    """With writes stopped and the relay drained, both sides must agree. This is the last
    moment a reconcile means something: once decommissioned nothing syncs any more, and the
    monolith's copy is left behind on purpose."""
    journey.clock.label = "writes_cutover (traffic stopped)"
    journey.wait_drained()
    run = journey.system.cli("reconcile", CAPABILITY)
    journey.steps.append(Step("reconcile at rest", [run]))
    if run.returncode != 0 or "\n0 difference(s)" not in f"\n{run.stdout}":
        journey.problems.append(f"reconcile in writes_cutover, at rest:\n{run.text}")


EXPECTED_AUDIT = [
    "dual_write",
    "backfilled",
    "shadow",
    "canary",
    "reads_cutover",
    "writes_cutover",
    "reads_cutover",
    "canary",
    "reads_cutover",
    "writes_cutover",
    "decommissioned",
]


@pytest.mark.parametrize(
    "backend",
    # The PostgreSQL run is in `dev.py chaos` (CI runs both): the everyday suite's time budget.
    [pytest.param(b, marks=[pytest.mark.slow] if b == "postgresql" else []) for b in BACKENDS],
)
def test_products_move_out_under_live_traffic_without_losing_a_write(
    backend: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}
    with running_system(backend, tmp_path) as system:
        timings["system up"] = time.monotonic() - started
        ledger, clock = Ledger(), PhaseClock()
        users = [
            SimulatedUser(i, account, system.proxy, ledger, clock)
            for i, account in enumerate(shoppers(system.proxy))
        ]
        timings["accounts"] = time.monotonic() - started - sum(timings.values())
        traffic = Traffic(users)
        journey = Journey(system, traffic, clock)

        traffic.start()
        try:
            walked = journey.attempt("the walk to writes_cutover", walk_to_writes_cutover)
        finally:
            traffic.stop()
        if walked and journey.attempt("the reconcile at rest", reconcile_at_rest):
            if journey.attempt("decommissioning", Journey.decommission):
                traffic.start()
                try:
                    traffic.dwell(operations=10, seconds=2.0)
                finally:
                    traffic.stop()
        timings["migration under traffic"] = time.monotonic() - started - sum(timings.values())
        journey.attempt("the final drain", Journey.wait_drained)
        after_decommission = system.cli("reconcile", CAPABILITY)
        status = system.cli("status")
        end_state = final_state_problems(system.proxy, ledger)
        audited = _audit_phases(system.audit_log)
        log_tail = system.log.read_text(errors="replace").splitlines()[-40:]
        timings["final checks"] = time.monotonic() - started - sum(timings.values())

    elapsed = time.monotonic() - started
    timings["system stop"] = elapsed - sum(timings.values())
    print(
        f"\n=== e2e products migration on {backend}: {elapsed:.1f} s ===\n"
        f"time: {', '.join(f'{k} {v:.1f} s' for k, v in timings.items())}\n"
        f"requests: {sum(ledger.requests.values())}\n  "
        + "\n  ".join(f"{v:6d}  {k}" for k, v in sorted(ledger.requests.items()))
        + f"\nrequests by phase: {dict(ledger.by_phase)}\n"
        f"writes: {dict(ledger.writes)}\n"
        f"acknowledged writes by phase: "
        f"{dict(Counter(f'{phase}: {kind}' for phase, _, kind, _, _ in ledger.acked))}\n"
        f"orders acknowledged: {ledger.orders}; products created: {len(ledger.products)}\n"
        f"phase changes: {journey.phase_changes}; relay drains after the traffic stopped: "
        f"{', '.join(f'{d:.2f} s' for d in journey.drains)}\n"
        "steps:\n  "
        + "\n  ".join(
            f"{s.label}: {len(s.attempts)} attempt(s){', FORCED' if s.forced else ''}, "
            f"{sum(a.seconds for a in s.attempts):.1f} s"
            for s in journey.steps
        )
    )
    print("gates, attempt by attempt:")
    for step in journey.steps:
        for number, attempt in enumerate(step.attempts, 1):
            if attempt.gates():
                print(f"  {step.label} #{number}: " + " | ".join(attempt.gates()))
    pauses = [
        f"{step.label}: {line.strip()}"
        for step in journey.steps
        for attempt in step.attempts
        for line in attempt.stdout.splitlines()
        if "writes paused" in line
    ]
    print("write fence, per flip of the writes:\n  " + "\n  ".join(pauses))
    print(f"--- reconcile after everything (informational):\n{after_decommission.text}")
    print(f"--- {status.text}")

    sections = []
    if journey.phase_changes == len(EXPECTED_AUDIT) and len(pauses) != 3:
        sections.append(f"expected 3 fenced flips of the writes, saw: {pauses}")
    if ledger.crashes:
        sections.append("simulated users crashed:\n" + "\n".join(ledger.crashes))
    if ledger.failures:
        sections.append(
            f"{len(ledger.failures)} client-visible 5xx / transport failures:\n"
            + _grouped_failures(ledger.failures)
        )
    if ledger.ryw_violations:
        sections.append(
            f"{len(ledger.ryw_violations)} read-your-writes violations:\n  "
            + "\n  ".join(ledger.ryw_violations[:25])
        )
    if ledger.unsettled:
        sections.append(
            f"{len(ledger.unsettled)} idempotent writes never answered without a 5xx:\n  "
            + "\n  ".join(ledger.unsettled[:25])
        )
    if ledger.anomalies:
        sections.append(
            f"{len(ledger.anomalies)} unexpected answers:\n  " + "\n  ".join(ledger.anomalies[:25])
        )
    if end_state:
        sections.append(
            f"{len(end_state)} products not read back as acknowledged:\n  "
            + "\n  ".join(end_state[:25])
        )
    if traffic.stalls:
        sections.append("traffic stalled:\n  " + "\n  ".join(traffic.stalls))
    if audited != EXPECTED_AUDIT:
        sections.append(f"audit log phases {audited},\n  expected {EXPECTED_AUDIT}")
    if status.returncode != 0:
        sections.append(f"strangler status failed:\n{status.text}")
    if journey.problems:
        sections.append("migration steps:\n" + "\n\n".join(journey.problems))
    if sections:
        sections.append("last lines of strangler up:\n" + "\n".join(log_tail))
    assert not sections, "\n\n".join(sections)
