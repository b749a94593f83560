"""The exported njs module computes each user's sticky key exactly as the Python proxy does.

The module of a real export runs in Debian's nginx; each case's key (the bytes nginx will
hash) is compared with what proxy/forward.py's `_known_keys` finds for the same headers.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from proxy.decision import bucket_of
from proxy.forward import Forwarder
from proxy.headers import IncomingHeaders
from strangler.nginx_export import render
from strangler.nginx_routing import parse_routing
from strangler.split import murmur2
from tests.nginx.nginx_process import require_nginx, running_nginx
from tests.support.processes import free_port

COOKIE = "strangler_sticky"
ROUTING = """
[proxy]
sticky_cookie = "strangler_sticky"
[upstreams.monolith]
url = "http://127.0.0.1:9"
[upstreams.service]
url = "http://127.0.0.1:10"
[capabilities.bysub]
prefixes = ["/a"]
service = "service"
phase = "canary"
canary_percent = 50
sticky_key = "subject"
[capabilities.bycookie]
prefixes = ["/b"]
service = "service"
phase = "canary"
canary_percent = 50
sticky_key = "cookie"
"""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(payload: Any, *, raw: bytes | None = None) -> str:
    body = raw if raw is not None else json.dumps(payload).encode()
    return f"Bearer {_b64(b'{}')}.{_b64(body)}.c2ln"


AUTHORIZATIONS: dict[str, str | None] = {
    "none": None,
    "plain": token({"sub": "42"}),
    "lower-case scheme": token({"sub": "42"}).replace("Bearer", "bearer"),
    "upper-case scheme": token({"sub": "42"}).replace("Bearer", "BEARER"),
    "spaces after the scheme": "Bearer   " + token({"sub": "7"})[7:],
    "unicode": token({"sub": "client-été-😀"}),
    "escaped unicode": token({}, raw=b'{"sub": "caf\\u00e9"}'),
    "lone surrogate": token({}, raw=b'{"sub": "a\\ud800b"}'),
    "numeric sub": token({"sub": 42}),
    "empty sub": token({"sub": ""}),
    "no sub": token({"name": "x"}),
    "array payload": token(["sub"]),
    "null payload": token(None),
    "padded": "Bearer e30." + base64.urlsafe_b64encode(b'{"sub":"pad"}').decode() + ".c2ln",
    "payload not json": token({}, raw=b"not json"),
    "two parts": "Bearer abc.def",
    "four parts": "Bearer a.b.c.d",
    "basic": "Basic dXNlcjpwYXNz",
    "scheme only": "Bearer",
    "last of duplicate keys": token({}, raw=b'{"sub": "first", "sub": "second"}'),
}

COOKIES: dict[str, str | None] = {
    "none": None,
    "alone": f"{COOKIE}=abc",
    "among others": f"a=1; {COOKIE}=abc; b=2",
    "no spaces": f"a=1;{COOKIE}=xyz;b=2",
    "empty value": f"{COOKIE}=",
    "no value": COOKIE,
    "spaces around the name": f"a=1;  {COOKIE} = abc",
    "longer name": f"x{COOKIE}=1",
    "value with equals": f"{COOKIE}=a=b",
    "first of two": f"{COOKIE}=one; {COOKIE}=two",
    "empty then set": f"{COOKIE}=; {COOKIE}=later",
}


# Each capability's key, then the id made up for it (empty when the user had a key).
ANSWER = "\\n".join(
    f"$strangler_{what}_{capability}"
    for capability in ("bysub", "bycookie")
    for what in ("key", "made")
)


@pytest.fixture(scope="module")
def key_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """nginx answering each request with the two capabilities' keys and made-up ids."""
    require_nginx()
    workdir = tmp_path_factory.mktemp("njs-key")
    export = render(
        parse_routing(ROUTING), listen="127.0.0.1:1", js_path=str(workdir / "strangler.js")
    )
    (workdir / "strangler.js").write_text(export.js)
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""
load_module /usr/lib/nginx/modules/ngx_http_js_module.so;
pid nginx.pid;
error_log stderr warn;
events {{}}
http {{
    access_log off;
    client_body_temp_path tmp_body;
    proxy_temp_path tmp_proxy;
    fastcgi_temp_path tmp_fastcgi;
    uwsgi_temp_path tmp_uwsgi;
    scgi_temp_path tmp_scgi;
    js_import strangler_edge from {workdir / "strangler.js"};
    js_var $strangler_made_bysub;
    js_var $strangler_made_bycookie;
    js_set $strangler_key_bysub strangler_edge.key_bysub;
    js_set $strangler_key_bycookie strangler_edge.key_bycookie;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            return 200 "{ANSWER}";
        }}
    }}
}}
"""
    )
    with running_nginx(workdir, conf, port) as nginx, httpx.Client(base_url=nginx.base_url) as c:
        yield c


def proxy_key(sticky_key: str, authorization: str | None, cookie: str | None) -> str | None:
    """The key proxy/forward.py finds for these headers (None: it would make one up)."""
    raw = []
    if authorization is not None:
        raw.append((b"authorization", authorization.encode("latin-1")))
    if cookie is not None:
        raw.append((b"cookie", cookie.encode("latin-1")))
    route = SimpleNamespace(policy=SimpleNamespace(sticky_key=sticky_key))
    keys = Forwarder._known_keys(route, IncomingHeaders.parse(raw), COOKIE)
    return keys[0] if keys else None


@pytest.mark.parametrize("cookie", COOKIES)
@pytest.mark.parametrize("authorization", AUTHORIZATIONS)
def test_the_njs_key_is_the_proxys_key(
    key_server: httpx.Client, authorization: str, cookie: str
) -> None:
    headers = {}
    if AUTHORIZATIONS[authorization] is not None:
        headers["Authorization"] = AUTHORIZATIONS[authorization]
    if COOKIES[cookie] is not None:
        headers["Cookie"] = COOKIES[cookie]
    lines = key_server.get("/", headers=headers).content.split(b"\n")
    for capability, key, made in (("bysub", *lines[0:2]), ("bycookie", *lines[2:4])):
        expected = proxy_key(
            "subject" if capability == "bysub" else "cookie",
            headers.get("Authorization"),
            headers.get("Cookie"),
        )
        if expected is None:
            # Made up, as the proxy would: a fresh 32-hex id, also left for the Set-Cookie.
            assert key == b"cookie:" + made and len(made) == 32, (key, made)
            int(made, 16)
            continue
        assert made == b"", "a key was made up although the user has one"
        # nginx hashes "<capability>:" + these bytes; the proxy, bucket_of(capability, key).
        assert murmur2(capability.encode() + b":" + key) == bucket_of(capability, expected), (
            key,
            expected,
        )
