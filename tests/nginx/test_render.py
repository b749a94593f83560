"""`strangler export nginx`: what each phase renders to, that nginx accepts it, and the errors.

The routing in a phase is checked through the rendered text here; that nginx then routes real
requests as the proxy does is test_edge_parity.py's business.
"""

from __future__ import annotations

import random
import re
import socket
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
import tomlkit
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from proxy.config import ConfigError, load_config, parse_config
from proxy.paths import BadPath, normalise_path
from strangler import export_cli
from strangler.nginx_export import render, render_standalone
from strangler.nginx_routing import RoutingFileError, load_routing, parse_routing
from strangler.phases import PHASES, Phase, Side, routing_of
from tests.nginx.nginx_process import nginx_check, require_nginx, running_nginx
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
BLOCK = {Side.MONOLITH: "strangler_monolith", Side.SERVICE: "strangler_products_service"}


def document(**capability: Any) -> dict[str, Any]:
    return {
        "proxy": {"default_upstream": "monolith"},
        "upstreams": {
            "monolith": {"url": "http://127.0.0.1:8001", "connect_timeout": 1.0},
            "products_service": {
                "url": "http://127.0.0.1:8002",
                "connect_timeout": 0.5,
                "read_timeout": 5.0,
            },
        },
        "capabilities": {
            "products": {
                "prefixes": ["/products"],
                "monolith": "monolith",
                "service": "products_service",
                **capability,
            }
        },
    }


def rendered(doc: dict[str, Any]) -> str:
    routing = parse_routing(tomlkit.dumps(doc))
    return render(routing, listen="127.0.0.1:8080", js_path="/x/strangler.js").conf


def location(conf: str, match: str) -> str:
    """The body of one location block."""
    start = conf.index(f"    location {match} {{\n")
    return conf[start : conf.index("\n    }\n", start)]


def method_map(conf: str) -> dict[str, str]:
    found = re.search(r"map \$request_method \$strangler_target_products \{\n(.*?)\n\}", conf, re.S)
    assert found is not None
    return dict(line.split()[:2] for line in found.group(1).replace(";", "").splitlines())


# -- what each phase renders to ------------------------------------------------------------


@pytest.mark.parametrize("phase", [p for p in PHASES if p is not Phase.CANARY])
def test_fixed_phases_send_reads_and_writes_where_the_phase_says(phase: Phase) -> None:
    conf = rendered(document(phase=phase.value))
    routing = routing_of(phase)
    assert routing.reads is not None
    reads, writes = BLOCK[routing.reads], BLOCK[routing.writes]
    for match in ('= "/products"', '"/products/"'):
        body = location(conf, match)
        if reads == writes:
            assert f"proxy_pass http://{reads};" in body
        else:
            assert "proxy_pass http://$strangler_target_products;" in body
            assert method_map(conf) == {
                "GET": reads,
                "HEAD": reads,
                "OPTIONS": reads,
                "default": writes,
            }
        assert ("mirror /_strangler_mirror/products;" in body) is routing.shadow_reads
    assert "split_clients" not in conf.split("server {")[0].split("# products:")[1]
    assert f"proxy_pass http://{BLOCK[Side.MONOLITH]};" in location(conf, "/")


def test_shadow_mirrors_gets_to_the_service_and_samples_the_shadow_percent() -> None:
    conf = rendered(document(phase="shadow", shadow_percent=25))
    mirror = location(conf, '= "/_strangler_mirror/products"')
    assert "internal;" in mirror
    assert "if ($request_method != GET) { return 204; }" in mirror
    assert "if ($strangler_sampled_products = 0) { return 204; }" in mirror
    assert "proxy_pass http://strangler_products_service$request_uri;" in mirror
    assert 'proxy_set_header Host "127.0.0.1:8002";' in mirror
    assert "split_clients $request_id $strangler_sampled_products {\n    25.00% 1;" in conf
    assert "mirror_request_body off;" in location(conf, '"/products/"')


def test_shadow_at_zero_percent_mirrors_nothing() -> None:
    conf = rendered(document(phase="shadow", shadow_percent=0))
    assert "mirror" not in conf.split("server {")[1]


