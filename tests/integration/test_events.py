"""order.placed: emitted off the request path, consumed exactly once, in binary and structured mode."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_http

from ops.devstack import Stack
from ops.sales import fresh_sku, open_sale
from shared import context as context_module
from shared.context import Context
from shared.events import ORDER_PLACED, EventEmitter
from shared.sales_feed import sales_key
from shared.settings import Settings
from shared.store import open_store
from tests.clients import bearer, function_client, press_buy
from tests.conftest import Mint

pytestmark = pytest.mark.integration
SKU = "iphone-17"


def order_event(event_id: str, quantity: int = 1, sku: str = SKU) -> CloudEvent:
    attributes = {"type": ORDER_PLACED, "source": "/flashsale/order", "id": event_id, "subject": sku}
    return CloudEvent(attributes, {"order_id": event_id, "sku": sku, "quantity": quantity, "ticket": 1, "tickets": [1], "total": 5})


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_the_consumer_counts_each_event_once(ctx: Context, mint: Mint, mode: str) -> None:
    ctx.store.create_sale(SKU, 5, 2, None)
    client = function_client("events")
    convert = to_binary if mode == "binary" else to_structured
    headers, body = convert(order_event("evt-1", quantity=2))
    for _ in range(3):  # the broker may deliver more than once
        response = client.post("/", headers=dict(headers), data=body)
        assert response.status_code == 200, response.data
    assert ctx.sales_feed.counts(SKU) == {"orders": 1, "units": 2}
    headers, body = convert(order_event("evt-2"))
    client.post("/", headers=dict(headers), data=body)
    assert ctx.sales_feed.counts(SKU) == {"orders": 2, "units": 3}


def test_the_consumer_refreshes_the_stock_cache(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 1, 1, None)
    assert ctx.stock.read(SKU).level.available == 1  # cached for a TTL
    ctx.store.place_order(SKU, "someone", 1)
    headers, body = to_binary(order_event("evt-1"))
    function_client("events").post("/", headers=dict(headers), data=body)
    fresh = context_module.reset(ctx.settings)
    assert fresh.stock.read(SKU).level.sold_out  # from the refreshed Redis entry, before the TTL ran out


def test_a_malformed_event_is_acknowledged_and_changes_nothing(ctx: Context) -> None:
    headers, body = to_binary(CloudEvent({"type": ORDER_PLACED, "source": "/x", "id": "bad"}, {"sku": 5}))
    assert function_client("events").post("/", headers=dict(headers), data=body).status_code == 200
    assert ctx.sales_feed.counts(SKU) == {}


def test_the_consumer_answers_probes(ctx: Context) -> None:
    client = function_client("events")
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


class Sink(http.server.ThreadingHTTPServer):
    received: list[CloudEvent]


@pytest.fixture
def sink() -> Iterator[Sink]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server: Sink

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.server.received.append(from_http(dict(self.headers), body))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = Sink(("127.0.0.1", 0), Handler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_emitter_delivers_a_real_cloudevent(sink: Sink) -> None:
    emitter = EventEmitter(f"http://127.0.0.1:{sink.server_address[1]}/")
    emitter.emit(order_event("evt-9"))
    assert emitter.flush(5)
    assert [e["id"] for e in sink.received] == ["evt-9"]
    assert sink.received[0]["type"] == ORDER_PLACED and sink.received[0].data["sku"] == SKU


@pytest.mark.parametrize("sink_kind", ["nothing listening", "accepts and never answers"])
def test_a_dead_or_hanging_sink_never_slows_or_fails_an_order(
    tmp_path: Path, redis_url: str, keys: tuple[Path, Path], sink_kind: str
) -> None:
    from tests.conftest import make_settings

    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    if sink_kind == "accepts and never answers":
        hanging.listen(16)
    port = hanging.getsockname()[1]
    try:
        ctx = context_module.reset(make_settings(tmp_path, redis_url, keys, K_SINK=f"http://127.0.0.1:{port}/"))
        tokens = open_sale(ctx.settings, SKU, 20, buyers=10, store=ctx.store).buyers.tokens
        client = function_client("order")
        started = time.perf_counter()
        codes = [client.post("/orders", json={"sku": SKU}, headers=bearer(t)).status_code for t in tokens]
        elapsed = time.perf_counter() - started
        assert codes == [201] * 10
        assert elapsed < ctx.emitter.timeout, f"10 orders took {elapsed:.2f}s: they waited for the sink"
    finally:
        hanging.close()


def test_orders_on_the_stack_reach_the_consumer(stack: Stack, stack_settings: Settings) -> None:
    store = open_store(stack_settings)
    sale = open_sale(stack_settings, fresh_sku("events"), 3, buyers=5, store=store)
    sku = sale.sku
    statuses = [press_buy(stack.url("order"), token, sku, f"k{i}")[0] for i, token in enumerate(sale.buyers.tokens)]
    assert statuses == [201, 201, 201, 409, 409]
    redis = redis_lib.Redis.from_url(stack_settings.redis_url)
    deadline = time.monotonic() + 10
    while redis.hget(sales_key(sku), "units") != b"3":
        assert time.monotonic() < deadline, redis.hgetall(sales_key(sku))
        time.sleep(0.05)
    assert store.sale_stats(sku).sold == 3
