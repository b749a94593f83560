"""The proxy half of the fault suite (step 6): each fault planted for real, against real
processes on loopback, with the outcome asserted and the counts printed (`pytest -s`).

1. The real products service SIGKILLed during canary under steady reads, then restarted on
   its port: no read sees a 5xx, the breaker opens, reads return to the service.
2. The service made slow through a TCP fault proxy (stall, trickle, reset): reads fall back
   promptly or get a prompt 504 where nothing can stand in, the overall deadline holds even
   when only the body trickles, the pool returns to baseline, other routes stay fast.
3. Clients that go away mid-request and mid-response, 200 times each: the upstream sees the
   abandonment, nothing leaks (upstream slots and connections, tasks, file descriptors).
4. 100 routing.toml rewrites, a third of them invalid, under steady traffic: no failed
   request, each invalid one refused naming its problem, the last valid one in force.
"""

from __future__ import annotations

import copy
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import tomlkit

from proxy.decision import bucket_of, canary_threshold
from strangler.phases import PHASES
from tests.proxy.conftest import Proxy, routing_document, run_proxy
from tests.support.factories import Account, new_account
from tests.support.fault_proxy import FaultProxy, fault_proxy
from tests.support.metrics import metric_value
from tests.support.processes import (
    RunningApp,
    monolith_env,
    run_monolith_command,
    run_service_command,
    serve_echo,
    serve_monolith,
    serve_products_service,
    service_env,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.chaos

SYNC_TOKEN = "chaos-sync-token"
STRANGLER = [sys.executable, "-c", "from strangler.cli import main; main()"]
PRODUCTS = 200


# -- helpers ---------------------------------------------------------------------------------


def _token(subject: str) -> str:
    """A bearer token whose subject the proxy reads for stickiness (reads need no login)."""
    return jwt.encode({"sub": subject}, "the proxy never checks this signature", algorithm="HS256")


def _users(on_service: bool, percent: float, count: int, prefix: str) -> list[str]:
    """`count` subjects the canary at `percent` puts on the service (or on the monolith)."""
    threshold = canary_threshold(percent)
    chosen: list[str] = []
    n = 0
    while len(chosen) < count:
        subject = f"{prefix}-{n}"
        if (bucket_of("products", f"sub:{subject}") < threshold) is on_service:
            chosen.append(subject)
        n += 1
    return chosen


def _metrics(proxy: Proxy) -> str:
    response = proxy.client.get("/_strangler/metrics")
    assert response.status_code == 200
    return response.text


def _metric(proxy: Proxy, sample: str, **labels: str) -> float:
    return metric_value(_metrics(proxy), sample, **labels) or 0.0


def _pool(proxy: Proxy, upstream: str) -> tuple[float, float]:
    """(slots in use, connections open) of the upstream's primary pool."""
    text = _metrics(proxy)
    labels = {"upstream": upstream, "pool": "primary"}
    in_use = metric_value(text, "strangler_proxy_upstream_connections_in_use", **labels)
    opened = metric_value(text, "strangler_proxy_upstream_connections_open", **labels)
    assert in_use is not None and opened is not None, "the pool gauges are missing"
    return in_use, opened


def _fds(process: subprocess.Popen[bytes]) -> int:
    return len(os.listdir(f"/proc/{process.pid}/fd"))


def _wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    """`wait_until`, returning how long it took (for the printed summary, never asserted)."""
    started = time.monotonic()
    wait_until(check, what, timeout=timeout)
    return time.monotonic() - started


def _summary(name: str, **counts: object) -> None:
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in counts.items()))


@dataclass(frozen=True)
class Read:
    started: float
    seconds: float
    user: str
    status: int
    upstream: str | None
    fallback: str | None
    correct: bool


@dataclass
class Tally:
    """What the client threads saw, shared between them."""

    reads: list[Read] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, read: Read) -> None:
        with self.lock:
            self.reads.append(read)

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    def snapshot(self) -> list[Read]:
        with self.lock:
            return list(self.reads)

    def server_errors(self) -> list[Read]:
        return [r for r in self.snapshot() if r.status >= 500]

    def fallbacks(self) -> Counter[str]:
        return Counter(r.fallback for r in self.snapshot() if r.fallback)