def test_canary_splits_reads_on_the_proxys_key_and_percentage() -> None:
    conf = rendered(document(phase="canary", canary_percent=12.5))
    assert (
        'split_clients "products:${strangler_key_products}" $strangler_split_products {\n'
        "    12.50% strangler_products_service;\n"
        "    * strangler_monolith;\n}"
    ) in conf
    assert method_map(conf) == {
        "GET": "$strangler_split_products",
        "HEAD": "$strangler_split_products",
        "OPTIONS": "$strangler_split_products",
        "default": "strangler_monolith",
    }
    assert "js_set $strangler_key_products strangler_edge.key_products;" in conf
    assert "add_header Set-Cookie $strangler_cookie_products always;" in location(
        conf, '"/products/"'
    )
    # The proxy's cookie, attributes included (proxy/forward.py).
    assert (
        '"strangler_sticky=$strangler_made_products; Path=/; Max-Age=31536000; HttpOnly; '
        'SameSite=Lax"'
    ) in conf


@pytest.mark.parametrize(("percent", "side"), [(0, Side.MONOLITH), (100, Side.SERVICE)])
def test_canary_at_zero_or_hundred_percent_splits_nobody_but_keys_every_read(
    percent: float, side: Side
) -> None:
    """No split_clients: one side for everybody. But the proxy reads the key, and makes one up
    and sets it as the cookie, in a canary at any percentage: so does the export."""
    doc = document(phase="canary", canary_percent=percent)
    conf = rendered(doc)
    assert "\nsplit_clients" not in conf
    assert "js_set $strangler_key_products strangler_edge.key_products;" in conf
    assert (
        f"map $strangler_key_products $strangler_split_products {{ default {BLOCK[side]}; }}"
    ) in conf
    assert method_map(conf)["GET"] == "$strangler_split_products"
    assert "add_header Set-Cookie $strangler_cookie_products always;" in location(
        conf, '"/products/"'
    )
    js = render(parse_routing(tomlkit.dumps(doc)), listen="8080", js_path="/x.js").js
    assert "function key_products(r)" in js


def test_canary_shadowing_mirrors_each_read_to_the_side_that_did_not_answer() -> None:
    conf = rendered(document(phase="canary", canary_percent=30, shadow_during_canary=True))
    assert (
        "map $strangler_split_products $strangler_shadow_products {\n"
        "    strangler_products_service strangler_monolith;\n"
        "    default strangler_products_service;\n}"
    ) in conf
    mirror = location(conf, '= "/_strangler_mirror/products"')
    assert "proxy_pass http://$strangler_shadow_products$request_uri;" in mirror
    assert "$strangler_sampled_products" not in mirror  # shadow_percent 100: every GET


def test_the_sticky_key_mode_reaches_the_njs_module() -> None:
    for mode, by_subject in (("subject", "true"), ("cookie", "false")):
        doc = document(phase="canary", canary_percent=5, sticky_key=mode)
        routing = parse_routing(tomlkit.dumps(doc))
        js = render(routing, listen="8080", js_path="/x.js").js
        assert f'return stickyKey(r, {by_subject}, "strangler_made_products");' in js
        assert 'var COOKIE = "strangler_sticky";' in js


def test_upstreams_keep_connections_alive_and_locations_take_their_timeouts() -> None:
    conf = rendered(document(phase="writes_cutover"))
    upstream = conf[conf.index("upstream strangler_products_service {") :]
    upstream = upstream[: upstream.index("}")]
    assert "    server 127.0.0.1:8002;\n" in upstream and "    keepalive 200;\n" in upstream
    # keepalive is the idle connections kept per worker: the file must not call it a cap.
    assert "Not a limit" in upstream and "max_conns" not in upstream
    body = location(conf, '"/products/"')
    assert "proxy_connect_timeout 500ms;" in body and "proxy_read_timeout 5000ms;" in body
    assert 'proxy_set_header Connection "";' in body
    assert "proxy_http_version 1.1;" in conf
    assert "client_max_body_size 10485760;" in conf
    for header in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Request-ID", "traceparent"):
        assert f"proxy_set_header {header} " in body


def test_the_header_says_what_only_the_python_proxy_does() -> None:
    conf = rendered(document(phase="shadow"))
    head = conf.split("js_import")[0]
    for feature in (
        "shadow compare",
        "fallback",
        "circuit breaker",
        "read-your-writes",
        "write fence",
        "admin API",
        "hot reload",
    ):
        assert feature in head
    assert "products phase shadow: reads -> monolith; writes -> monolith" in head


