"""Request ids, trace ids, structured log lines and the apps' metrics, with tracing off (the
default): the ids must still reach every log line and every outgoing call."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import MetaData

from strangler.db import Sessions, create_db_engine
from strangler.observability.context import request_id, trace_ids
from strangler.observability.logs import ContextFilter, TextFormatter
from strangler.observability.outgoing import propagate_context
from strangler.observability.tracing import parse_traceparent, start_span
from strangler.sync.relay import Relay
from strangler.sync.relay_metrics import RelayCollector
from strangler.sync.tables import sync_tables
from tests.support.databases import BACKENDS, database
from tests.support.factories import product_body
from tests.support.processes import RunningApp, monolith_env, run_monolith_command, serve_monolith
from tests.support.waiting import eventually

TOKEN = "observability-sync-token"
METRICS_TOKEN = "observability-metrics-token"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


@dataclass
class Served:
    client: httpx.Client
    app: RunningApp
    database_url: str

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.app.log_text().splitlines() if line]

    def access_line(self, request_id: str) -> dict[str, Any]:
        """The one access line of `request_id`, waited for: it is written after the answer."""

        def the_line() -> dict[str, Any]:
            found = [
                x
                for x in self.log_lines()
                if x["logger"] == "strangler.access" and x["request_id"] == request_id
            ]
            assert len(found) == 1, found
            return found[0]

        return eventually(the_line, f"the access line of {request_id}", timeout=5)


@pytest.fixture(scope="module", params=BACKENDS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A real monolith process in phase dual_write, logging JSON lines, tracing off."""
    workdir = tmp_path_factory.mktemp("observed")
    with database(request.param, workdir) as url:
        yield from _serve(workdir, url)


def _serve(workdir: Path, url: str) -> Iterator[Served]:
    (workdir / "routing.toml").write_text('[capabilities.products]\nphase = "dual_write"\n')
    env = {
        **monolith_env(url, workdir),
        "MONOLITH_SYNC_TOKEN": TOKEN,
        "MONOLITH_METRICS_TOKEN": METRICS_TOKEN,
        "STRANGLER_LOG_FORMAT": "json",
        "STRANGLER_TRACES_EXPORTER": "none",
    }
    run_monolith_command(env, "migrate")
    with serve_monolith(env, workdir) as app, httpx.Client(base_url=app.base_url) as client:
        yield Served(client, app, url)


def _token(client: httpx.Client) -> dict[str, str]:
    body = {"email": f"{uuid.uuid4().hex}@example.com", "password": "s3cret-pass", "name": "O"}
    assert client.post("/users/register", json=body).status_code == 201
    login = client.post("/users/login", json={"email": body["email"], "password": "s3cret-pass"})
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def test_every_access_line_carries_the_request_id_and_the_callers_trace_id(
    served: Served,
) -> None:
    rid = f"req-{uuid.uuid4().hex}"
    answer = served.client.get("/health", headers={"X-Request-ID": rid, "traceparent": CALLER})
    assert answer.headers["x-request-id"] == rid
    line = served.access_line(rid)
    assert line["trace_id"] == CALLER_TRACE and line["service"] == "monolith"
    assert line["span_id"] != "00f067aa0ba902b7"  # this hop's own span, under the caller's
    assert line["http"] == {  # type: ignore[comparison-overlap]
        "method": "GET",
        "target": "/health",
        "route": "/health",
        "status": 200,
        "duration_ms": line["http"]["duration_ms"],  # type: ignore[index]
    }


def test_a_request_without_ids_gets_new_ones_and_a_bad_id_is_replaced(served: Served) -> None:
    first = served.client.get("/health")
    forged = served.client.get("/health", headers={"X-Request-ID": 'x {"level": "ERROR"}'})
    assert "{" not in forged.headers["x-request-id"]
    lines = [served.access_line(r.headers["x-request-id"]) for r in (first, forged)]
    assert len({x["trace_id"] for x in lines}) == 2  # each a trace of its own
    assert all(len(str(x["trace_id"])) == 32 for x in lines)
    every = served.log_lines()  # and every line of the process is one JSON object with the ids
    assert every and all({"ts", "level", "request_id", "trace_id"} <= x.keys() for x in every)