def _read_products(
    base_url: str,
    users: list[str],
    ids: list[int],
    tally: Tally,
    stop: threading.Event,
    seed: int,
) -> None:
    """GET /products/{id} and the first page, as `users`, until `stop`."""
    rng = random.Random(seed)
    tokens = {user: {"Authorization": f"Bearer {_token(user)}"} for user in users}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while not stop.is_set():
            user = rng.choice(users)
            product = rng.choice(ids) if rng.random() < 0.75 else None
            path = f"/products/{product}" if product is not None else "/products?limit=20"
            started = time.monotonic()
            try:
                response = client.get(path, headers=tokens[user])
                body = response.json() if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError) as exc:
                tally.error(f"{path} as {user}: {exc!r}")
                continue
            if body is None:
                correct = False
            elif product is None:
                correct = len(body["items"]) == 20
            else:
                correct = body["id"] == product
            tally.add(
                Read(
                    started,
                    time.monotonic() - started,
                    user,
                    response.status_code,
                    response.headers.get("x-strangler-upstream"),
                    response.headers.get("x-strangler-fallback"),
                    correct,
                )
            )


def _run_threads(targets: list[Callable[[], None]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    return threads


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a client thread hung"


# -- the real system: monolith + products service, products backfilled, phase canary --------


@dataclass
class Shop:
    workdir: Path
    monolith: RunningApp
    service_port: int  # 0 until the first start, where the service binds a port of its own
    service_environment: dict[str, str]
    product_ids: list[int]
    service: RunningApp | None = None
    _service_stack: ExitStack = field(default_factory=ExitStack)

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.service_port}"

    def start_service(self) -> RunningApp:
        """Start the service; a restart takes the port the proxy already points at, and fails
        loudly (the child cannot bind it) should another program have taken it meanwhile."""
        self._service_stack.close()
        self._service_stack = ExitStack()
        self.service = self._service_stack.enter_context(
            serve_products_service(
                self.service_environment, self.workdir / "s", port=self.service_port or None
            )
        )
        self.service_port = self.service.port
        return self.service

    def kill_service(self) -> None:
        assert self.service is not None
        self.service.process.send_signal(signal.SIGKILL)
        self.service.process.wait(10)

    def close(self) -> None:
        self._service_stack.close()


def _write_phase(path: Path, phase: str) -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(tomlkit.dumps({"capabilities": {"products": {"phase": phase}}}))
    os.replace(scratch, path)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The real monolith and products service on SQLite, products on both sides, in canary."""
    workdir = tmp_path_factory.mktemp("shop")
    (workdir / "m").mkdir()
    (workdir / "s").mkdir()
    phase_file = workdir / "phase.toml"
    _write_phase(phase_file, "monolith")
    monolith_db = f"sqlite:///{workdir / 'm' / 'monolith.db'}"
    service_db = f"sqlite:///{workdir / 's' / 'service.db'}"
    menv = {
        **monolith_env(monolith_db, workdir / "m"),
        "MONOLITH_ROUTING_FILE": str(phase_file),
        "MONOLITH_SYNC_TOKEN": SYNC_TOKEN,
    }
    run_monolith_command(menv, "migrate")
    run_monolith_command(menv, "seed", "--products", str(PRODUCTS))
    senv = {
        **service_env(service_db, workdir / "s", workdir / "m" / "jwt-public.pem"),
        "PRODUCTS_SERVICE_ROUTING_FILE": str(phase_file),
        "PRODUCTS_SERVICE_SYNC_TOKEN": SYNC_TOKEN,
    }
    run_service_command(senv, "migrate")
    with serve_monolith(menv, workdir / "m") as monolith:
        shop = Shop(workdir, monolith, 0, senv, [])
        try:
            service = shop.start_service()
            _write_phase(phase_file, "dual_write")
            backfill = subprocess.run(
                [*STRANGLER, "backfill", "products"],
                env={
                    **os.environ,
                    "STRANGLER_MONOLITH_URL": monolith.base_url,
                    "STRANGLER_SERVICE_URL": service.base_url,
                    "STRANGLER_MONOLITH_DATABASE_URL": monolith_db,
                    "STRANGLER_SERVICE_DATABASE_URL": service_db,
                    "STRANGLER_SYNC_TOKEN": SYNC_TOKEN,
                    "STRANGLER_ROUTING_FILE": str(phase_file),
                    "STRANGLER_STATE_DIR": str(workdir / "state"),
                    "COLUMNS": "200",
                },
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert backfill.returncode == 0, backfill.stdout + backfill.stderr
            for phase in ("backfilled", "shadow", "canary"):
                _write_phase(phase_file, phase)
            page = httpx.get(f"{service.base_url}/products", params={"limit": PRODUCTS}).json()
            shop.product_ids = [item["id"] for item in page["items"]]
            assert len(shop.product_ids) == PRODUCTS
            yield shop
        finally:
            shop.close()


ProxyMaker = Callable[..., Proxy]


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[ProxyMaker]:
    with ExitStack() as stack:
        counter = iter(range(100))

        def make(document: dict[str, Any]) -> Proxy:
            workdir = tmp_path / f"proxy-{next(counter)}"
            workdir.mkdir()
            return stack.enter_context(run_proxy(workdir, document))

        yield make


@pytest.fixture(scope="module")
def echo_monolith(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    with serve_echo(tmp_path_factory.mktemp("chaos-echo-m"), "monolith") as app:
        yield app


@pytest.fixture(scope="module")
def echo_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    with serve_echo(tmp_path_factory.mktemp("chaos-echo-s"), "service") as app:
        yield app


def _stats(app: RunningApp) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(f"{app.base_url}/_echo/stats").json()
    return stats


# -- 1. the service killed during canary -----------------------------------------------------


def test_the_service_killed_during_canary_costs_no_read_and_reads_return_after_restart(
    shop: Shop, proxies: ProxyMaker
) -> None:
    proxy = proxies(
        routing_document(
            shop.monolith.base_url,
            shop.service_url,
            capability={"phase": "canary", "canary_percent": 50},
            breaker={"failure_threshold": 3, "cooldown_seconds": 1.0},
        )
    )
    on_service = _users(True, 50, 8, "kill")
    on_monolith = _users(False, 50, 4, "kill")
    groups = [on_service[0:3] + on_monolith[0:1], on_service[3:6] + on_monolith[1:2]]
    groups += [on_service[6:8] + on_monolith[2:4]]
    tally, stop = Tally(), threading.Event()
    started = time.monotonic()
    threads = _run_threads(
        [
            lambda g=group, n=n: _read_products(proxy.base_url, g, shop.product_ids, tally, stop, n)
            for n, group in enumerate(groups)
        ]
    )
    try:
        _wait(
            lambda: sum(r.upstream == "service" for r in tally.snapshot()) >= 30,
            20,
            "service-side users read from the service before the kill",
        )
        killed_at = time.monotonic()
        shop.kill_service()
        dead_at = time.monotonic()  # the process is gone (waited for)
        breaker_states: set[str] = set()
        gauge_values: set[float] = set()

        def breaker_opened() -> bool:
            breaker_states.add(proxy.status()["upstreams"]["service"]["breaker"]["state"])
            gauge_values.add(_metric(proxy, "strangler_proxy_breaker_state", upstream="service"))
            return "open" in breaker_states and 2.0 in gauge_values

        opened_after = _wait(breaker_opened, 10, "the service's breaker opened")
        # The outage goes on until a probe after the cool-down has failed and opened it again.
        _wait(
            lambda: proxy.status()["upstreams"]["service"]["breaker"]["times_opened"] >= 2,
            15,
            "a failed probe reopened the breaker",
        )
        restarting_at = time.monotonic()
        down_for = restarting_at - killed_at
        shop.start_service()  # the same port
        restarted_at = time.monotonic()

        def served_again() -> bool:
            return any(
                r.started > restarted_at and r.upstream == "service" and r.fallback is None
                for r in tally.snapshot()
            )

        back_after = _wait(served_again, 15, "reads returned to the restarted service")
        _wait(
            lambda: proxy.status()["upstreams"]["service"]["breaker"]["state"] == "closed",
            15,
            "the breaker closed again",
        )
        settled_from = time.monotonic()
        _wait(
            lambda: (
                sum(r.started >= settled_from and r.user in on_service for r in tally.snapshot())
                >= 20
            ),
            15,
            "20 reads by service-side users after the breaker closed",
        )
    finally:
        stop.set()
        _join(threads)
    elapsed = time.monotonic() - started

    reads = tally.snapshot()
    fallbacks = tally.fallbacks()
    outage = [r for r in reads if dead_at <= r.started <= restarting_at]
    outage_on_service_users = [r for r in outage if r.user in on_service]
    late = [r for r in reads if r.started >= settled_from and r.user in on_service]
    status = proxy.status()["upstreams"]["service"]["breaker"]
    metric_fallbacks = sum(
        _metric(proxy, "strangler_proxy_fallbacks_total", capability="products", reason=reason)
        for reason in ("connect_error", "breaker_open", "timeout", "status_502")
    )
    _summary(
        "service killed during canary",
        requests=len(reads) + len(tally.errors),
        faults="1 SIGKILL + restart",
        service_down_s=round(down_for, 1),
        server_errors=len(tally.server_errors()),
        lost=len(tally.errors) + sum(not r.correct for r in reads),
        fallbacks=dict(fallbacks),
        breaker_open_after_s=round(opened_after, 2),
        back_on_service_after_restart_s=round(back_after, 2),
        seconds=round(elapsed, 1),
    )
    assert tally.errors == [], tally.errors[:5]
    assert tally.server_errors() == [], tally.server_errors()[:5]
    assert all(r.correct for r in reads), [r for r in reads if not r.correct][:5]
    assert len(outage_on_service_users) >= 20
    assert all(r.upstream == "monolith" for r in outage_on_service_users), [
        r for r in outage_on_service_users if r.upstream != "monolith"
    ][:5]
    assert fallbacks["connect_error"] >= 3 and fallbacks["breaker_open"] >= 1, fallbacks
    assert metric_fallbacks == sum(fallbacks.values())
    assert status["times_opened"] >= 1 and status["state"] == "closed", status
    assert 2.0 in gauge_values
    assert late and all(r.upstream == "service" and r.fallback is None for r in late), late[:5]
    assert all(r.upstream == "monolith" for r in reads if r.user in on_monolith)


# -- 2. the service made slow ----------------------------------------------------------------


def _slow_phase(
    proxy: Proxy,
    fault: FaultProxy,
    mode: str,
    users: list[str],
    ids: list[int],
    account: Account,
    seconds: float,
) -> tuple[Tally, list[OtherRoute]]:
    """Service-side users read while the fault is on; a monolith user uses /users and
    /orders meanwhile. Returns the reads and the monolith routes' answers."""
    fault.set_mode(mode)
    tally, stop = Tally(), threading.Event()
    other: list[OtherRoute] = []

    def monolith_routes() -> None:
        with httpx.Client(base_url=proxy.base_url, timeout=30) as client:
            while not stop.is_set():
                for path in ("/users/me", "/orders"):
                    started = time.monotonic()
                    response = client.get(path, headers=account.headers)
                    other.append(
                        OtherRoute(path, started, time.monotonic() - started, response.status_code)
                    )
                time.sleep(0.02)  # paces this load generator

    readers = [
        lambda n=n: _read_products(proxy.base_url, users[n::4], ids, tally, stop, 100 + n)
        for n in range(4)
    ]
    threads = _run_threads([*readers, monolith_routes])
    time.sleep(seconds)  # how long the fault lasts under load: pacing, not synchronisation
    stop.set()
    _join(threads)
    fault.set_mode("pass")
    return tally, other


@dataclass(frozen=True)
class OtherRoute:
    """An answer on a monolith route, read while the service was faulty."""

    path: str
    started: float
    seconds: float
    status: int


def _answered_during(others: list[OtherRoute], reads: list[Read]) -> list[OtherRoute]:
    """The answers that began and ended while one of `reads` was still waiting on the service:
    proof by ordering that those routes did not queue behind it."""
    return [
        o
        for o in others
        if any(
            r.started < o.started and o.started + o.seconds < r.started + r.seconds for r in reads
        )
    ]


def _timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response | str, float]:
    started = time.monotonic()
    try:
        outcome: httpx.Response | str = call()
    except httpx.HTTPError as exc:
        outcome = repr(exc)
    return outcome, time.monotonic() - started