def test_longest_prefix_and_the_default_route() -> None:
    doc = document(phase="writes_cutover")
    doc["capabilities"]["reviews"] = {
        "prefixes": ["/products/reviews", "/ratings/"],
        "service": "monolith",
        "phase": "monolith",
    }
    conf = rendered(doc)
    # nginx picks the longest matching prefix location, as the proxy's match does.
    assert "proxy_pass http://strangler_monolith;" in location(conf, '"/products/reviews/"')
    assert "proxy_pass http://strangler_products_service;" in location(conf, '"/products/"')
    assert '= "/ratings"' in conf  # normalised, as the proxy normalises prefixes
    claims_all = document(prefixes=["/"], phase="decommissioned")
    conf = rendered(claims_all)
    assert conf.count("    location ") == 1
    assert "proxy_pass http://strangler_products_service;" in location(conf, '"/"')


def test_a_prefix_written_twice_is_one_location_and_two_owners_are_refused() -> None:
    conf = rendered(document(prefixes=["/products", "/products/"]))
    assert conf.count('location "/products/"') == 1
    doc = document()
    doc["capabilities"]["other"] = {"prefixes": ["/products/"], "service": "monolith"}
    with pytest.raises(RoutingFileError, match="overlaps the same prefix of capabilities.products"):
        parse_routing(tomlkit.dumps(doc))


# -- the paths the proxy refuses are refused before routing --------------------------------


def refused_path_map(conf: str) -> tuple[re.Pattern[bytes], re.Pattern[bytes]]:
    """The export's two regexes over $request_uri, as PCRE reads them (bytes, ASCII case)."""
    found = re.search(r"map \$request_uri \$strangler_refused_path \{\n(.*?)\n\}", conf, re.S)
    assert found is not None
    lines = found.group(1).splitlines()
    assert [line.rsplit(" ", 1)[1] for line in lines] == ["1;", "0;", "1;"]
    refused, accepted = (
        line.strip().rsplit(" ", 1)[0][1:-1].replace("\\\\", "\\") for line in lines[:2]
    )
    assert refused.startswith("~*") and accepted.startswith("~*")
    return re.compile(refused[2:].encode(), re.I), re.compile(accepted[2:].encode(), re.I)


REFUSED, ACCEPTED = refused_path_map(rendered(document()))


def export_refuses(uri: bytes) -> bool:
    return REFUSED.search(uri) is not None or ACCEPTED.search(uri) is None


def proxy_refuses(uri: bytes) -> bool:
    """proxy/paths.py's verdict on a request target (uvicorn hands it the path alone)."""
    try:
        normalise_path(re.split(rb"[?#]", uri, maxsplit=1)[0])
    except BadPath:
        return True
    return False


# Pieces of request targets: encoded slashes, backslashes and NUL, bytes outside ASCII, UTF-8
# escapes well formed and not (overlong, surrogates, past U+10FFFF, cut short), bare `%`.
PATH_PIECES = [
    *(b"/", b"a", b"/products", b";", b"~", b".", b"..", b"%2e%2e", b"%41", b"%7e"),
    *(b"%2f", b"%2F", b"%5c", b"%5C", b"%00", b"\\", b"\xc3\xa9", b"\xff"),
    *(b"%c3%a9", b"%C3%A9", b"%c3", b"%a9", b"%c2%80", b"%c1%bf", b"%c0%af", b"%df%bf"),
    *(b"%e2%82%ac", b"%e0%a0%80", b"%e0%9f%bf", b"%ed%9f%bf", b"%ed%a0%80", b"%ef%bf%bf"),
    *(b"%f0%9f%98%80", b"%f0%8f%bf%bf", b"%f4%8f%bf%bf", b"%f4%90%80%80", b"%f5%80%80%80"),
    *(b"%", b"%z", b"%zz", b"%4", b"?q=%2f%ff", b"#f%2f"),
]
paths = st.lists(st.sampled_from(PATH_PIECES), max_size=8).map(lambda ps: b"/" + b"".join(ps))


@settings(max_examples=400, deadline=None)
@given(uri=paths)
def test_the_export_refuses_exactly_the_paths_the_proxy_refuses(uri: bytes) -> None:
    """nginx decodes %2F into a slash and routes /products%2Fx as /products/x; the proxy
    answers 400. The exported server refuses what the proxy refuses, and nothing else."""
    assert export_refuses(uri) is proxy_refuses(uri), uri


def test_the_refusal_comes_before_routing() -> None:
    conf = rendered(document())
    server = conf[conf.index("server {") :]
    assert server.index("if ($strangler_refused_path) {") < server.index("location ")
    assert "return 400;" in server.split("location ")[0]


