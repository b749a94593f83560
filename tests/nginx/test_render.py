"""`strangler export nginx`: what each phase renders to, that nginx accepts it, and the errors.

The routing in a phase is checked through the rendered text here; that nginx then routes real
requests as the proxy does is test_edge_parity.py's business.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import tomlkit
import typer
from typer.testing import CliRunner

from proxy.config import CapabilityConfig, ProxyOptions, UpstreamConfig, parse_config
from strangler import export_cli
from strangler.nginx_export import render, render_standalone
from strangler.nginx_routing import (
    EdgeCapability,
    EdgeOptions,
    EdgeUpstream,
    RoutingFileError,
    parse_routing,
)
from strangler.phases import PHASES, Phase, Side, routing_of
from tests.nginx.nginx_process import nginx_check, require_nginx

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


def test_canary_at_zero_or_hundred_percent_needs_no_split() -> None:
    nobody = rendered(document(phase="canary", canary_percent=0))
    everybody = rendered(document(phase="canary", canary_percent=100))
    for conf in (nobody, everybody):
        assert "$strangler_split_products" not in conf and "js_set $strangler_key" not in conf
    assert "proxy_pass http://strangler_monolith;" in location(nobody, '"/products/"')
    assert method_map(everybody)["GET"] == "strangler_products_service"


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
    assert (
        "upstream strangler_products_service {\n    server 127.0.0.1:8002;\n    keepalive 200;"
    ) in conf
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
    with pytest.raises(RoutingFileError, match="is already a prefix of capabilities.products"):
        parse_routing(tomlkit.dumps(doc))


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


# -- the reader agrees with the proxy's, and refuses what it cannot export ----------------------


def test_the_export_reads_routing_toml_as_the_proxy_does() -> None:
    text = (ROOT / "routing.toml").read_text()
    ours, proxys = parse_routing(text), parse_config(text)
    assert ours.proxy.default_upstream == proxys.proxy.default_upstream
    assert ours.proxy.body_limit_bytes == proxys.proxy.body_limit_bytes
    assert ours.proxy.trusted_proxies == proxys.proxy.trusted_proxies
    assert ours.proxy.sticky_cookie == proxys.proxy.sticky_cookie
    for name, upstream in proxys.upstreams.items():
        mine = ours.upstreams[name]
        assert str(mine.url).rstrip("/") == upstream.origin
        assert (mine.connect_timeout, mine.read_timeout, mine.max_connections) == (
            upstream.connect_timeout,
            upstream.read_timeout,
            upstream.max_connections,
        )
    for name, capability in proxys.capabilities.items():
        mine_cap = ours.capabilities[name]
        for field in EdgeCapability.model_fields:
            assert getattr(mine_cap, field) == getattr(capability, field), field


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (EdgeOptions, ProxyOptions),
        (EdgeUpstream, UpstreamConfig),
        (EdgeCapability, CapabilityConfig),
    ],
)
def test_defaults_match_the_proxys(ours: Any, theirs: Any) -> None:
    """A field the proxy defaults one way and the export another would route differently."""
    for name, field in ours.model_fields.items():
        assert field.default == theirs.model_fields[name].default, name


def base_text(**capability: Any) -> str:
    return tomlkit.dumps(document(**capability))


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
            "cannot be exported to nginx",
        ),
    ],
)
def test_a_routing_file_that_cannot_be_exported_is_refused_naming_the_field(
    text: str, names: str
) -> None:
    with pytest.raises(RoutingFileError, match=re.escape(names)):
        parse_routing(text)


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
