"""Sales counters survive redelivery: marking an event seen and counting it is one atomic step.

The broker redelivers an ``order.placed`` until one delivery is acknowledged,
so a delivery that fails must leave either the event counted and marked, or
neither: marked but not counted, and every redelivery is skipped as a
duplicate with its count lost for good. That is what the counters after
``EXEC`` did when Redis was lost between the two.

Here Redis is lost at every point a delivery talks to it in turn: before the
n-th command reaches Redis, or after Redis ran it but before its answer came
back (the two ways a connection dies). The broker then redelivers, and the
counts must be exactly one event's. A second test breaks the script itself
after it started: the mark must not be left behind.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.context import Context
from shared.redisconn import RedisConn, RedisDown
from shared.sales_feed import SalesFeed, sales_key, seen_key
from shared.stock import StockCache

pytestmark = pytest.mark.integration
SKU = "iphone-17"
EVENT = {"order_id": "o-1", "sku": SKU, "quantity": 2, "ticket": 1, "tickets": [1, 2], "total": 5}
ONE_EVENT = {"orders": 1, "units": 2}


class Outage:
    """Redis lost at the ``at``-th command of a delivery: before it is sent, or after it ran, before its answer."""

    def __init__(self, at: int, after_running: bool) -> None:
        self.at = at
        self.after_running = after_running
        self.sent = 0
        self.struck = False


def flaky_client(url: str, outage: Outage) -> redis_lib.Redis:
    # Connection's own methods carry no annotations, and untyped_calls_exclude = ["redis"] does not cover
    # them here: mypy names a call by this subclass, hence the no-untyped-call ignores below.
    class FlakyConnection(redis_lib.Connection):
        handshake = False
        lose_answer = False

        def on_connect(self) -> None:  # the connection's own setup commands are not the delivery's
            self.handshake = True
            try:
                super().on_connect()  # type: ignore[no-untyped-call]
            finally:
                self.handshake = False

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            if not self.handshake:
                outage.sent += 1
                if outage.sent == outage.at:
                    outage.struck = True
                    if not outage.after_running:
                        self.disconnect()  # type: ignore[no-untyped-call]
                        raise redis_lib.ConnectionError("redis lost before the command reached it")
                    self.lose_answer = True
            super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            answer = super().read_response(*args, **kwargs)  # read: Redis surely ran the command
            if self.lose_answer:
                self.lose_answer = False
                self.disconnect()  # type: ignore[no-untyped-call]
                raise redis_lib.ConnectionError("redis lost before its answer came back")
            return answer

    no_retry = Retry(NoBackoff(), 0)  # a retry would hide the outage
    pool = redis_lib.ConnectionPool.from_url(url, connection_class=FlakyConnection, retry=no_retry)
    return redis_lib.Redis(connection_pool=pool, retry=no_retry)


@pytest.mark.parametrize("after_running", [False, True], ids=["before-the-command", "before-the-answer"])
def test_losing_redis_at_any_point_of_a_delivery_neither_loses_nor_doubles_a_count(ctx: Context, after_running: bool) -> None:
    ctx.store.create_sale(SKU, 5, 2, None)
    broker = SalesFeed(ctx.store, ctx.redis, ctx.stock)  # the redeliveries, on a healthy connection
    admin = ctx.redis.client
    for at in itertools.count(1):
        admin.flushall()
        admin.script_flush()  # every round takes the same path: the script is loaded afresh
        outage = Outage(at, after_running)
        redis = RedisConn(ctx.settings, client=flaky_client(ctx.settings.redis_url, outage))
        feed = SalesFeed(ctx.store, redis, StockCache(ctx.store, redis, ctx.settings.stock_cache_ttl_seconds))
        try:
            feed.order_placed("evt-1", EVENT)
            acknowledged = True
        except (RedisDown, redis_lib.RedisError):
            acknowledged = False
        if not acknowledged:
            broker.order_placed("evt-1", EVENT)  # the broker redelivers until one delivery succeeds
        broker.order_placed("evt-1", EVENT)  # and may deliver once more anyway
        assert broker.counts(SKU) == ONE_EVENT, f"redis lost at command {at} ({'after it ran' if after_running else 'before it'})"
        if not outage.struck:
            assert at > 1, "the outage never struck: the test would prove nothing"
            break  # every command of a delivery has been the one Redis was lost at


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda c: c.set(sales_key(SKU), "not a hash"), id="counters-not-a-hash"),
        pytest.param(lambda c: c.hset(sales_key(SKU), "units", "many"), id="a-counter-not-a-number"),
    ],
)
def test_a_script_that_fails_after_it_started_leaves_no_mark(ctx: Context, corrupt: Any) -> None:
    """Redis keeps a script's writes made before a failing command: the script checks before it writes anything."""
    ctx.store.create_sale(SKU, 5, 2, None)
    client = ctx.redis.client
    corrupt(client)
    with pytest.raises(redis_lib.ResponseError):
        ctx.sales_feed.order_placed("evt-1", EVENT)
    assert not client.exists(seen_key(SKU, "evt-1")), "marked seen without being counted"
    client.delete(sales_key(SKU))  # an operator repairs the counters; the broker redelivers
    assert ctx.sales_feed.order_placed("evt-1", EVENT).applied
    assert ctx.sales_feed.counts(SKU) == ONE_EVENT