def nginx_refuses_itself(uri: bytes) -> bool:
    """What nginx answers 400 on its own (docs/scale-out.md, "Known differences"): a `%` not
    followed by two hex digits, a `..` that climbs above the root."""
    path = re.split(rb"[?#]", uri, maxsplit=1)[0]
    if re.search(rb"%(?![0-9a-fA-F]{2})", path):
        return True
    depth = 0
    for segment in unquote_to_bytes(path).split(b"/")[1:]:
        if segment == b"..":
            depth -= 1
            if depth < 0:
                return True
        elif segment not in (b"", b"."):
            depth += 1
    return False


def status_of(port: int, uri: bytes) -> int:
    request = b"GET " + uri + b" HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    return int(answer.split(b" ", 2)[1])


def test_nginx_answers_400_to_the_paths_the_proxy_refuses(tmp_path: Path) -> None:
    """The real nginx with the export: 400 for what the proxy refuses; else the request is
    routed (its upstream is down: 502), unless nginx itself refuses it, as documented."""
    require_nginx()
    doc = document(phase="canary", canary_percent=50)
    doc["upstreams"]["monolith"]["url"] = "http://127.0.0.1:9"
    doc["upstreams"]["products_service"]["url"] = "http://127.0.0.1:9"
    port = free_port()
    export = render(
        parse_routing(tomlkit.dumps(doc)),
        listen=f"127.0.0.1:{port}",
        js_path=str(tmp_path / "strangler.js"),
    )
    (tmp_path / "strangler.js").write_text(export.js)
    (tmp_path / "strangler.conf").write_text(export.conf)
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_standalone(include=str(tmp_path / "strangler.conf")))
    rng = random.Random(7)
    uris = [b"/" + piece for piece in PATH_PIECES]
    uris += [b"/products/" + piece + b"x" for piece in PATH_PIECES]
    uris += [b"/" + b"".join(rng.choices(PATH_PIECES, k=rng.randint(1, 6))) for _ in range(300)]
    with running_nginx(tmp_path, conf, port):
        statuses = {uri: status_of(port, uri) for uri in uris}
    wrong = [
        (uri, status)
        for uri, status in statuses.items()
        if status != (400 if proxy_refuses(uri) or nginx_refuses_itself(uri) else 502)
    ]
    assert not wrong, wrong[:10]
    assert sum(status == 502 for status in statuses.values()) > len(uris) // 4
    assert sum(proxy_refuses(uri) for uri in uris) > len(uris) // 4


def test_trusted_proxies_extend_forwarded_headers_only_for_them() -> None:
    doc = document()
    doc["proxy"]["trusted_proxies"] = ["10.0.0.0/8", "::1"]
    conf = rendered(doc)
    assert "geo $strangler_trusted_peer {\n    default 0;\n    10.0.0.0/8 1;\n    ::1 1;\n}" in conf
    assert "1 $proxy_add_x_forwarded_for;" in conf
    untrusted = rendered(document())
    assert "map $remote_addr $strangler_forwarded_for { default $remote_addr; }" in untrusted


# -- nginx accepts it --------------------------------------------------------------------------


