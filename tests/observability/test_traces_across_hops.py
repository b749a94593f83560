"""One trace id leads through every hop: the proxy, the monolith, the outbox and the relay,
and the apply on the service; and a read the proxy sends to the service.

Real processes on loopback, tracing with the console exporter (spans as JSON log lines) and
JSON logs, as `STRANGLER_TRACES_EXPORTER=console STRANGLER_LOG_FORMAT=json strangler up` runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.proxy.conftest import Proxy, routing_document, run_proxy
from tests.support.databases import BACKENDS, database
from tests.support.factories import new_account, product_body
from tests.support.waiting import eventually
from tests.sync.conftest import SyncSystem, sync_system

Span = dict[str, Any]


def _lines(log: Path, *, strict: bool) -> list[dict[str, Any]]:
    """The JSON lines of a process's log; with `strict`, every line must be one."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            found.append(json.loads(line))
        except ValueError:
            assert not strict, f"{log.name}: a log line that is not JSON: {line!r}"
    return found


def _spans(lines: list[dict[str, Any]], trace_id: str) -> list[dict[str, Any]]:
    return [
        line["span"]
        for line in lines
        if line.get("logger") == "strangler.spans" and line["span"]["trace_id"] == trace_id
    ]


def _access(lines: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    matches = [
        line
        for line in lines
        if line.get("logger") == "strangler.access" and line.get("request_id") == request_id
    ]
    assert len(matches) == 1, f"access lines for {request_id}: {matches}"  # (retried while 0)
    return matches[0]


@pytest.fixture(params=BACKENDS)
def traced(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[SyncSystem, Proxy]]:
    backend: str = request.param
    monkeypatch.setenv("STRANGLER_TRACES_EXPORTER", "console")
    monkeypatch.setenv("STRANGLER_LOG_FORMAT", "json")
    with (
        database(backend, tmp_path / "m") as monolith_db,
        database(backend, tmp_path / "s") as service_db,
        sync_system(backend, tmp_path, monolith_db, service_db) as system,
        run_proxy(
            tmp_path,
            routing_document(system.monolith.base_url, system.service.base_url),
            PROXY_SYNC_TOKEN="test-sync-token",
        ) as proxy,
    ):
        yield system, proxy


def test_one_trace_id_leads_from_the_proxy_through_the_relay_to_the_service(
    traced: tuple[SyncSystem, Proxy],
) -> None:
    system, proxy = traced
    proxy.walk_to("dual_write")
    account = new_account(proxy.client)
    created = proxy.client.post("/products", json=product_body(), headers=account.headers)
    assert created.status_code == 201, created.text
    assert created.headers["x-strangler-upstream"] == "monolith"
    product_id = created.json()["id"]
    request_id = created.headers["x-request-id"]

    relay = system.cli_process("relay", "products", log="relay.log")
    try:

        def on_the_service() -> None:
            got = httpx.get(f"{system.service.base_url}/products/{product_id}", timeout=5)
            assert got.status_code == 200, got.text

        eventually(on_the_service, "the relayed product on the service", timeout=15)
        # The monolith's access line names the trace; everything below follows from it alone.
        monolith_lines = _lines(system.monolith.log, strict=True)
        trace_id = _access(monolith_lines, request_id)["trace_id"]
        assert trace_id and len(trace_id) == 32

        def every_hop() -> tuple[Span, Span, list[Span], Span, Span]:
            (proxy_span,) = _spans(_lines(proxy.app.log, strict=True), trace_id)
            monolith_spans = _spans(_lines(system.monolith.log, strict=True), trace_id)
            relay_spans = _spans(_lines(system.workdir / "relay.log", strict=False), trace_id)
            service_spans = _spans(_lines(system.service.log, strict=True), trace_id)
            (write,) = [s for s in monolith_spans if s["kind"] == "SERVER"]
            (publish,) = [s for s in relay_spans if s["name"] == "relay.publish products"]
            (applied,) = [s for s in service_spans if s["name"] == "sync.apply products"]
            return proxy_span, write, monolith_spans, publish, applied

        proxy_span, write, monolith_spans, publish, applied = eventually(
            every_hop, "the spans of every hop", timeout=15
        )
    finally:
        relay.terminate()
        relay.wait(timeout=10)
    assert proxy_span["kind"] == "SERVER" and proxy_span["name"] == "POST products"
    assert proxy_span["attributes"]["strangler.upstream"] == "monolith"
    assert proxy_span["parent_span_id"] is None  # the client sent no traceparent: a new trace
    assert write["name"] == "POST /products" and write["parent_span_id"] == proxy_span["span_id"]
    # The outbox kept the context of the write (FastAPI's endpoint span, under the server span).
    (endpoint,) = [s for s in monolith_spans if s["span_id"] == publish["parent_span_id"]]
    assert endpoint["parent_span_id"] == write["span_id"]
    assert publish["attributes"]["entity.key"] == product_id
    assert applied["parent_span_id"] == publish["span_id"]
    assert applied["attributes"]["sync.outcome"] == "applied"
    assert applied["kind"] == "CONSUMER" and applied["links"]  # linked to the relay's batch


def test_a_read_sent_to_the_service_is_one_trace_with_the_callers(
    traced: tuple[SyncSystem, Proxy],
) -> None:
    system, proxy = traced
    account = new_account(proxy.client)
    created = proxy.client.post("/products", json=product_body(), headers=account.headers)
    assert created.status_code == 201, created.text
    proxy.walk_to("backfilled")
    backfill = system.cli("backfill", "products")
    assert backfill.returncode == 0, backfill.stderr
    proxy.walk_to("reads_cutover")
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    read = proxy.client.get(
        f"/products/{created.json()['id']}",
        headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01", "X-Request-ID": "r-1"},
    )
    assert read.status_code == 200 and read.headers["x-strangler-upstream"] == "service"
    # The access line is written after the answer is sent: wait for it.
    line = eventually(
        lambda: _access(_lines(system.service.log, strict=True), "r-1"),
        "the service's access line for r-1",
        timeout=15,
    )
    assert line["trace_id"] == caller_trace

    def spans() -> tuple[dict[str, Any], dict[str, Any]]:
        (at_proxy,) = _spans(_lines(proxy.app.log, strict=True), caller_trace)
        service_spans = _spans(_lines(system.service.log, strict=True), caller_trace)
        (at_service,) = [s for s in service_spans if s["kind"] == "SERVER"]
        return at_proxy, at_service

    at_proxy, at_service = eventually(spans, "the proxy's and the service's spans", timeout=15)
    assert at_proxy["parent_span_id"] == "00f067aa0ba902b7"  # the caller's span
    assert at_service["parent_span_id"] == at_proxy["span_id"]
    assert at_service["name"] == "GET /products/{product_id}"
