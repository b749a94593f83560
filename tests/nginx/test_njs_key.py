"""The exported njs module computes each user's sticky key exactly as the Python proxy does.

The module of a real export runs in Debian's nginx; each case's key (the bytes nginx will
hash) is compared with what proxy/forward.py's `_known_keys` finds for the
same header bytes. Beside the everyday tokens and cookies, the cases hold what the two
languages would read differently without a shared rule (proxy/decision.py's docstring):
invalid UTF-8, a BOM, non-strict JSON, deep nesting, odd whitespace, bytes outside ASCII,
keys over the 256-byte limit.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from proxy.decision import CapabilityPolicy, bucket_of
from proxy.forward import Forwarder
from proxy.headers import IncomingHeaders
from strangler.nginx_export import render
from strangler.nginx_routing import parse_routing
from strangler.phases import Phase
from strangler.split import KEY_BYTES_LIMIT, key_bytes, murmur2
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


def nested(depth: int) -> str:
    """A token whose payload nests `depth` arrays and objects deep (its own object is one)."""
    inner = "[" * (depth - 1) + "]" * (depth - 1)
    return token({}, raw=b'{"sub": "deep", "a": ' + inner.encode() + b"}")


def latin1(data: bytes) -> str:
    """Header bytes as the str both sides are given here (each byte one character)."""
    return data.decode("latin-1")


def segment(sub: str) -> str:
    """A payload segment holding just `sub`."""
    return _b64(json.dumps({"sub": sub}).encode())


TILDES = segment("~~~")  # base64url with '-': its standard-alphabet twin has '+'

# Everyday tokens: each is crossed with every cookie of COOKIES.
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

# Tokens the two languages would read differently without a shared rule: each is crossed
# with no cookie and with one, so that "no subject" shows as the cookie's key.
ODD_AUTHORIZATIONS: dict[str, str] = {
    # UTF-8: strict on both sides (njs would put U+FFFD for a bad byte, Python refuses)
    "payload not UTF-8": token({}, raw=b'{"sub": "caf\xe9"}'),
    "payload with a UTF-8 BOM": token({}, raw=b'\xef\xbb\xbf{"sub": "bom"}'),
    "payload in UTF-16": token({}, raw='{"sub": "u16"}'.encode("utf-16")),
    "an encoded surrogate": token({}, raw=b'{"sub": "a\xed\xa0\x80b"}'),
    "an overlong encoding": token({}, raw=b'{"sub": "a\xc0\xafb"}'),
    # JSON: strict on both sides (Python takes NaN, njs takes 01, .5 and 1.)
    "NaN": token({}, raw=b'{"sub": "nan", "x": NaN}'),
    "-Infinity": token({}, raw=b'{"sub": "inf", "x": -Infinity}'),
    "a leading zero": token({}, raw=b'{"sub": "lz", "x": [1, 01]}'),
    "a negative leading zero": token({}, raw=b'{"sub": "nlz", "x": -01}'),
    "a trailing dot": token({}, raw=b'{"sub": "td", "x": 1.}'),
    "a leading dot": token({}, raw=b'{"sub": "ld", "x": .5}'),
    "a negative leading dot": token({}, raw=b'{"sub": "nld", "x": -.5}'),
    "a dot before the exponent": token({}, raw=b'{"sub": "de", "x": 1.e5}'),
    "lax numbers inside strings": token({}, raw=b'{"sub": "01 .5 1.", "x": "-.5\\" 01"}'),
    "strict numbers": token({}, raw=b'{"sub": "num", "x": [0, -0, 1.5, -2e-3, 1E+9, 10]}'),
    "a 5000-digit integer": token({}, raw=b'{"sub": "big", "x": ' + b"1" * 5000 + b"}"),
    "whitespace around the JSON": token({}, raw=b' \n{"sub": "ws"}\r\n\t'),
    "a vertical tab before the JSON": token({}, raw=b'\x0b{"sub": "vt"}'),
    "trailing data": token({}, raw=b'{"sub": "td"} x'),
    "sub only in a nested object": token({"a": {"sub": "inner"}}),
    "sub under __proto__": token({}, raw=b'{"__proto__": {"sub": "proto"}}'),
    "NUL and newline in sub": token({}, raw=b'{"sub": "a\\u0000b\\nc"}'),
    # nesting: njs's JSON.parse stops at 32 levels, Python's at hundreds
    "nested 31 deep": nested(31),
    "nested 32 deep": nested(32),
    "brackets in strings": token({"sub": "[[[", "a": ["{" * 40, "]" * 40, '\\"[' * 20]}),
    "nested 2000 deep": token({}, raw=b"[" * 2000 + b"]" * 2000),
    # base64url: only its alphabet (njs stops at a bad character, Python skipped it)
    "a character outside base64": f"Bearer e30.{segment('bang')}!.c2ln",
    "the standard alphabet": f"Bearer e30.{TILDES.replace('-', '+')}.c2ln",
    "the url-safe alphabet": f"Bearer e30.{TILDES}.c2ln",
    "a length of 1 mod 4": f"Bearer e30.{segment('bang')}A.c2ln",  # 4n + 1 characters
    "over-padded": f"Bearer e30.{segment('pad')}===.c2ln",
    # whitespace: only spaces and tabs are trimmed (str.strip and trim() differ on others)
    "tabs around the token": "Bearer \t" + token({"sub": "tab"})[7:] + "\t",
    "a tab for the space": token({"sub": "t"}).replace("Bearer ", "Bearer\t"),
    "\\x1c before the token": "Bearer \x1c" + token({"sub": "fs"})[7:],
    "\\x1c inside the payload": f"Bearer e30.\x1c{segment('fs')}.c2ln",
    "NBSP after the token": latin1(b"Bearer e30." + _b64(b'{"sub":"nb"}').encode() + b"\xa0"),
    "bytes outside ASCII in the signature": latin1(
        b"Bearer e30." + _b64(b'{"sub":"sig"}').encode() + b".\xff\xc3\xa9"
    ),
    # the length limit, in UTF-8 bytes
    "sub of 256 bytes": token({"sub": "s" * KEY_BYTES_LIMIT}),
    "sub of 257 bytes": token({"sub": "s" * (KEY_BYTES_LIMIT + 1)}),
    "sub of 256 bytes in 128 characters": token({"sub": "é" * 128}),
    "sub of 257 bytes in 129 characters": token({"sub": "é" * 128 + "s"}),
    "sub of 256 bytes with lone surrogates": token({}, raw=b'{"sub": "' + b"\\ud800" * 85 + b's"}'),
    "sub of 258 bytes with lone surrogates": token({}, raw=b'{"sub": "' + b"\\ud800" * 86 + b'"}'),
    "sub of 32 KiB": token({"sub": "s" * 24_000}),
}

# Everyday cookies: each is crossed with every token of AUTHORIZATIONS. A list is the
# request's Cookie header fields, in order.
COOKIES: dict[str, list[str]] = {
    "none": [],
    "alone": [f"{COOKIE}=abc"],
    "among others": [f"a=1; {COOKIE}=abc; b=2"],
    "no spaces": [f"a=1;{COOKIE}=xyz;b=2"],
    "empty value": [f"{COOKIE}="],
    "no value": [COOKIE],
    "spaces around the name": [f"a=1;  {COOKIE} = abc"],
    "longer name": [f"x{COOKIE}=1"],
    "value with equals": [f"{COOKIE}=a=b"],
    "first of two": [f"{COOKIE}=one; {COOKIE}=two"],
    "empty then set": [f"{COOKIE}=; {COOKIE}=later"],
}

# Cookies the two languages would read differently without a shared rule: crossed with no
# token and with one.
ODD_COOKIES: dict[str, list[str]] = {
    "a byte outside ASCII": [latin1(f"{COOKIE}=caf\xe9".encode("latin-1"))],
    "UTF-8 outside ASCII": [latin1(f"{COOKIE}=café".encode())],
    "a byte outside ASCII in another cookie": [latin1(b"a=\xe9; " + f"{COOKIE}=ok".encode())],
    "UTF-8 in another cookie": [latin1("a=é; ".encode() + f"{COOKIE}=ok".encode())],
    "a space inside the value": [f"{COOKIE}=a b"],
    "a quoted value": [f'{COOKIE}="quoted"'],
    "tabs around": [f"a=1;\t{COOKIE}=tab\t;b=2"],
    "\\x1c around": [f"a=1;\x1c{COOKIE}=fs\x1c"],
    "\\x1f after the value": [f"{COOKIE}=us\x1f; b=2"],
    "\\x85 after the value": [latin1(f"{COOKIE}=nel".encode() + b"\x85")],
    "NBSP before the name": [latin1(b"a=1;\xa0" + f"{COOKIE}=nb".encode())],
    "value of 256 bytes": [f"{COOKIE}=" + "v" * KEY_BYTES_LIMIT],
    "value of 257 bytes": [f"{COOKIE}=" + "v" * (KEY_BYTES_LIMIT + 1)],
    "value of 257 bytes, then a short one": [f"{COOKIE}={'v' * 257}; {COOKIE}=short"],
    "value of 8 KiB": [f"{COOKIE}=" + "v" * 8192],
    "two Cookie fields, the cookie in the second": ["a=1", f"{COOKIE}=second"],
    "two Cookie fields, the cookie in both": [f"{COOKIE}=first", f"{COOKIE}=second"],
}

CASES = [
    *((a, c) for a in AUTHORIZATIONS for c in COOKIES),
    *((a, c) for a in ODD_AUTHORIZATIONS for c in ("none", "alone")),
    *((a, c) for a in ("none", "plain") for c in ODD_COOKIES),
]
ALL_AUTHORIZATIONS = {**AUTHORIZATIONS, **ODD_AUTHORIZATIONS}
ALL_COOKIES = {**COOKIES, **ODD_COOKIES}

# Each capability's key, then the id made up for it (empty when the user had a key), as the
# bytes nginx holds; a key may hold any byte, newlines included, but not this separator.
SEPARATOR = "<|>"
ANSWER = SEPARATOR.join(
    f"$strangler_{what}_{capability}"
    for capability in ("bysub", "bycookie")
    for what in ("key", "made")
)


@pytest.fixture(scope="module")
def key_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """nginx answering each request with the two capabilities' keys and made-up ids; its port."""
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
    large_client_header_buffers 4 64k;
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
    with running_nginx(workdir, conf, port):
        yield port