VARIANTS: dict[str, dict[str, Any]] = {
    **{phase.value: {"phase": phase.value} for phase in PHASES},
    "canary split": {"phase": "canary", "canary_percent": 33.33, "shadow_during_canary": True},
    "canary sampled shadow": {
        "phase": "canary",
        "canary_percent": 1,
        "shadow_during_canary": True,
        "shadow_percent": 10,
    },
    "canary by cookie": {"phase": "canary", "canary_percent": 50, "sticky_key": "cookie"},
    "shadow sampled": {"phase": "shadow", "shadow_percent": 0.5},
    "canary at 0 %": {"phase": "canary", "canary_percent": 0},
    "canary at 100 % shadowed": {
        "phase": "canary",
        "canary_percent": 100,
        "shadow_during_canary": True,
        "shadow_percent": 20,
    },
    "claims everything": {"phase": "canary", "canary_percent": 5, "prefixes": ["/"]},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_nginx_accepts_the_standalone_export(variant: str, tmp_path: Path) -> None:
    require_nginx()
    doc = document(**VARIANTS[variant])
    doc["proxy"].update(trusted_proxies=["10.1.0.0/16"], body_limit_bytes=0)
    doc["upstreams"]["v6"] = {"url": "http://[::1]:8003"}
    doc["capabilities"]["odd-name.v2"] = {
        "prefixes": ["/odd/a;b=c", "/x@y"],
        "service": "v6",
        "phase": "canary",
        "canary_percent": 50,
    }
    routing = parse_routing(tomlkit.dumps(doc))
    export = render(routing, listen="127.0.0.1:1", js_path=str(tmp_path / "strangler.js"))
    (tmp_path / "strangler.js").write_text(export.js)
    (tmp_path / "strangler.conf").write_text(export.conf)
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(
        render_standalone(include=str(tmp_path / "strangler.conf"))
    )
    checked = nginx_check(tmp_path, tmp_path / "nginx.conf")
    assert checked.returncode == 0, checked.stderr


def test_the_repositorys_routing_file_exports_and_checks(tmp_path: Path) -> None:
    require_nginx()
    result = invoke(
        "--routing", str(ROOT / "routing.toml"), "--output", str(tmp_path / "out"), "--standalone"
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "logs",
        "nginx.conf",
        "strangler.conf",
        "strangler.js",
    ]
    checked = nginx_check(out, out / "nginx.conf")
    assert checked.returncode == 0, checked.stderr


# -- the reader is the proxy's, and refuses what nginx cannot be given --------------------------


def base_text(**capability: Any) -> str:
    return tomlkit.dumps(document(**capability))


def edited(section: str, **values: Any) -> str:
    doc = document()
    doc.setdefault(section, {}).update(values)
    return tomlkit.dumps(doc)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[upstreams", "not valid TOML"),
        (base_text(service="nowhere"), "capabilities.products.service: unknown upstream"),
        (base_text(prefixes=["products"]), "capabilities.products.prefixes"),
        (base_text(prefixes=["/caf\u00e9"]), "never holds"),
        (base_text(canary_percent=101), "capabilities.products.canary_percent"),
        (base_text(phase="sideways"), "capabilities.products.phase"),
        (base_text(sticky_key="ip"), "capabilities.products.sticky_key"),
        (
            base_text().replace("http://127.0.0.1:8002", "https://127.0.0.1:8002"),
            "plain-HTTP upstreams only",
        ),
        (
            base_text().replace("http://127.0.0.1:8002", "http://127.0.0.1:8002/api"),
            "must be an origin",
        ),
        (base_text().replace('"monolith"\n', '"elsewhere"\n', 1), "proxy.default_upstream"),
        (
            base_text().replace("[capabilities.products]", '[capabilities."pro ducts"]'),
            "cannot be exported to nginx: capabilities.pro ducts: the name cannot be part",
        ),
        (edited("proxy", sticky_cookie="k$v"), "proxy.sticky_cookie: 'k$v' is not a cookie"),
    ],
)
def test_a_routing_file_that_cannot_be_exported_is_refused_naming_the_field(
    text: str, names: str
) -> None:
    with pytest.raises(RoutingFileError, match=re.escape(names)):
        parse_routing(text)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (edited("breaker", failure_threshold=0), "breaker.failure_threshold"),
        (edited("proxy", shadow_workers=0), "proxy.shadow_workers"),
        (edited("proxy", colour="red"), "proxy.colour"),
        (base_text(colour="red"), "capabilities.products.colour"),
        (base_text(ignore_fields="price"), "capabilities.products.ignore_fields"),
        (
            base_text(related_write_prefixes=["/products/"]),
            "capabilities.products.related_write_prefixes: '/products' is a prefix",
        ),
    ],
)
def test_the_export_refuses_what_the_proxy_refuses_in_the_fields_it_does_not_use(
    text: str, names: str
) -> None:
    """nginx never acts on these fields, but a file the proxy would refuse must not reach an
    edge either: both edges serve from one routing.toml, and say the same of it."""
    with pytest.raises(ConfigError, match=re.escape(names)):
        parse_config(text)
    with pytest.raises(RoutingFileError, match=re.escape(names)):
        parse_routing(text)