def test_a_slow_service_gets_prompt_fallbacks_or_504s_and_leaks_nothing(
    shop: Shop, proxies: ProxyMaker
) -> None:
    if shop.service is None or shop.service.process.poll() is not None:
        shop.start_service()
    started = time.monotonic()
    total = 2.0
    with fault_proxy(shop.service_port) as fault:
        # Canary at 50 %, a breaker that never opens, so that every service-side read meets
        # the fault and the pool has to survive each one.
        canary = proxies(
            routing_document(
                shop.monolith.base_url,
                fault.url,
                capability={"phase": "canary", "canary_percent": 50},
                breaker={"failure_threshold": 1000, "cooldown_seconds": 1.0},
                service={
                    "connect_timeout": 0.5,
                    "read_timeout": 1.0,
                    "total_timeout": total,
                    "max_connections": 8,
                },
            )
        )
        # After decommissioning nothing stands in for the service: 504s, promptly.
        alone = proxies(
            routing_document(
                shop.monolith.base_url,
                fault.url,
                capability={"phase": "decommissioned"},
                breaker={"failure_threshold": 1000, "cooldown_seconds": 1.0},
                service={"connect_timeout": 0.5, "read_timeout": 5.0, "total_timeout": 3.0},
            )
        )
        users = _users(True, 50, 12, "slow")
        with httpx.Client(base_url=shop.monolith.base_url, timeout=30) as client:
            account = new_account(client)
        for user in users:  # warm the pool; every one of them reads from the service
            headers = {"Authorization": f"Bearer {_token(user)}"}
            response = canary.client.get(f"/products/{shop.product_ids[0]}", headers=headers)
            assert response.headers["x-strangler-upstream"] == "service", response.headers
            assert "x-strangler-fallback" not in response.headers
        baseline_fds = _fds(canary.app.process)
        baseline_tasks = _metric(canary, "strangler_proxy_tasks")

        stalled, stall_other = _slow_phase(
            canary, fault, "stall", users, shop.product_ids, account, 5.0
        )
        trickled, trickle_other = _slow_phase(
            canary, fault, "trickle", users, shop.product_ids, account, 6.0
        )
        reset, _ = _slow_phase(canary, fault, "reset", users, shop.product_ids, account, 1.0)
        resets = fault.resets

        # No fallback after decommissioning: a prompt 504, for reads and writes alike.
        no_fallback: list[tuple[str, httpx.Response | str, float]] = []
        product = shop.product_ids[1]
        for mode in ("stall", "trickle"):
            fault.set_mode(mode)
            read, took = _timed(lambda: alone.client.get(f"/products/{product}"))
            no_fallback.append((f"{mode} GET", read, took))
            write, took = _timed(
                lambda: alone.client.patch(
                    f"/products/{product}", json={"stock": 1}, headers=account.headers
                )
            )
            no_fallback.append((f"{mode} PATCH", write, took))
        # The head arrives late (2.5 s of the 3 s), then the body trickles: the deadline is
        # the request's, not the body's own.
        fault.set_mode("trickle")
        fault.trickle_skip_head = True
        fault.delay_seconds = 2.5
        body_trickle, body_took = _timed(lambda: alone.client.get(f"/products/{product}"))
        fault.set_mode("pass")
        fault.trickle_skip_head = False
        fault.delay_seconds = 0.0

        # Healthy again: the service answers, and what the stalls held is all given back.
        for user in users:
            headers = {"Authorization": f"Bearer {_token(user)}"}
            response = canary.client.get(f"/products/{shop.product_ids[2]}", headers=headers)
            assert response.status_code == 200
            assert response.headers["x-strangler-upstream"] == "service", response.headers
            assert "x-strangler-fallback" not in response.headers
        _wait(lambda: _pool(canary, "service")[0] == 0, 5, "no slot stays held")
        _wait(lambda: _pool(alone, "service")[0] == 0, 5, "no slot stays held (alone)")
        _wait(
            lambda: (
                _pool(canary, "service")[1] + _pool(alone, "service")[1] == fault.connections_open
            ),
            5,
            "the fault proxy sees exactly the connections the proxies count as open",
        )
        in_use, still_open = _pool(canary, "service")
        _wait(lambda: _fds(canary.app.process) <= baseline_fds + 4, 10, "fds back")
        _wait(
            lambda: _metric(canary, "strangler_proxy_tasks") <= baseline_tasks + 2,
            10,
            "tasks back to baseline",
        )
        fds_after, tasks_after = _fds(canary.app.process), _metric(canary, "strangler_proxy_tasks")
        open_at_fault = fault.connections_open
    elapsed = time.monotonic() - started

    all_reads = stalled.snapshot() + trickled.snapshot() + reset.snapshot()
    errors = stalled.errors + trickled.errors + reset.errors
    _summary(
        "slow service",
        requests=len(all_reads) + len(stall_other) + len(trickle_other) + 5,
        faults=f"stall {len(stalled.reads)}, trickle {len(trickled.reads)}, "
        f"reset {len(reset.reads)} reads ({resets} resets)",
        server_errors=sum(r.status >= 500 for r in all_reads),
        lost=len(errors) + sum(not r.correct for r in all_reads),
        fallbacks=dict(stalled.fallbacks() + trickled.fallbacks() + reset.fallbacks()),
        slowest_stalled_s=round(max(r.seconds for r in stalled.reads), 2),
        slowest_trickled_s=round(max(r.seconds for r in trickled.reads), 2),
        slowest_other_route_s=round(max(o.seconds for o in stall_other + trickle_other), 3),
        no_fallback=[
            (what, getattr(r, "status_code", r), round(t, 2)) for what, r, t in no_fallback
        ],
        body_trickle_cut_after_s=round(body_took, 2),
        pool_after=(in_use, still_open, open_at_fault),
        fds=(baseline_fds, fds_after),
        tasks=(baseline_tasks, tasks_after),
        seconds=round(elapsed, 1),
    )
    assert errors == [], errors[:5]
    # "Promptly" is what the reasons say: each read was given up on by a timeout of the
    # proxy's (the stalled service would never answer) or a refused connection, and answered
    # by the monolith. How long that takes is bench/'s to measure, not this suite's.
    for name, tally, reason in (
        ("stall", stalled, "timeout"),  # the read timeout trips
        ("trickle", trickled, "timeout"),  # only the overall deadline can
        ("reset", reset, "connect_error"),
    ):
        reads = tally.snapshot()
        assert len(reads) >= 4, (name, len(reads))
        assert all(r.status == 200 and r.correct for r in reads), (name, reads[:5])
        assert all(r.upstream == "monolith" and r.fallback == reason for r in reads), (
            name,
            Counter((r.upstream, r.fallback) for r in reads),
        )
    assert len(stalled.reads) > 8  # more stalls than the pool has connections
    assert fault.bytes_swallowed > 0
    assert resets > 0
    for other in stall_other + trickle_other:
        assert other.status == 200, other
    # The monolith's routes never wait on the stalled service: they were answered, again and
    # again, while service reads were still held by the fault.
    assert len(stall_other) + len(trickle_other) >= 20
    meanwhile = _answered_during(stall_other, stalled.reads)
    meanwhile += _answered_during(trickle_other, trickled.reads)
    assert len(meanwhile) >= 10, (len(meanwhile), len(stall_other) + len(trickle_other))
    for what, outcome, _took in no_fallback:
        assert isinstance(outcome, httpx.Response), (what, outcome)
        assert outcome.status_code == 504, (what, outcome.status_code, outcome.text)
        assert outcome.headers["x-strangler-upstream"] == "service"
        assert "did not answer in time" in outcome.text, (what, outcome.text)  # the deadline
    # The status was sent, so only a cut is left; the body's chunks come every 50 ms, far
    # inside the 5 s read timeout, so only the request's overall deadline can have cut it.
    assert isinstance(body_trickle, str), body_trickle
    assert in_use == 0