def get_keys(port: int, headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The harness's answer to a GET with these header fields, sent byte for byte (an HTTP
    client library would refuse some of the odd ones)."""
    fields = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    request = b"GET / HTTP/1.1\r\nHost: keys\r\nConnection: close\r\n" + fields + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), answer[:500]
    return body.split(SEPARATOR.encode())


def proxy_key(sticky_key: str, authorization: str | None, cookies: list[str]) -> str | None:
    """The key proxy/forward.py finds for these headers (None: it would make one up)."""
    raw = []
    if authorization is not None:
        raw.append((b"authorization", authorization.encode("latin-1")))
    raw += [(b"cookie", cookie.encode("latin-1")) for cookie in cookies]
    policy = CapabilityPolicy.build("x", Phase.CANARY, 50, 0, False, sticky_key)
    keys = Forwarder._known_keys(
        SimpleNamespace(policy=policy),  # type: ignore[arg-type]
        IncomingHeaders.parse(raw),
        COOKIE,
    )
    return keys[0] if keys else None


@pytest.mark.parametrize(("authorization", "cookie"), CASES)
def test_the_njs_key_is_the_proxys_key(key_server: int, authorization: str, cookie: str) -> None:
    header = ALL_AUTHORIZATIONS[authorization]
    cookies = ALL_COOKIES[cookie]
    headers = [(b"Cookie", value.encode("latin-1")) for value in cookies]
    if header is not None:
        headers.insert(0, (b"Authorization", header.encode("latin-1")))
    values = get_keys(key_server, headers)
    for capability, key, made in (("bysub", *values[0:2]), ("bycookie", *values[2:4])):
        expected = proxy_key("subject" if capability == "bysub" else "cookie", header, cookies)
        if expected is None:
            # Made up, as the proxy would: a fresh 32-hex id, also left for the Set-Cookie.
            assert key == b"cookie:" + made and len(made) == 32, (capability, key, made)
            int(made, 16)
            continue
        assert made == b"", f"{capability}: a key was made up although the user has {expected!r}"
        # The same bytes, so the same bucket: nginx hashes "<capability>:" + them.
        assert key == key_bytes(expected), (capability, key, expected)
        assert murmur2(capability.encode() + b":" + key) == bucket_of(capability, expected)


def test_the_odd_cases_hold_both_outcomes() -> None:
    """The odd cases are not all refused alike: each rule has cases on both of its sides."""
    subjects = {
        name: proxy_key("subject", header, []) for name, header in ODD_AUTHORIZATIONS.items()
    }
    read = {name for name, key in subjects.items() if key is not None}
    assert {
        "nested 31 deep",
        "strict numbers",
        "a 5000-digit integer",
        "lax numbers inside strings",
        "whitespace around the JSON",
        "brackets in strings",
        "the url-safe alphabet",
        "over-padded",
        "tabs around the token",
        "\\x1c before the token",
        "bytes outside ASCII in the signature",
        "sub of 256 bytes",
        "sub of 256 bytes in 128 characters",
        "sub of 256 bytes with lone surrogates",
    } <= read
    assert not read & {"payload not UTF-8", "payload with a UTF-8 BOM", "NaN", "nested 32 deep"}
    cookies = {name: proxy_key("cookie", None, value) for name, value in ODD_COOKIES.items()}
    assert cookies["value of 256 bytes"] == "cookie:" + "v" * KEY_BYTES_LIMIT
    assert cookies["tabs around"] == "cookie:tab"
    assert cookies["a byte outside ASCII in another cookie"] == "cookie:ok"
    assert cookies["a quoted value"] == 'cookie:"quoted"'
    absent = [
        "value of 257 bytes",
        "a byte outside ASCII",
        "\\x1c around",
        "a space inside the value",
    ]
    assert [name for name in absent if cookies[name] is not None] == []
