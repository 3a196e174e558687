"""OpenTelemetry: off by default; switched on by OTEL_TRACES_EXPORTER, it continues the caller's trace
through Redis and hands it on in the order.placed CloudEvent."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ops.devstack import Stack, free_port, local_stack
from ops.sales import fresh_sku, open_sale
from shared import tracing
from shared.settings import Settings
from tests.observability.test_logs import log_file, request_line

pytestmark = pytest.mark.integration


class Sink:
    """A local K_SINK that keeps the headers of every event it receives."""

    def __init__(self) -> None:
        received: list[dict[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({":path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    running = Sink()
    yield running
    running.close()


@pytest.fixture(scope="module")
def traced_order(tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[Stack]:
    env = {"WORKERS": "1", "OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "50", "K_SINK": sink.url}
    with local_stack(tmp_path_factory.mktemp("traced"), functions=("order",), extra_env=env) as (stack, _):
        yield stack


def spans(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"context"' in line:
            entry = json.loads(line)
            if "span_id" in entry.get("context", {}):
                found.append(entry)
    return found


def wait_for(check: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.05)
    return found


def test_tracing_is_off_by_default() -> None:
    assert Settings.from_env({}).otel_traces_exporter == "none"
    assert not tracing.enabled(Settings.from_env({}))
    assert not tracing.configure(Settings.from_env({}), "order")
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER"):
        Settings.from_env({"OTEL_TRACES_EXPORTER": "jaeger"})


def get(url: str, headers: dict[str, str]) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_default_stack_exports_no_spans(stack: Stack) -> None:
    trace_id = uuid.uuid4().hex
    assert get(stack.url("order") + "/orders", {"traceparent": f"00-{trace_id}-{'1' * 16}-01"}) == 401
    request_line(stack, "order", trace_id)  # the request is over and logged
    assert spans(log_file(stack, "order")) == []


def test_a_placed_order_continues_the_callers_trace_and_hands_it_on(traced_order: Stack, sink: Sink) -> None:
    settings = Settings.from_env(traced_order.env)
    sale = open_sale(settings, fresh_sku("traced"), 5, buyers=1)
    sku, (token,) = sale.sku, sale.buyers.tokens
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]

    request = urllib.request.Request(
        traced_order.url("order") + "/orders",
        data=json.dumps({"sku": sku}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", "traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201 and response.headers["X-Request-Id"] == trace_id

    log = log_file(traced_order, "order")

    def server_span() -> dict[str, Any] | None:
        mine = [s for s in spans(log) if s["context"]["trace_id"] == f"0x{trace_id}" and s["kind"] == "SpanKind.SERVER"]
        return mine[0] if mine else None

    served = wait_for(server_span)
    assert served["name"] == "POST /orders" and served["parent_id"] == f"0x{parent_id}"
    assert served["attributes"]["http.route"] == "/orders"

    def children() -> set[str]:
        below = [s for s in spans(log) if s["parent_id"] == served["context"]["span_id"]]
        return {str(s["attributes"].get("db.system", s["attributes"].get("db.system.name"))) for s in below}

    wait_for(lambda: "redis" in children())
    event = wait_for(lambda: [h for h in sink.received if h.get("ce-subject") == sku])[0]
    assert event["ce-type"] == "dev.flashsale.order.placed"
    assert event["ce-traceparent"].startswith(f"00-{trace_id}-")
    spans_and_logs = log.read_text(errors="replace")
    assert token not in spans_and_logs and "Bearer " not in spans_and_logs  # spans keep no Authorization header


def test_probes_and_scrapes_are_not_traced(traced_order: Stack) -> None:
    probed = uuid.uuid4().hex
    for path in ("/healthz", "/readyz", "/metrics"):
        assert get(traced_order.url("order") + path, {"traceparent": f"00-{probed}-{'1' * 16}-01"}) == 200
    # A traced request after them: once its span is out, theirs would be too (one exporter, in order).
    after = uuid.uuid4().hex
    assert get(traced_order.url("order") + "/orders", {"traceparent": f"00-{after}-{'1' * 16}-01"}) == 401
    log = log_file(traced_order, "order")
    wait_for(lambda: [s for s in spans(log) if s["context"]["trace_id"] == f"0x{after}"])
    assert not [s for s in spans(log) if s["context"]["trace_id"] == f"0x{probed}"]


def test_otlp_export_goes_where_the_standard_variable_points(tmp_path: Path) -> None:
    collector = Sink()  # stands in for an OpenTelemetry collector's OTLP/HTTP receiver
    env = {
        "WORKERS": "1",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url.rstrip("/"),
    }
    try:
        with local_stack(tmp_path, functions=("order",), extra_env=env) as (stack, _):
            assert get(stack.url("order") + "/orders", {"traceparent": f"00-{uuid.uuid4().hex}-{'1' * 16}-01"}) == 401
            export = wait_for(lambda: [h for h in collector.received if h.get("content-type") == "application/x-protobuf"])[0]
            assert export[":path"] == "/v1/traces" and export["user-agent"].startswith("OTel-OTLP-Exporter-Python")
    finally:
        collector.close()