# -- 3. clients that go away -----------------------------------------------------------------


def _reset_close(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_clients_that_go_away_mid_request_or_mid_response_leak_nothing(
    echo_monolith: RunningApp, echo_service: RunningApp, proxies: ProxyMaker
) -> None:
    proxy = proxies(routing_document(echo_monolith.base_url, echo_service.base_url))
    port = int(proxy.base_url.rsplit(":", 1)[1])
    started = time.monotonic()
    for _ in range(3):  # warm: the pool and the test's own client connection exist
        assert proxy.client.get("/things").status_code == 200
    baseline_fds = _fds(proxy.app.process)
    baseline_tasks = _metric(proxy, "strangler_proxy_tasks")
    _, baseline_open = _pool(proxy, "monolith")
    before = _stats(echo_monolith)
    rounds, batch = 10, 20

    half_sent = 0
    for n in range(rounds):  # headers, half the declared body, then gone
        socks = []
        for k in range(batch):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            path = b"/products/1" if k % 2 else b"/things"
            sock.sendall(
                b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n"
                % path
                + b"x" * 500
            )
            socks.append(sock)
        # the proxy has started forwarding every one of them (each holds an upstream slot)
        _wait(lambda: _pool(proxy, "monolith")[0] >= batch, 10, "the half-sent bodies forwarded")
        for k, sock in enumerate(socks):
            _reset_close(sock) if (n + k) % 2 else sock.close()
            half_sent += 1

    dripping = 0
    for n in range(rounds):  # a slow streamed answer, left after its first bytes
        socks = []
        for _ in range(batch):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(
                b"GET /_echo/drip?chunks=100&interval=0.05 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            socks.append(sock)
        for k, sock in enumerate(socks):
            received = b""
            while b"chunk 0" not in received:
                data = sock.recv(4096)
                assert data, received
                received += data
            assert received.startswith(b"HTTP/1.1 200"), received[:100]
            _reset_close(sock) if (n + k) % 2 else sock.close()
            dripping += 1

    _wait(
        lambda: _stats(echo_monolith)["drips_abandoned"] - before["drips_abandoned"] >= dripping,
        15,
        "the upstream saw every abandoned drip",
    )
    _wait(lambda: _pool(proxy, "monolith")[0] == 0, 10, "no upstream slot stays held")
    _wait(lambda: _pool(proxy, "monolith")[1] <= baseline_open, 10, "upstream connections back")
    _wait(lambda: _fds(proxy.app.process) <= baseline_fds + 2, 10, "fds back to baseline")
    _wait(
        lambda: _metric(proxy, "strangler_proxy_tasks") <= baseline_tasks,
        10,
        "tasks back to baseline",
    )
    after = _stats(echo_monolith)
    fds_after = _fds(proxy.app.process)
    tasks_after = _metric(proxy, "strangler_proxy_tasks")
    in_use, open_after = _pool(proxy, "monolith")
    normal = proxy.client.post("/things", content=b"y" * 1000)
    elapsed = time.monotonic() - started
    _summary(
        "clients going away",
        requests=half_sent + dripping + 1,
        faults=f"{half_sent} half-sent bodies, {dripping} abandoned drips",
        server_errors=0,
        lost=0,
        abandoned_seen_upstream=after["drips_abandoned"] - before["drips_abandoned"],
        complete_requests_upstream=after["requests"] - before["requests"],
        fds=(baseline_fds, fds_after),
        tasks=(baseline_tasks, tasks_after),
        upstream_connections=(baseline_open, open_after, in_use),
        seconds=round(elapsed, 1),
    )
    assert after["drips_abandoned"] - before["drips_abandoned"] == dripping
    assert after["drips_finished"] == before["drips_finished"]
    assert after["requests"] == before["requests"]  # no half-sent body arrived as complete
    assert normal.status_code == 200 and normal.json()["body_length"] == 1000
    assert _stats(echo_monolith)["requests"] == before["requests"] + 1


# -- 4. 100 reloads, a third invalid, under traffic ------------------------------------------


@dataclass(frozen=True)
class Edit:
    document: dict[str, Any] | None  # None: the text is not TOML
    valid: bool
    expect: str  # a fragment of the refusal message (invalid edits)


def _edits(base: dict[str, Any], count: int) -> list[Edit]:
    """Valid steps along the ladder (one forward, or back) and percentage changes, with
    every third edit an invalid one of five kinds, built on the last valid document."""
    rng = random.Random(6)
    edits: list[Edit] = []
    current = copy.deepcopy(base)
    position, upward = 0, True
    kinds = ["not toml", "unknown upstream", "percent 150", "skipped phase", "unknown phase"]
    for n in range(1, count + 1):
        products = current["capabilities"]["products"]
        if n % 3 == 1 and n > 1:  # 4, 7, ..., 100: 33 of them, the last write among them
            kind = kinds[(n // 3) % len(kinds)]
            broken = copy.deepcopy(current)
            target = broken["capabilities"]["products"]
            if kind == "not toml":
                edits.append(Edit(None, False, "is not valid TOML"))
                continue
            if kind == "unknown upstream":
                target["service"] = "nowhere"
                expect = "capabilities.products.service: unknown upstream 'nowhere'"
            elif kind == "percent 150":
                target["canary_percent"] = 150
                expect = "capabilities.products.canary_percent"
            elif kind == "skipped phase":
                target["phase"] = PHASES[position + 2].value
                expect = f"{PHASES[position].value} -> {PHASES[position + 2].value} skips"
            else:
                target["phase"] = "halfway"
                expect = "capabilities.products.phase"
            edits.append(Edit(broken, False, expect))
            continue
        if n % 2 == 0:
            products["canary_percent"] = rng.choice([0, 5, 10, 25, 50, 75, 90, 100])
        else:
            if upward and position == 5:  # reads_cutover: turn back
                upward = False
            elif not upward and position == 0:
                upward = True
            position = position + 1 if upward else rng.randint(0, position - 1)
            products["phase"] = PHASES[position].value
        edits.append(Edit(copy.deepcopy(current), True, ""))
    return edits


def test_a_hundred_reloads_a_third_invalid_under_traffic_fail_no_request(
    echo_monolith: RunningApp, echo_service: RunningApp, proxies: ProxyMaker
) -> None:
    base = routing_document(
        echo_monolith.base_url, echo_service.base_url, capability={"canary_percent": 0}
    )
    proxy = proxies(base)
    edits = _edits(base, 100)
    started = time.monotonic()
    stop = threading.Event()
    results: list[tuple[str, int | str]] = []
    lock = threading.Lock()

    def traffic(n: int) -> None:
        headers = {"Authorization": f"Bearer {_token(f'reload-{n}')}"}
        with httpx.Client(base_url=proxy.base_url, timeout=30) as client:
            while not stop.is_set():
                for method, path in (
                    ("GET", "/products/1"),
                    ("GET", "/orders"),
                    ("POST", "/products"),
                ):
                    try:
                        outcome: int | str = client.request(
                            method, path, headers=headers
                        ).status_code
                    except httpx.HTTPError as exc:
                        outcome = repr(exc)
                    with lock:
                        results.append((f"{method} {path}", outcome))

    threads = _run_threads([lambda n=n: traffic(n) for n in range(3)])
    refusals: list[str] = []
    last_valid = base
    try:
        version = proxy.status()["config_version"]
        failures = 0
        for edit in edits:
            if edit.document is None:
                scratch = proxy.routing_file.with_suffix(".tmp")
                scratch.write_text("[capabilities.products\nphase=")
                os.replace(scratch, proxy.routing_file)
            else:
                proxy.write_routing(edit.document)
            if edit.valid:
                version += 1
                proxy.wait_for_version(version)
                last_valid = edit.document or last_valid
                products = proxy.status()["capabilities"]["products"]
                wanted = last_valid["capabilities"]["products"]
                assert (products["phase"], products["canary_percent"]) == (
                    wanted["phase"],
                    wanted["canary_percent"],
                )
                assert proxy.status()["last_reload_error"] is None
            else:
                failures += 1
                _wait(
                    lambda f=failures: (
                        _metric(proxy, "strangler_proxy_config_reload_failures_total") == f
                    ),
                    5,
                    f"edit refused: {edit.expect}",
                )
                status = proxy.status()
                error = status["last_reload_error"]
                assert error and edit.expect in error, (edit.expect, error)
                assert status["config_version"] == version
                refusals.append(error)
    finally:
        stop.set()
        _join(threads)
    elapsed = time.monotonic() - started

    status = proxy.status()
    final = status["capabilities"]["products"]
    wanted = last_valid["capabilities"]["products"]
    logged = proxy.app.log_text().count("routing config refused, the running one stays")
    failed = [r for r in results if r[1] != 200]
    _summary(
        "100 reloads",
        requests=len(results),
        faults=f"{sum(not e.valid for e in edits)} invalid of {len(edits)} writes",
        server_errors=sum(isinstance(c, int) and c >= 500 for _, c in results),
        lost=sum(isinstance(c, str) for _, c in results),
        config_version=status["config_version"],
        refusals_logged=logged,
        final=(final["phase"], final["canary_percent"]),
        seconds=round(elapsed, 1),
    )
    assert len(edits) == 100 and sum(not e.valid for e in edits) == 33
    assert not edits[-1].valid  # the last write is refused: the one before it stays in force
    assert len(results) > 300
    assert failed == [], failed[:10]
    assert len(refusals) == 33 and logged == 33
    assert status["config_version"] == 1 + sum(e.valid for e in edits)
    assert (final["phase"], final["canary_percent"]) == (wanted["phase"], wanted["canary_percent"])
    assert _metric(proxy, "strangler_proxy_config_reload_failures_total") == 33
