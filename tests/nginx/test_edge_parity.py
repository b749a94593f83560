"""nginx with the exported configuration sends every request where the Python proxy sends it.

Real processes on loopback: the monolith, the products service, the Python proxy, and
Debian's nginx running `strangler export nginx --standalone` of the proxy's own routing.toml,
re-exported at each phase. The same requests go through both edges: reads by users known by
token subject or by cookie and by nobody, writes, paths no capability claims. Which app a
request reached is read from the apps' own access logs (each request carries a unique token
in its query string and X-Request-ID), and which app answered a read from the answer itself:
only the monolith holds the product, so 200 is the monolith and 404 the service. Nothing is
taken from either proxy's word.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomlkit
import typer
from typer.testing import CliRunner

from proxy.decision import bucket_of, canary_threshold
from strangler import export_cli
from strangler.phases import Phase, Side, routing_of
from tests.nginx.nginx_process import RunningNginx, require_nginx, running_nginx
from tests.proxy.conftest import Proxy, routing_document, run_proxy
from tests.support.factories import new_account, new_product
from tests.support.processes import (
    RunningApp,
    free_port,
    monolith_env,
    run_monolith_command,
    run_service_command,
    serve_monolith,
    serve_products_service,
    service_env,
)
from tests.support.waiting import eventually

COOKIE = "strangler_sticky"
SUBJECTS = [f"shopper-{n}" for n in range(8)]
VISITORS = [f"visitor{n}" for n in range(6)]


def bearer(subject: str) -> str:
    """A token the edges read `sub` from; unsigned, as neither edge verifies it."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"Bearer {part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': subject})}.c2ln"


# --------------------------------------------------------------------------------------------
# The system
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Apps:
    monolith: RunningApp
    service: RunningApp
    product_id: int  # held by the monolith only: a read answered 200 came from it

    def reached(self) -> Callable[[str], frozenset[Side]]:
        """Both access logs as they are now: a token -> the apps whose log shows it.

        Shadow copies and mirrors reach the apps after the answers, so a test polls this (with
        `eventually`) for the hits it expects rather than reading it once."""
        logs = ((Side.MONOLITH, self.monolith.log_text()), (Side.SERVICE, self.service.log_text()))
        return lambda token: frozenset(side for side, text in logs if token in text)


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    require_nginx()
    workdir = tmp_path_factory.mktemp("edge-apps")
    (workdir / "m").mkdir()
    (workdir / "s").mkdir()
    menv = {
        **monolith_env(f"sqlite:///{workdir / 'm' / 'shop.db'}", workdir / "m"),
        "STRANGLER_ACCESS_LOG": "true",
    }
    run_monolith_command(menv, "migrate")
    senv = {
        **service_env(
            f"sqlite:///{workdir / 's' / 'products.db'}",
            workdir / "s",
            workdir / "m" / "jwt-public.pem",
        ),
        "STRANGLER_ACCESS_LOG": "true",
    }
    run_service_command(senv, "migrate")
    with ExitStack() as stack:
        monolith = stack.enter_context(serve_monolith(menv, workdir / "m"))
        service = stack.enter_context(serve_products_service(senv, workdir / "s"))
        with httpx.Client(base_url=monolith.base_url, timeout=30) as client:
            product = new_product(client, new_account(client))
        yield Apps(monolith, service, int(product["id"]))


# --------------------------------------------------------------------------------------------
# The requests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    label: str
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None = None
    refused: bool = False  # a path the proxy answers 400 (proxy/paths.py): no app may see it

    @property
    def is_product_read(self) -> bool:
        return (
            self.method == "GET" and self.path.startswith("/products/") and self.path[10:].isdigit()
        )


def user_reads(product_id: int) -> list[Probe]:
    """One read of the product per user: by subject, by cookie, by both, cookie among others."""
    path = f"/products/{product_id}"
    reads = [Probe(f"GET sub {s}", "GET", path, {"Authorization": bearer(s)}) for s in SUBJECTS]
    reads += [Probe(f"GET cookie {v}", "GET", path, {"Cookie": f"{COOKIE}={v}"}) for v in VISITORS]
    reads += [
        Probe(
            "GET sub and cookie",
            "GET",
            path,
            {"Authorization": bearer("both-0"), "Cookie": f"{COOKIE}=both-cookie"},
        ),
        Probe("GET among cookies", "GET", path, {"Cookie": f"a=1; {COOKIE}=among-7; b=2"}),
        Probe("GET sub é", "GET", path, {"Authorization": bearer("client-été")}),
    ]
    return reads


def probes(product_id: int) -> list[Probe]:
    who = {"Authorization": bearer(SUBJECTS[0])}
    return [
        *user_reads(product_id),
        Probe("HEAD product", "HEAD", f"/products/{product_id}", who),
        Probe("OPTIONS products", "OPTIONS", "/products", {"Cookie": f"{COOKIE}={VISITORS[1]}"}),
        Probe("GET page", "GET", "/products?limit=1", {"Authorization": bearer(SUBJECTS[2])}),
        Probe("GET trailing slash", "GET", "/products/", {"Authorization": bearer(SUBJECTS[3])}),
        Probe("POST product", "POST", "/products", {}, {}),
        Probe("PATCH product", "PATCH", f"/products/{product_id}", who, {}),
        Probe("DELETE product", "DELETE", f"/products/{product_id}", {}),
        Probe("GET orders", "GET", "/orders", who),
        Probe("POST order", "POST", "/orders", {}, {}),
        Probe("GET users/me", "GET", "/users/me", who),
        Probe("GET productsx", "GET", "/productsx", who),
        Probe("GET health", "GET", "/health", {}),
        # nginx decodes %2F and would route these under /products/; the proxy refuses them
        Probe("GET encoded slash", "GET", f"/products%2F{product_id}", who, refused=True),
        Probe("GET encoded backslash", "GET", "/products/1%5Cx", who, refused=True),
        Probe("GET backslash", "GET", "/products/1\\x", who, refused=True),
        Probe("GET escape not UTF-8", "GET", "/products/%C3x", who, refused=True),
        Probe("GET encoded slash, unclaimed", "GET", "/orders%2f1", who, refused=True),
    ]


@dataclass(frozen=True)
class Sent:
    token: str
    status: int
    set_cookie: str | None


def send(client: httpx.Client, probe: Probe) -> Sent:
    """Send `probe` with a fresh token in its query and X-Request-ID; no cookie jar."""
    token = uuid.uuid4().hex
    joiner = "&" if "?" in probe.path else "?"
    response = client.request(
        probe.method,
        f"{probe.path}{joiner}probe={token}",
        headers={**probe.headers, "X-Request-ID": token},
        json=probe.body,
    )
    client.cookies.clear()
    return Sent(token, response.status_code, response.headers.get("set-cookie"))


# --------------------------------------------------------------------------------------------
# The edges
# --------------------------------------------------------------------------------------------


def export(routing: Path, output: Path, port: int) -> None:
    """`strangler export nginx --standalone`, through the CLI's own parser."""
    app = typer.Typer()
    export_cli.register(app)
    result = CliRunner().invoke(
        app,
        [
            "export",
            "nginx",
            "--routing",
            str(routing),
            "--output",
            str(output),
            "--listen",
            f"127.0.0.1:{port}",
            "--standalone",
        ],
    )
    assert result.exit_code == 0, result.output


def exported_nginx(
    stack: ExitStack, proxy: Proxy, workdir: Path, tamper: tuple[str, str] | None = None
) -> RunningNginx:
    """nginx running a fresh export of the proxy's routing.toml (optionally tampered with)."""
    port = free_port()
    output = workdir / f"nginx-{port}"
    export(proxy.routing_file, output, port)
    if tamper is not None:
        conf = output / "strangler.conf"
        text = conf.read_text()
        assert tamper[0] in text
        conf.write_text(text.replace(tamper[0], tamper[1]))
    return stack.enter_context(running_nginx(output, output / "nginx.conf", port))


@dataclass(frozen=True)
class Compared:
    probe: Probe
    proxy: Sent
    nginx: Sent
    via_proxy: frozenset[Side]
    via_nginx: frozenset[Side]


SentBoth = list[tuple[Probe, Sent, Sent]]


def through_both(apps: Apps, proxy_url: str, nginx_url: str, batch: list[Probe]) -> SentBoth:
    """Each probe through both edges; `reached_so_far` then reads which apps saw it."""
    with (
        httpx.Client(base_url=proxy_url, timeout=30) as via_proxy,
        httpx.Client(base_url=nginx_url, timeout=30) as via_nginx,
    ):
        return [(probe, send(via_proxy, probe), send(via_nginx, probe)) for probe in batch]


def reached_so_far(apps: Apps, sent: SentBoth) -> list[Compared]:
    """Each probe with the apps whose logs show it now (copies may still be on their way)."""
    reached = apps.reached()
    return [Compared(probe, p, n, reached(p.token), reached(n.token)) for probe, p, n in sent]


def assert_same_upstreams(
    phase: str, compared: list[Compared], anonymous: frozenset[str] = frozenset()
) -> None:
    """Each request reached the same apps through both edges and got the same answer.

    `anonymous` reads (no key a canary can split by) are left out: each edge makes up a
    cookie of its own for them, which `_check_anonymous` follows instead.
    """
    differ = [
        f"{c.probe.label}: proxy -> {sorted(c.via_proxy)} ({c.proxy.status}), "
        f"nginx -> {sorted(c.via_nginx)} ({c.nginx.status})"
        for c in compared
        if c.probe.label not in anonymous
        and (c.via_proxy != c.via_nginx or c.proxy.status != c.nginx.status)
    ]
    assert not differ, f"{phase}: the edges disagree:\n" + "\n".join(differ)
    unseen = [
        c.probe.label for c in compared if not c.probe.refused and not (c.via_proxy and c.via_nginx)
    ]
    assert not unseen, f"{phase}: no app logged {unseen}"
    let_through = [
        c.probe.label
        for c in compared
        if c.probe.refused
        and (c.via_proxy or c.via_nginx or {c.proxy.status, c.nginx.status} != {400})
    ]
    assert not let_through, f"{phase}: not refused with 400 by both edges: {let_through}"


def answered_by(status: int) -> Side:
    """Which app answered a read of the product: only the monolith holds it."""
    assert status in (200, 404), status
    return Side.MONOLITH if status == 200 else Side.SERVICE


def predicted(key: str, percent: float) -> Side:
    return Side.SERVICE if bucket_of("products", key) < canary_threshold(percent) else Side.MONOLITH


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------


def _check_phase_definition(
    phase: Phase, compared: list[Compared], shadow_during_canary: bool
) -> None:
    """What the phase says, read from the apps: writes, unclaimed paths, shadow copies."""
    routing = routing_of(phase)
    canary_copies = phase is Phase.CANARY and shadow_during_canary
    for c in compared:
        if c.probe.method in ("POST", "PATCH", "DELETE") and c.probe.path.startswith("/products"):
            assert c.via_nginx == {routing.writes}, (phase, c.probe.label, c.via_nginx)
        if c.probe.path.split("?")[0] in ("/orders", "/users/me", "/productsx", "/health"):
            assert c.via_nginx == {Side.MONOLITH}, (phase, c.probe.label, c.via_nginx)
        if c.probe.is_product_read and routing.shadow_reads:
            # Answered by the monolith, and the mirror copy reached the service.
            assert answered_by(c.nginx.status) is Side.MONOLITH
            assert c.via_nginx == {Side.MONOLITH, Side.SERVICE}, (c.probe.label, c.via_nginx)
        if c.probe.is_product_read and canary_copies:
            # Each side the split did not choose gets the copy: both apps saw every read.
            assert c.via_proxy == c.via_nginx == {Side.MONOLITH, Side.SERVICE}, c.probe.label


def sticky_key_of(probe: Probe, by_subject: bool) -> str | None:
    """The key the proxy splits this user by (proxy/forward.py), None if it must make one up."""
    authorization = probe.headers.get("Authorization")
    if by_subject and authorization:
        payload = base64.urlsafe_b64decode(authorization.split(".")[1] + "===")
        return "sub:" + str(json.loads(payload)["sub"])
    cookie = probe.headers.get("Cookie")
    if cookie and f"{COOKIE}=" in cookie:
        return "cookie:" + cookie.split(f"{COOKIE}=")[1].split(";")[0]
    return None


def is_split_read(probe: Probe) -> bool:
    """A read a canary splits: GET, HEAD or OPTIONS on the capability's paths."""
    return (
        probe.method in ("GET", "HEAD", "OPTIONS")
        and probe.path.startswith("/products")
        and not probe.path.startswith("/productsx")
        and not probe.refused
    )


def _check_canary(compared: list[Compared], percent: float, by_subject: bool) -> None:
    """The split is real (users on both sides; at 0 % and 100 % everybody on one), each user
    is where the bucket says, and only a user without a key is given a cookie, by both edges
    alike, whatever the percentage."""
    primaries = set()
    for c in (c for c in compared if is_split_read(c.probe)):
        key = sticky_key_of(c.probe, by_subject)
        assert (c.proxy.set_cookie is None) == (c.nginx.set_cookie is None) == (key is not None)
        if key is None or not c.probe.is_product_read:
            continue
        side = answered_by(c.nginx.status)
        assert side is predicted(key, percent), (c.probe.label, key, side)
        primaries.add(side)
    if percent in (0, 100):
        assert primaries == {Side.SERVICE if percent else Side.MONOLITH}, (percent, primaries)
    else:
        assert primaries == {Side.MONOLITH, Side.SERVICE}, "the split put nobody on one side"


def _made_up(sent: Sent) -> str:
    assert sent.set_cookie is not None, "no cookie set for a user without one"
    value, _, _ = sent.set_cookie.partition(";")
    name, _, made = value.partition("=")
    assert name == COOKIE and len(made) == 32, sent.set_cookie
    return made


def _check_anonymous(compared: list[Compared], percent: float) -> None:
    """Reads without a key went, through each edge, where the cookie that edge made up says."""
    for c in compared:
        for sent, reached in ((c.proxy, c.via_proxy), (c.nginx, c.via_nginx)):
            side = predicted(f"cookie:{_made_up(sent)}", percent)
            if c.probe.is_product_read:
                assert answered_by(sent.status) is side, c.probe.label
            else:
                assert side in reached, (c.probe.label, side, reached)


def _check_made_up_cookies(
    proxy: Proxy, nginx: RunningNginx, percent: float, product_id: int
) -> None:
    """A read with no identity: each edge makes up a cookie, routes by it and sets it with the
    same attributes; the cookie nginx made keeps its user on the same side via the proxy."""
    anonymous = Probe("GET nobody", "GET", f"/products/{product_id}", {})
    with (
        httpx.Client(base_url=proxy.base_url, timeout=30) as via_proxy,
        httpx.Client(base_url=nginx.base_url, timeout=30) as via_nginx,
    ):
        by_proxy = [send(via_proxy, anonymous) for _ in range(6)]
        by_nginx = [send(via_nginx, anonymous) for _ in range(6)]
        attributes = {
            edge: {sent.set_cookie.partition(";")[2] for sent in sents if sent.set_cookie}
            for edge, sents in (("proxy", by_proxy), ("nginx", by_nginx))
        }
        assert attributes["proxy"] == attributes["nginx"], attributes
        for sent in by_proxy + by_nginx:
            made = _made_up(sent)
            assert answered_by(sent.status) is predicted(f"cookie:{made}", percent)
        for sent in by_nginx:
            again = Probe(
                "GET again", "GET", anonymous.path, {"Cookie": f"{COOKIE}={_made_up(sent)}"}
            )
            assert answered_by(send(via_proxy, again).status) is answered_by(sent.status)


def _every_expected_hit(
    apps: Apps,
    sent: SentBoth,
    label: str,
    phase: Phase,
    settings: dict[str, Any],
    anonymous: frozenset[str],
    by_subject: bool,
) -> None:
    """Every check of one step, on the apps' logs as they are now (polled: copies come late)."""
    compared = reached_so_far(apps, sent)
    assert_same_upstreams(label, compared, anonymous)
    _check_phase_definition(phase, compared, bool(settings["shadow_during_canary"]))
    if phase is Phase.CANARY:
        percent = float(settings["canary_percent"])
        _check_canary(compared, percent, by_subject)
        _check_anonymous([c for c in compared if c.probe.label in anonymous], percent)


def test_every_phase_sends_the_same_requests_to_the_same_upstreams(
    apps: Apps, tmp_path: Path
) -> None:
    document = routing_document(
        apps.monolith.base_url,
        apps.service.base_url,
        proxy={"shadow_recheck_seconds": 0},
    )
    batch = probes(apps.product_id)
    steps: list[tuple[str, dict[str, Any]]] = [
        ("monolith", {}),
        ("dual_write", {"phase": "dual_write"}),
        ("backfilled", {"phase": "backfilled"}),
        ("shadow", {"phase": "shadow"}),
        ("canary 0 %", {"phase": "canary", "canary_percent": 0}),
        ("canary 100 %", {"canary_percent": 100}),
        ("canary 50 %", {"canary_percent": 50}),
        ("canary 50 % shadowed", {"shadow_during_canary": True}),
        ("canary 37.5 % by cookie", {"sticky_key": "cookie", "canary_percent": 37.5}),
        ("reads_cutover", {"phase": "reads_cutover"}),
        ("writes_cutover", {"phase": "writes_cutover"}),
        ("decommissioned", {"phase": "decommissioned"}),
    ]
    (tmp_path / "proxy").mkdir()
    with run_proxy(tmp_path / "proxy", document) as proxy, ExitStack() as nginxes:
        for label, changes in steps:
            if "sticky_key" in changes:  # not an admin API field: a hand edit, as an operator
                edited = tomlkit.parse(proxy.routing_file.read_text())
                for key, value in changes.items():
                    edited["capabilities"]["products"][key] = value
                version = proxy.status()["config_version"]
                proxy.routing_file.write_text(tomlkit.dumps(edited))
                proxy.wait_for_version(version + 1)
            elif changes:
                proxy.set(**changes)
            settings = proxy.status()["capabilities"]["products"]
            phase = Phase(settings["phase"])
            nginx = exported_nginx(nginxes, proxy, tmp_path)
            by_subject = "by cookie" not in label
            anonymous = frozenset(
                probe.label
                for probe in batch
                if phase is Phase.CANARY
                and is_split_read(probe)
                and sticky_key_of(probe, by_subject) is None
            )
            percent = float(settings["canary_percent"])
            sent = through_both(apps, proxy.base_url, nginx.base_url, batch)
            expected = partial(
                _every_expected_hit, apps, sent, label, phase, settings, anonymous, by_subject
            )
            eventually(expected, f"{label}: the hits the phase means, via both edges")
            if phase is Phase.CANARY:
                _check_made_up_cookies(proxy, nginx, percent, apps.product_id)
            nginxes.close()


def test_a_different_key_string_puts_users_on_other_sides(apps: Apps, tmp_path: Path) -> None:
    """The comparison has teeth: nginx hashing another string than the proxy (here the key
    without its capability) sends some of the same users elsewhere, and the check says so."""
    document = routing_document(
        apps.monolith.base_url,
        apps.service.base_url,
        capability={"phase": "canary", "canary_percent": 50},
    )
    planted = ('"products:${strangler_key_products}"', '"${strangler_key_products}"')
    (tmp_path / "proxy").mkdir()
    with run_proxy(tmp_path / "proxy", document) as proxy, ExitStack() as stack:
        nginx = exported_nginx(stack, proxy, tmp_path, tamper=planted)
        sent = through_both(apps, proxy.base_url, nginx.base_url, user_reads(apps.product_id))

        def every_read_logged() -> list[Compared]:
            compared = reached_so_far(apps, sent)
            missing = [c.probe.label for c in compared if not (c.via_proxy and c.via_nginx)]
            assert not missing, f"not in any app's log yet: {missing}"
            return compared

        compared = eventually(every_read_logged, "every read in an app's log, via both edges")
        with pytest.raises(AssertionError, match="the edges disagree"):
            assert_same_upstreams("canary, planted fault", compared)


def test_the_mirror_copies_shadow_percent_of_the_reads(apps: Apps, tmp_path: Path) -> None:
    """shadow_percent samples per request, as the proxy's does: about a quarter of 200 GETs
    reach the service as copies (binomial: 50 expected, 6 standard deviations either side)."""
    routing = tmp_path / "routing.toml"
    routing.write_text(
        tomlkit.dumps(
            routing_document(
                apps.monolith.base_url,
                apps.service.base_url,
                capability={"phase": "shadow", "shadow_percent": 25},
            )
        )
    )
    port = free_port()
    export(routing, tmp_path / "edge", port)
    read = Probe("GET", "GET", f"/products/{apps.product_id}", {})
    with (
        running_nginx(tmp_path / "edge", tmp_path / "edge" / "nginx.conf", port) as nginx,
        httpx.Client(base_url=nginx.base_url, timeout=30) as client,
    ):
        sent = [send(client, read) for _ in range(200)]

    def answers_and_enough_copies() -> int:
        reached = apps.reached()
        answered = [Side.MONOLITH in reached(s.token) and s.status == 200 for s in sent]
        assert all(answered), f"{answered.count(False)} reads not answered by the monolith"
        copies = sum(Side.SERVICE in reached(s.token) for s in sent)
        assert copies >= 14, copies
        return copies

    copies = eventually(answers_and_enough_copies, "the reads and at least 14 copies")
    assert copies <= 86, copies
