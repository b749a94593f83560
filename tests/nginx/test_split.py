"""The sticky split is nginx's split_clients, hash and arithmetic, so both edges agree."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from proxy.decision import BUCKETS, CapabilityPolicy, bucket_of, canary_threshold, decide
from strangler.phases import Phase, Side
from strangler.split import murmur2, percent_text, split_threshold, sticky_hash
from tests.nginx.nginx_process import require_nginx, running_nginx
from tests.support.processes import free_port

# ngx_murmur_hash2 (nginx's src/core/ngx_murmurhash.c) compiled from its source, run on these.
NGINX_MURMUR2 = {
    b"": 0,
    b"a": 2456313694,
    b"ab": 446775395,
    b"abc": 324500635,
    b"abcd": 646393889,
    b"abcde": 1594468574,
    b"hello, world": 1263312256,
    "été".encode(): 3166621950,
    b"products:sub:42": 1048763248,
    b"products:cookie:0123456789abcdef0123456789abcdef": 224766462,
}


@pytest.mark.parametrize(("data", "expected"), NGINX_MURMUR2.items())
def test_murmur2_is_nginx_murmur_hash2(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_the_proxy_bucket_hashes_capability_colon_key() -> None:
    assert bucket_of("products", "sub:42") == NGINX_MURMUR2[b"products:sub:42"]
    assert BUCKETS == 2**32
    assert bucket_of("products", "sub:42") != bucket_of("orders", "sub:42")


def test_a_subject_with_a_lone_surrogate_hashes_as_njs_hands_it_to_nginx() -> None:
    # njs turns a lone surrogate into U+FFFD; the proxy must neither fail nor differ.
    assert sticky_hash("products", "sub:a\ud800b") == murmur2("products:sub:a\ufffdb".encode())


@pytest.mark.parametrize(
    ("percent", "text", "threshold"),
    [
        (0.01, "0.01%", 1 * 0xFFFFFFFF // 10_000),
        (12.5, "12.50%", 1250 * 0xFFFFFFFF // 10_000),
        (33.333, "33.33%", 3333 * 0xFFFFFFFF // 10_000),  # nginx reads two decimals
        (50, "50.00%", 5000 * 0xFFFFFFFF // 10_000),
        (99.99, "99.99%", 9999 * 0xFFFFFFFF // 10_000),
    ],
)
def test_thresholds_follow_split_clients_arithmetic(
    percent: float, text: str, threshold: int
) -> None:
    assert percent_text(percent) == text
    assert split_threshold(percent) == canary_threshold(percent) == threshold


def test_zero_and_hundred_percent_take_nobody_and_everybody() -> None:
    assert split_threshold(0) == 0
    assert split_threshold(100) == BUCKETS  # nginx's own boundary would leave out 0xffffffff
    policy = CapabilityPolicy.build("products", Phase.CANARY, 100, 0, False, "subject")
    assert decide(policy, "GET", "sub:anyone").primary is Side.SERVICE


PERCENTS = [0.01, 12.5, 33.33, 50, 99.99]


def test_nginx_split_clients_puts_every_key_where_the_proxy_does(tmp_path: Path) -> None:
    require_nginx()
    port = free_port()
    splits = "\n".join(
        f'    split_clients "$arg_k" $side{n} {{ {percent_text(p)} S; * M; }}'
        for n, p in enumerate(PERCENTS)
    )
    sides = " ".join(f"$side{n}" for n in range(len(PERCENTS)))
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""
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
{splits}
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "{sides}"; }}
    }}
}}
"""
    )
    # Keys as the proxy builds them (capability:sub:subject, capability:cookie:hex); $arg_k is
    # the raw query, so they are written without characters that would need escaping.
    keys = [f"products:sub:user-{n}" for n in range(300)]
    keys += [f"products:cookie:{n:032x}" for n in range(0, 300 * 7919, 7919)]
    with running_nginx(tmp_path, conf, port) as nginx, httpx.Client(base_url=nginx.base_url) as c:
        differ = []
        for key in keys:
            got = c.get(f"/?k={key}").text.split()
            capability, _, user = key.partition(":")
            want = [
                "S" if bucket_of(capability, user) < canary_threshold(p) else "M" for p in PERCENTS
            ]
            if got != want:
                differ.append((key, got, want))
    assert not differ, differ[:5]
