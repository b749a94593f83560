"""STRANGLER_TRACES_EXPORTER=otlp: a real monolith process sends its spans over OTLP/HTTP to a
collector, here a small receiver in the test that decodes what arrives with the OTLP protobuf
definitions (the same ones Jaeger and the OpenTelemetry Collector read)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.processes import monolith_env, run_monolith_command, serve_monolith
from tests.support.waiting import eventually

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class _Collector(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []


class _Receive(BaseHTTPRequestHandler):
    server: _Collector

    def do_POST(self) -> None:  # noqa: N802 (the http.server protocol's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        decoded = ExportTraceServiceRequest()
        decoded.ParseFromString(body)
        self.server.paths.append(self.path)
        self.server.requests.append(decoded)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[_Collector]:
    server = _Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_spans_reach_an_otlp_collector_with_the_callers_trace(
    collector: _Collector, tmp_path: Path
) -> None:
    port = collector.server_address[1]
    env = {
        **monolith_env(f"sqlite:///{tmp_path / 'monolith.db'}", tmp_path),
        "STRANGLER_TRACES_EXPORTER": "otlp",
        "STRANGLER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}/v1/traces",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # the batch processor's wait, in ms (default 5 s)
    }
    run_monolith_command(env, "migrate")
    with serve_monolith(env, tmp_path) as app:
        answer = httpx.get(
            f"{app.base_url}/products/1",
            headers={"traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"},
        )
        assert answer.status_code == 404

        def the_server_span() -> tuple[Any, Any]:
            servers = [
                (resource, span)
                for request in list(collector.requests)
                for resource in request.resource_spans
                for scope in resource.scope_spans
                for span in scope.spans
                if span.trace_id.hex() == CALLER_TRACE and span.kind == span.SPAN_KIND_SERVER
            ]
            assert servers, (
                f"no server span of the caller's trace in {len(collector.requests)} exports"
            )
            (server,) = servers
            return server

        found, server = eventually(the_server_span, "the server span of the caller's trace")
    assert set(collector.paths) == {"/v1/traces"}
    assert server.name == "GET /products/{product_id}"
    assert server.parent_span_id.hex() == "00f067aa0ba902b7"
    resource = found.resource
    names = {a.key: a.value.string_value for a in resource.attributes}
    assert names["service.name"] == "monolith"