# One fault planted in each file, in the fields both edges route by, and the field the refusal
# must name. Each edge is asked on its own, reading the file from disk as it does.
PROXY_REFUSES = {
    "not TOML": ("[upstreams", "not valid TOML"),
    "unknown upstream": (base_text(service="nowhere"), "capabilities.products.service"),
    "relative prefix": (base_text(prefixes=["products"]), "capabilities.products.prefixes"),
    "canary past 100 %": (base_text(canary_percent=101), "capabilities.products.canary_percent"),
    "unknown phase": (base_text(phase="sideways"), "capabilities.products.phase"),
    "unknown sticky key": (base_text(sticky_key="ip"), "capabilities.products.sticky_key"),
    "upstream with a path": (
        base_text().replace("http://127.0.0.1:8002", "http://127.0.0.1:8002/api"),
        "upstreams.products_service.url",
    ),
    "unknown default upstream": (
        base_text().replace('"monolith"\n', '"elsewhere"\n', 1),
        "proxy.default_upstream",
    ),
}
# What nginx cannot be given, which the proxy serves: the export alone refuses these.
ONLY_THE_EXPORT_REFUSES = {
    "non-ASCII prefix": (base_text(prefixes=["/caf\u00e9"]), "capabilities.products.prefixes"),
    "https upstream": (
        base_text().replace("http://127.0.0.1:8002", "https://127.0.0.1:8002"),
        "upstreams.products_service.url",
    ),
    "name with a space": (
        base_text().replace("[capabilities.products]", '[capabilities."pro ducts"]'),
        "capabilities.pro ducts",
    ),
    "cookie name with a $": (edited("proxy", sticky_cookie="k$v"), "proxy.sticky_cookie"),
}


@pytest.mark.parametrize("fault", PROXY_REFUSES)
def test_a_file_the_proxy_refuses_is_refused_by_the_export_naming_the_same_field(
    fault: str, tmp_path: Path
) -> None:
    text, field = PROXY_REFUSES[fault]
    path = tmp_path / "routing.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(field)):
        load_config(path)  # as the proxy reads it at start
    with pytest.raises(RoutingFileError, match=re.escape(field)):
        load_routing(path)  # as `strangler export nginx` reads it


@pytest.mark.parametrize("fault", ONLY_THE_EXPORT_REFUSES)
def test_the_export_refuses_beyond_the_proxy_only_what_nginx_cannot_be_given(
    fault: str, tmp_path: Path
) -> None:
    text, field = ONLY_THE_EXPORT_REFUSES[fault]
    path = tmp_path / "routing.toml"
    path.write_text(text)
    load_config(path)  # the proxy serves this file
    with pytest.raises(RoutingFileError, match=re.escape(f"cannot be exported to nginx: {field}")):
        load_routing(path)


@pytest.mark.parametrize("variant", ["repository", *VARIANTS])
def test_a_file_the_proxy_accepts_exports(variant: str, tmp_path: Path) -> None:
    path = tmp_path / "routing.toml"
    if variant == "repository":
        path.write_text((ROOT / "routing.toml").read_text())
    else:
        path.write_text(base_text(**VARIANTS[variant]))
    written = tomllib.loads(path.read_text())["capabilities"]["products"]["phase"]
    for read in (load_config(path), load_routing(path)):  # the proxy's reading, the export's
        assert list(read.capabilities) == ["products"]
        assert read.capabilities["products"].phase.value == written


# -- the command -------------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    app = typer.Typer()
    export_cli.register(app)
    return CliRunner().invoke(app, ["export", "nginx", *args])


def test_the_command_writes_the_include_and_the_module(tmp_path: Path) -> None:
    routing = tmp_path / "routing.toml"
    routing.write_text(base_text(phase="canary", canary_percent=10))
    result = invoke("--routing", str(routing), "--output", str(tmp_path / "edge"), "--listen", "80")
    assert result.exit_code == 0, result.output
    conf = (tmp_path / "edge" / "strangler.conf").read_text()
    assert "    listen 80;" in conf
    assert f'js_import strangler_edge from "{tmp_path / "edge" / "strangler.js"}";' in conf
    assert "function key_products(r)" in (tmp_path / "edge" / "strangler.js").read_text()
    assert not (tmp_path / "edge" / "nginx.conf").exists()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot read"),
        ("[upstreams", "not valid TOML"),
        (base_text(service="nowhere"), "capabilities.products.service"),
    ],
)
def test_the_command_refuses_a_bad_routing_file_and_says_what_to_do(
    tmp_path: Path, content: str | None, says: str
) -> None:
    routing = tmp_path / "routing.toml"
    if content is not None:
        routing.write_text(content)
    result = invoke("--routing", str(routing), "--output", str(tmp_path / "edge"))
    assert result.exit_code == 2
    said = " ".join(result.output.split())  # rich wraps the message to the terminal's width
    assert says in said and "what to do" in said
    assert not (tmp_path / "edge" / "strangler.conf").exists()


def test_the_command_refuses_a_listen_address_that_would_break_the_config(tmp_path: Path) -> None:
    routing = tmp_path / "routing.toml"
    routing.write_text(base_text())
    result = invoke("--routing", str(routing), "--output", str(tmp_path), "--listen", "80; evil")
    assert result.exit_code == 2 and "listen" in result.output
