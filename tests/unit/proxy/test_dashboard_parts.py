"""The dashboard's pure parts: request rates from counter readings, escaping, rendering,
reading the audit log's tail and the sides' lag answers."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.configfile import AuditEntry, RoutingFile
from proxy.dashboard.html import Html, tag
from proxy.dashboard.render import render_live
from proxy.dashboard.routes import _actor
from proxy.dashboard.state import _ask_lag, _phase_view
from proxy.dashboard.tiles import records_tile, relay_tile
from strangler.cli import _dashboard_url
from strangler.phases import Phase


def test_text_is_escaped_and_only_built_markup_passes() -> None:
    hostile = '<img src=x onerror="alert(1)">'
    built = tag("p", hostile, title=hostile, data_x=None, hidden=True)
    assert built == (
        '<p title="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" hidden>'
        '&lt;img src=x onerror="alert(1)"&gt;</p>'
    )
    assert tag("div", built, [1, None, 2.5]) == f"<div>{built}12.5</div>"
    assert isinstance(built, Html) and not isinstance(str(hostile), Html)


def _state(reason: str, diff: str) -> dict[str, object]:
    cap = {
        **_phase_view("products", Phase.SHADOW),
        "reads": "monolith",
        "writes": "monolith",
        "canary_percent": 0.0,
        "shadow_percent": 100.0,
        "requests": {"measuring": True, "window_seconds": None, "sides": {}},
        "shadow": {
            "compared": 10,
            "mismatched": 1,
            "mismatch_rate": 0.1,
            "samples": [
                {
                    "at": time.time(),
                    "request": "GET /products/1",
                    "primary": {"side": "monolith", "status": 200},
                    "shadow": {"side": "service", "status": 200},
                    "diff": diff,
                }
            ],
        },
        "relay": {"monolith_to_service": {"active": True, "error": "unreachable"}},
        "reconcile": None,
        "backfill": None,
        "breakers": {"monolith": {"upstream": "monolith", "state": "open", "times_opened": 1}},
        "fence": {"closed": False, "last_pause_ms": None},
    }
    return {
        "config_version": 3,
        "last_reload_error": None,
        "relay_known": True,
        "capabilities": {"products": cap},
        "audit": [
            {
                "at": "2026-01-01T00:00:00Z",
                "capability": "products",
                "old": {"phase": "backfilled"},
                "new": {"phase": "shadow"},
                "who": "dashboard@127.0.0.1",
                "reason": reason,
            }
        ],
    }


def test_diffs_and_reasons_from_elsewhere_render_as_text_never_as_markup() -> None:
    page = render_live(
        _state(reason="<script>steal()</script>", diff='-  "name": "<b onclick=x>mug</b>"')
    )
    assert "<script>" not in page and "<b onclick" not in page
    assert "&lt;script&gt;steal()&lt;/script&gt;" in page
    assert "&lt;b onclick=x&gt;mug&lt;/b&gt;" in page
    assert 'data-phase="shadow"' in page and 'data-to="backfilled"' in page
    assert '<span class="value bad" data-testid="breaker-monolith">open</span>' in page
    assert "<code>strangler status</code>" in page  # the runbook's commands


def test_up_prints_a_one_click_url_only_for_a_token_it_keeps_in_a_file() -> None:
    kept = _dashboard_url("http://127.0.0.1:8000", "s3cret", "var/admin-token", terminal=True)
    assert kept.startswith("http://127.0.0.1:8000/_strangler/dashboard#token=s3cret ")
    given = _dashboard_url(
        "http://127.0.0.1:8000", "s3cret", "STRANGLER_ADMIN_TOKEN", terminal=True
    )
    assert "s3cret" not in given and "$STRANGLER_ADMIN_TOKEN" in given


def test_up_keeps_the_token_out_of_output_that_is_not_a_terminal() -> None:
    logged = _dashboard_url("http://127.0.0.1:8000", "s3cret", "var/admin-token", terminal=False)
    assert "s3cret" not in logged
    assert logged.startswith("http://127.0.0.1:8000/_strangler/dashboard ")
    assert "var/admin-token" in logged  # where to find it


def _audit(tmp_path: Path, count: int) -> RoutingFile:
    routing = RoutingFile(tmp_path / "routing.toml", tmp_path / "audit.jsonl")
    for n in range(count):
        routing.audit(AuditEntry(f"tester-{n}", "admin_change", "products", {}, {"n": n}))
    return routing


def test_the_audit_tail_skips_a_half_written_last_line(tmp_path: Path) -> None:
    routing = _audit(tmp_path, 3)
    with routing.audit_log.open("a") as log:
        log.write('{"at": "2026-01-01T00:00:00Z", "who": "writ')  # an append in progress
    assert [e["who"] for e in routing.audit_tail(2)] == ["tester-1", "tester-2"]
    assert [e["who"] for e in routing.audit_tail(15)] == ["tester-0", "tester-1", "tester-2"]
    with routing.audit_log.open("a") as log:
        log.write('ten"}\n[1, 2]\nnot json\n\xff\xfe\n')  # finished, then damage
    assert [e["who"] for e in routing.audit_tail(2)] == ["tester-2", "written"]


def test_the_audit_tail_reads_only_the_end_of_a_long_log(tmp_path: Path) -> None:
    routing = _audit(tmp_path, 0)
    line = json.dumps({"who": "x" * 200}) + "\n"
    routing.audit_log.write_text(
        line * 2000 + "".join(json.dumps({"who": f"last-{n}"}) + "\n" for n in range(300))
    )
    assert routing.audit_log.stat().st_size > 400_000
    assert [e["who"] for e in routing.audit_tail(3)] == ["last-297", "last-298", "last-299"]
    many = routing.audit_tail(1000)  # across several blocks, each line whole
    assert len(many) == 1000 and many[-1]["who"] == "last-299" and many[0]["who"] == "x" * 200
    assert routing.audit_tail(0) == [] and _audit(tmp_path / "none", 0).audit_tail(5) == []


def _lag_from(answer: httpx.Response | Exception) -> dict[str, Any]:
    def side(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def ask() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(side)) as client:
            return await _ask_lag(client, "http://side/internal/sync/products/lag")

    return asyncio.run(ask())


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, content=b"<html>gateway</html>"),
        httpx.Response(200, content=b"\xff\xfe not utf-8"),
        httpx.Response(200, json=[1, 2, 3]),
        httpx.Response(200, json={"pending": "lots", "dead_letters": 0}),
        httpx.Response(200, json={"pending": 1, "dead_letters": None}),
        httpx.Response(200, json={"pending": True, "dead_letters": 0}),
        httpx.Response(200, json={"pending": -1, "dead_letters": 0}),
        httpx.Response(200, json={"pending": 1, "dead_letters": 0, "oldest_age_seconds": "1h"}),
        httpx.Response(
            200, content=b'{"pending": 1, "dead_letters": 0, "oldest_age_seconds": NaN}'
        ),
        httpx.Response(200, json={"dead_letters": 0}),
    ],
    ids=[
        "html",
        "not-utf8",
        "list",
        "text-count",
        "null-count",
        "bool",
        "negative",
        "text-age",
        "nan-age",
        "missing",
    ],
)
def test_a_side_answering_garbage_is_shown_as_such(answer: httpx.Response) -> None:
    assert _lag_from(answer) == {"error": "answered something else than its lag"}


def test_a_side_that_breaks_the_protocol_or_fails_is_shown_as_such() -> None:
    broken = _lag_from(httpx.DecodingError("bad gzip"))
    assert broken == {"error": "answered something unreadable (DecodingError)"}
    assert _lag_from(httpx.ConnectError("refused")) == {"error": "unreachable"}
    assert _lag_from(httpx.ReadTimeout("slow")) == {"error": "no answer within 1 s"}
    assert _lag_from(httpx.Response(503)) == {"error": "answered 503"}
    good = _lag_from(
        httpx.Response(200, json={"pending": 2, "dead_letters": 0, "oldest_age_seconds": 1})
    )
    assert good == {"pending": 2, "oldest_age_seconds": 1.0, "dead_letters": 0}


@pytest.mark.parametrize("odd", [None, "soon", float("nan"), [1]])
def test_tiles_show_unknown_for_figures_that_are_not_numbers(odd: object) -> None:
    relay = relay_tile(
        {
            "monolith_to_service": {"pending": odd, "oldest_age_seconds": odd, "dead_letters": 0},
            "service_to_monolith": {"pending": 0, "oldest_age_seconds": None, "dead_letters": odd},
        }
    )
    assert ">unknown<" in relay and "oldest unknown" in relay
    assert "nothing waiting · unknown dead letters" in relay
    records = records_tile({"at": "yesterday", "agree": False, "differences": odd}, None, 0.0)
    assert ">unknown<" in records and "yesterday" in records


def test_the_audit_names_the_operator_behind_a_dashboard_step() -> None:
    assert _actor("alice@203.0.113.9") == "dashboard:alice@203.0.113.9"
    long = _actor("x" * 200 + "\u00e9\n@2001:db8::1")
    assert len(long) == 100 and long.endswith("x@2001:db8::1") and long.isascii()
