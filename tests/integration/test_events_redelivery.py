"""The events consumer under the broker's redelivery (knative/eventing.yaml: retry with backoff, then a dead-letter sink).

A broker delivers at least once: it redelivers whatever did not get a 2xx, and may
deliver an event it already delivered (an answer lost on the way back, two
dispatchers retrying at once, the dead-letter sink getting one more try). Each
test delivers one ``order.placed`` more than once, the way one of those happens,
and checks that the sale is counted exactly once and that the consumer never
acknowledges (2xx) a delivery it could not apply, since the broker would then drop it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient

from ops.devstack import free_port
from shared import context as context_module
from shared.context import Context
from shared.events import ORDER_PLACED
from tests.clients import function_client
from tests.conftest import make_settings

pytestmark = pytest.mark.integration
SKU = "iphone-17"


def delivery(event_id: str, quantity: int = 1) -> tuple[dict[str, str], bytes]:
    """One broker delivery of ``order.placed`` (binary mode, as the broker sends it)."""
    event = CloudEvent(
        {"type": ORDER_PLACED, "source": "/flashsale/order", "id": event_id, "subject": SKU},
        {"order_id": event_id, "sku": SKU, "quantity": quantity, "ticket": 1, "tickets": [1], "total": 5},
    )
    headers, body = to_binary(event)
    return dict(headers), body


def deliver(event_id: str, quantity: int = 1, path: str = "/") -> int:
    headers, body = delivery(event_id, quantity)
    status: int = function_client("events").post(path, headers=headers, data=body).status_code
    return status


def test_a_delivery_that_failed_after_counting_is_counted_once_when_redelivered(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx.store.create_sale(SKU, 5, 2, None)
    ctx.store.place_order(SKU, "buyer-1", 2)
    real_stock_level = ctx.store.stock_level
    failures = iter([RuntimeError("the database went away after the count")])

    def stock_level_failing_once(sku: str) -> Any:
        for failure in failures:
            raise failure
        return real_stock_level(sku)

    monkeypatch.setattr(ctx.store, "stock_level", stock_level_failing_once)

    first = deliver("evt-1", quantity=2)
    assert first >= 500, "a delivery the consumer could not finish must not be acknowledged: the broker would drop it"
    assert deliver("evt-1", quantity=2) == 200  # the broker's retry
    assert ctx.sales_feed.counts(SKU) == {"orders": 1, "units": 2}
    # The retry did what the failed delivery could not: the cache now shows the database's level.
    fresh = context_module.reset(ctx.settings)
    assert fresh.stock.read(SKU).level.available == 3


def test_a_delivery_refused_while_redis_was_down_is_counted_once_when_it_comes_back(tmp_path: Path, redis_url: str, keys: Any) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    down = context_module.reset(make_settings(tmp_path, dead_redis, keys, REDIS_TIMEOUT_SECONDS="0.2"))
    down.store.create_sale(SKU, 5, 2, None)
    try:
        assert deliver("evt-1") >= 500, "acknowledged while Redis was down: the count would be lost"
    finally:
        down.store.close()

    up = context_module.reset(make_settings(tmp_path, redis_url, keys))  # same database, Redis back
    try:
        for _ in range(2):  # the retry, and a duplicate of it
            assert deliver("evt-1") == 200
        assert up.sales_feed.counts(SKU) == {"orders": 1, "units": 1}
    finally:
        up.store.close()


def test_duplicates_delivered_at_the_same_moment_are_counted_once(ctx: Context) -> None:
    ctx.store.create_sale(SKU, 5, 2, None)
    deliveries = 8
    start = threading.Barrier(deliveries)
    statuses: list[int] = []

    headers, body = delivery("evt-1")
    # Made here, one after another: the test is of deliveries at the same moment, not of apps made at the same
    # moment (a CI run once broke the barrier while eight threads were each still loading the function).
    clients = [function_client("events") for _ in range(deliveries)]

    def redeliver(client: FlaskClient) -> None:
        start.wait(timeout=30)
        statuses.append(client.post("/", headers=headers, data=body).status_code)

    threads = [threading.Thread(target=redeliver, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statuses == [200] * deliveries
    assert ctx.sales_feed.counts(SKU) == {"orders": 1, "units": 1}


def test_the_dead_letter_path_applies_an_event_at_most_once_more(ctx: Context) -> None:
    # knative/eventing.yaml sends what the retries could not deliver to flashsale-events at
    # /dead-letter: one last attempt, which must not count an event the retries already counted.
    ctx.store.create_sale(SKU, 5, 2, None)
    assert deliver("evt-1") == 200
    assert deliver("evt-1", path="/dead-letter") == 200
    assert deliver("evt-2", path="/dead-letter") == 200
    assert ctx.sales_feed.counts(SKU) == {"orders": 2, "units": 2}
