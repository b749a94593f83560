"""pytest-benchmark: the proxy's routing decision per request, with 200 capabilities.

Run by `bench/routing_decision.py` (which reads the JSON it writes); not part of the test
suite (pyproject's testpaths is `tests`). By hand:

    .venv/bin/pytest bench/test_routing_decision_bench.py -p no:cacheprovider -o addopts=""

Each benchmark call routes a fixed, seeded mix of requests, so the per-request figure is the
call's time divided by `extra_info["requests_per_call"]`. What is timed is `decide_request`,
the decision half of `Forwarder._handle` and `Forwarder._route` (proxy/forward.py) without
their I/O: the path normalised, the write scope of a write, the longest-prefix match, the
sticky key of a split read (or of a pinned write), the read-your-writes lookup and
`decide`. Header parsing happens before, once per request, and is not timed here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from proxy.config import RoutingConfig
from proxy.decision import READ_METHODS, Decision, decide
from proxy.forward import Forwarder
from proxy.headers import IncomingHeaders
from proxy.metrics import ProxyMetrics
from proxy.paths import normalise_path
from proxy.runtime import CompiledConfig, RoutingState, Upstream
from proxy.ryw import ReadYourWrites
from strangler.phases import PHASES, Phase, Side

CAPABILITIES = 200
REQUESTS_PER_CALL = 1000
SERVICES = 20
SEED = 20261125

_DEFAULT = Decision(primary=Side.MONOLITH, shadow=None, fallback_to_monolith=False)


def routing_config(capabilities: int = CAPABILITIES) -> RoutingConfig:
    """`capabilities` capabilities spread evenly over every phase, canary and shadow included.

    Each owns `/capNNN`; one in ten also owns `/api/v2/capNNN`, and one in twenty-five owns a
    sub-tree of its neighbour's prefix (`/capNNN/admin`), so longest-prefix matching matters.
    """
    upstreams: dict[str, object] = {"monolith": {"url": "http://127.0.0.1:8000"}}
    for s in range(SERVICES):
        upstreams[f"svc{s:02d}"] = {"url": f"http://127.0.0.1:{8100 + s}"}
    caps: dict[str, object] = {}
    for i in range(capabilities):
        prefixes = [f"/cap{i:03d}"]
        if i % 10 == 0:
            prefixes.append(f"/api/v2/cap{i:03d}")
        if i % 25 == 1:
            prefixes.append(f"/cap{i - 1:03d}/admin")
        phase = PHASES[i % len(PHASES)]
        caps[f"cap{i:03d}"] = {
            "prefixes": prefixes,
            "service": f"svc{i % SERVICES:02d}",
            "phase": phase.value,
            "canary_percent": 5 + (i * 7) % 46 if phase is Phase.CANARY else 0,
            "shadow_percent": 10 if phase is Phase.SHADOW else 5,
            "shadow_during_canary": i % 2 == 0,
            "sticky_key": "subject" if i % 3 else "cookie",
        }
    return RoutingConfig.model_validate({"upstreams": upstreams, "capabilities": caps})


@dataclass(frozen=True)
class Request:
    kind: str  # matched, canary-read, unmatched
    method: str
    raw_path: bytes
    incoming: IncomingHeaders


def _bearer(subject: str) -> bytes:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    token = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': subject, 'exp': 1})}.sig"
    return f"Bearer {token}".encode()


def _headers(rng: random.Random) -> IncomingHeaders:
    """Most users carry a token, some only the sticky cookie, a few nothing yet."""
    raw = [(b"host", b"shop.example"), (b"accept", b"application/json")]
    who = rng.random()
    if who < 0.7:
        raw.append((b"authorization", _bearer(f"user-{rng.randrange(100_000)}")))
    elif who < 0.9:
        raw.append((b"cookie", f"theme=dark; strangler_sticky={rng.randrange(1 << 60):x}".encode()))
    return IncomingHeaders.parse(raw)


_TAILS = ("items", "orders", "search", "reports", "variants", "history", "export")
_UNMATCHED = (
    "/",
    "/health",
    "/static/js/app.{n}.js",
    "/legacy/reports/{n}/q1",
    "/capitals/{n}",  # shares a first few letters with the prefixes, not a segment
    "/api/v2/other/{n}",
    "/cap{c:03d}x/items",
)


def _deep_path(rng: random.Random, capabilities: int) -> bytes:
    c = rng.randrange(capabilities)
    roll = rng.random()
    if roll < 0.1 and c % 10 == 0:
        head = f"/api/v2/cap{c:03d}"
    elif roll < 0.2 and c % 25 == 0:
        head = f"/cap{c:03d}/admin"
    else:
        head = f"/cap{c:03d}"
    segments = [rng.choice(_TAILS) if k % 2 == 0 else str(rng.randrange(10**6)) for k in range(5)]
    path = head + "/" + "/".join(segments[: rng.randint(1, 5)])
    roll = rng.random()
    if roll < 0.1:
        path += "?page=2&sort=-created"
    elif roll < 0.15:
        path += "/"
    elif roll < 0.2:
        path = path.replace("/items", "/items/./draft/..", 1) + "/caf%C3%A9"
    return path.encode()


def request_mix(kind: str, count: int = REQUESTS_PER_CALL, seed: int = SEED) -> list[Request]:
    """`mix`: 80 % reads; 80 % of paths under a capability, 20 % falling to the default."""
    rng = random.Random(f"{seed}-{kind}")
    config_phases = [PHASES[i % len(PHASES)] for i in range(CAPABILITIES)]
    canaries = [i for i, phase in enumerate(config_phases) if phase is Phase.CANARY]
    out: list[Request] = []
    while len(out) < count:
        this = kind
        if kind == "mix":
            this = "unmatched" if rng.random() < 0.2 else "matched"
        if this == "unmatched":
            template = rng.choice(_UNMATCHED)
            path = template.format(n=rng.randrange(10**4), c=rng.randrange(CAPABILITIES))
            raw_path = path.encode()
        elif this == "canary-read":
            c = rng.choice(canaries)
            raw_path = f"/cap{c:03d}/{rng.choice(_TAILS)}/{rng.randrange(10**6)}".encode()
        else:
            raw_path = _deep_path(rng, CAPABILITIES)
        if this == "canary-read":
            method = "GET"
        else:
            method = rng.choice(("GET",) * 7 + ("HEAD",)) if rng.random() < 0.8 else "POST"
            method = rng.choice(("POST", "PUT", "PATCH", "DELETE")) if method == "POST" else method
        out.append(Request(this, method, raw_path, _headers(rng)))
    return out


def decide_request(
    compiled: CompiledConfig, ryw: ReadYourWrites, request: Request
) -> tuple[Upstream, Decision]:
    """Which upstream answers and how: the decision of Forwarder._handle and _route, no I/O."""
    options = compiled.config.proxy
    path = normalise_path(request.raw_path.split(b"?", 1)[0])
    method = request.method
    incoming = request.incoming
    is_read = method in READ_METHODS
    write_scope = None if is_read else compiled.write_scope(path)
    route = compiled.match(path)
    if write_scope is not None and write_scope.policy.routing.sync is not None:
        Forwarder._sticky_key(write_scope, incoming, options.sticky_cookie)
    if route is None:
        return compiled.default, _DEFAULT
    forced = None  # no admin token in the mix: _forced_side returns at its first test
    sticky: str | None = None
    name = route.policy.name
    pinned_to: Side | None = None
    if is_read:
        if route.policy.splits_reads:
            sticky, _ = Forwarder._sticky_key(route, incoming, options.sticky_cookie)
            pinned_to = ryw.side_for(name, sticky)
        elif ryw.has_pins(name):
            for key in Forwarder._known_keys(route, incoming, options.sticky_cookie):
                pinned_to = ryw.side_for(name, key)
                if pinned_to is not None:
                    break
    if pinned_to is not None:
        decision = Decision(primary=pinned_to, shadow=None, fallback_to_monolith=False)
    else:
        decision = decide(route.policy, method, sticky, forced)
    return route.upstream(decision.primary), decision


@pytest.fixture(scope="module")
def compiled() -> Iterator[CompiledConfig]:
    state = RoutingState(ProxyMetrics())
    yield state.apply(routing_config())
    asyncio.run(state.aclose())


@pytest.fixture(scope="module")
def ryw() -> ReadYourWrites:
    """A few users pinned on a few capabilities, as while a sync runs: most lookups miss."""
    store = ReadYourWrites(max_pins=100_000, max_seconds=30)
    for i in range(0, CAPABILITIES, 8):
        for user in range(50):
            store.pin(f"cap{i:03d}", f"sub:user-{user}", Side.SERVICE)
    return store


@pytest.mark.parametrize("kind", ["mix", "matched", "canary-read", "unmatched"])
def test_routing_decision(
    benchmark: BenchmarkFixture, compiled: CompiledConfig, ryw: ReadYourWrites, kind: str
) -> None:
    requests = request_mix(kind)
    # Not a timing assertion: the mix exercises what it says it does.
    outcomes = [decide_request(compiled, ryw, r) for r in requests]
    paths = [normalise_path(r.raw_path.split(b"?", 1)[0]) for r in requests]
    default_route = sum(compiled.match(path) is None for path in paths)
    to_service = sum(decision.primary is Side.SERVICE for _, decision in outcomes)
    expected_default = {"mix": range(1, len(requests)), "unmatched": [len(requests)]}
    assert default_route in expected_default.get(kind, [0])
    assert to_service > 0 or kind == "unmatched"
    benchmark.extra_info.update(
        requests_per_call=len(requests),
        capabilities=len(compiled.capabilities),
        prefixes=len(compiled.prefixes),
        reads=sum(r.method in READ_METHODS for r in requests),
        default_route=default_route,
        to_service=to_service,
        shadowed=sum(decision.shadow is not None for _, decision in outcomes),
    )

    def route_all() -> int:
        served = 0
        for request in requests:
            upstream, _ = decide_request(compiled, ryw, request)
            served += upstream is not None
        return served

    assert benchmark(route_all) == len(requests)