def test_metrics_need_a_token_and_the_metrics_token_opens_nothing_else(served: Served) -> None:
    missing = served.client.get("/internal/metrics")
    wrong = served.client.get("/internal/metrics", headers={"Authorization": "Bearer nope"})
    basic = served.client.get("/internal/metrics", headers={"Authorization": f"Basic {TOKEN}"})
    for refused in (missing, wrong, basic):
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert "strangler_http_requests" not in refused.text
    for token in (METRICS_TOKEN, TOKEN):
        scraped = served.client.get(
            "/internal/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        assert scraped.status_code == 200 and "strangler_http_requests" in scraped.text
    # A scraper's token is no key to the sync API, which writes rows.
    sync = served.client.get(
        "/internal/sync/products/lag", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert sync.status_code == 401


def test_a_line_break_in_a_path_cannot_forge_a_log_line(served: Served) -> None:
    rid = f"req-{uuid.uuid4().hex}"
    served.client.get("/health%0A2026-01-01 ERROR forged%E2%80%A8x", headers={"X-Request-ID": rid})
    line = served.access_line(rid)
    assert line["http"]["target"] == "/health%0A2026-01-01%20ERROR%20forged%E2%80%A8x"
    record = logging.LogRecord("strangler.access", 20, "", 0, "GET %s 404", ("/a\nB\u2028C",), None)
    ContextFilter("monolith").filter(record)
    text = TextFormatter().format(record)
    assert "\n" not in text and "\u2028" not in text
    assert "GET /a\\x0aB\\u2028C 404" in text


def _scrape(served: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    scraped = served.client.get("/internal/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert scraped.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped.text)
        for s in family.samples
    }


def test_metrics_count_requests_by_route_and_show_the_outbox_and_the_pool(
    served: Served,
) -> None:
    route = (("method", "GET"), ("route", "/products/{product_id}"))
    ok, missing = (*route, ("status", "200")), (*route, ("status", "404"))
    entity = (("entity", "products"),)
    before = _scrape(served)
    headers = _token(served.client)
    created = served.client.post("/products", json=product_body(), headers=headers)
    assert created.status_code == 201, created.text
    for _ in range(3):
        served.client.get(f"/products/{created.json()['id']}")
    served.client.get("/products/999999")
    samples = _scrape(served)

    def grew(key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
        return samples[key] - before.get(key, 0.0)

    assert grew(("strangler_http_requests_total", ok)) == 3
    assert grew(("strangler_http_requests_total", missing)) == 1
    assert grew(("strangler_http_request_seconds_count", route)) == 4
    # In dual_write the create put one event in the outbox; no relay runs here.
    assert grew(("strangler_outbox_pending", entity)) == 1
    assert samples[("strangler_relay_lag_seconds", entity)] > 0
    assert samples[("strangler_dead_letters", entity)] == 0
    assert ("strangler_db_pool_connections_in_use", ()) in samples


def test_the_outbox_keeps_the_writes_trace_context(served: Served) -> None:
    headers = _token(served.client)
    created = served.client.post(
        "/products", json=product_body(), headers={**headers, "traceparent": CALLER}
    )
    assert created.status_code == 201
    engine = create_db_engine(served.database_url)
    try:
        tables = sync_tables(MetaData(), "products")
        with Sessions(engine).read() as session:
            (row,) = (
                session.execute(
                    tables.outbox.select().where(tables.outbox.c.entity_key == created.json()["id"])
                )
                .mappings()
                .all()
            )
    finally:
        engine.dispose()
    stored = parse_traceparent(row["trace_context"])
    assert stored is not None and f"{stored.trace_id:032x}" == CALLER_TRACE


def test_outgoing_calls_carry_the_trace_and_the_request_id() -> None:
    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(204))
    span = start_span("work", parent=parse_traceparent(CALLER))
    from opentelemetry import context, trace

    with httpx.Client(transport=transport, event_hooks={"request": [propagate_context]}) as c:
        c.get("http://side/outside-any-request")
        token = context.attach(trace.set_span_in_context(span))
        rid = request_id.set("req-7")
        try:
            c.get("http://side/inside")
        finally:
            request_id.reset(rid)
            context.detach(token)
    outside, inside = seen
    assert "traceparent" not in outside.headers and "x-request-id" not in outside.headers
    sent = parse_traceparent(inside.headers["traceparent"])
    assert sent is not None and f"{sent.trace_id:032x}" == CALLER_TRACE
    assert inside.headers["x-request-id"] == "req-7"


def test_text_lines_end_with_the_ids() -> None:
    record = logging.LogRecord("strangler.relay", logging.WARNING, "", 0, "slow %s", ("x",), None)
    ids = trace_ids.set((CALLER_TRACE, "00f067aa0ba902b7"))
    rid = request_id.set("req-9")
    try:
        ContextFilter("relay").filter(record)
    finally:
        trace_ids.reset(ids)
        request_id.reset(rid)
    text = TextFormatter().format(record)
    assert "relay strangler.relay: slow x" in text
    assert text.endswith(f"[request_id=req-9 trace_id={CALLER_TRACE}]")


def test_the_relay_metrics_report_its_counters_and_the_outbox(served: Served) -> None:
    served.client.post("/products", json=product_body(), headers=_token(served.client))
    engine = create_db_engine(served.database_url)
    try:
        tables = sync_tables(MetaData(), "products")
        with Sessions(engine).read() as session:
            waiting = len(
                session.execute(
                    tables.outbox.select().where(tables.outbox.c.delivered_at.is_(None))
                ).all()
            )
        relay = Relay(engine, tables, "products", target=None)  # type: ignore[arg-type]
        relay.stats.delivered, relay.stats.failures = 12, 2
        families = {f.name: f for f in RelayCollector("products", lambda: relay).collect()}
    finally:
        engine.dispose()
    assert waiting >= 1
    assert families["strangler_relay_delivered"].samples[0].value == 12
    assert families["strangler_relay_failures"].samples[0].value == 2
    assert families["strangler_relay_pending"].samples[0].value == waiting
    assert families["strangler_relay_lag_seconds"].samples[0].value > 0
    nothing = {f.name: f.samples for f in RelayCollector("products", lambda: None).collect()}
    assert nothing["strangler_relay_delivered"] == []  # before the relay starts: no figures
