"""The healing loop's pass on every store, against a real redis-server: a sold-out gate the database
contradicts is rebuilt after the grace, one that agrees (or is still moving) is left alone."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from shared.gate import Gate, buyers_key
from shared.healing import Healer
from shared.redisconn import RedisConn
from shared.settings import Settings
from shared.stock import StockCache, stock_key
from shared.store.base import Store
from shared.store.mongo import MongoStore

pytestmark = pytest.mark.integration
GRACE = 0.05


class Counting:
    """The store, counting the calls the healer makes (to show what it reads, and what it does not)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if callable(attribute):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls[name] += 1
                return attribute(*args, **kwargs)

            return counted
        return attribute


@pytest.fixture
def redis(settings: Settings) -> RedisConn:
    return RedisConn(settings)


def healer_for(store: Store, redis: RedisConn, sleep: Callable[[float], None] = lambda _s: None) -> Healer:
    return Healer(store, Gate(redis), StockCache(store, redis, 1.0), grace_seconds=GRACE, sleep=sleep)


def stranded_sale(store: Store, gate: Gate, *, total: int, landed: int) -> tuple[str, list[str]]:
    """A sale whose gate admitted ``total`` buyers of whom only ``landed`` have an order: the rest died in a crash."""
    sku = f"heal-{uuid.uuid4().hex[:6]}"
    store.create_sale(sku, total, 1, None)
    assert gate.rebuild(store, sku) is not None
    buyers = [f"buyer-{i}" for i in range(total)]
    for buyer in buyers:
        assert gate.admit(sku, buyer, 1).verdict == "admitted"
    for buyer in buyers[:landed]:
        store.place_order(sku, buyer, 1)
    assert gate.admit(sku, "someone-else", 1).verdict == "sold_out"
    return sku, buyers


def test_a_sold_out_gate_the_database_contradicts_is_rebuilt_from_it(store: Store, redis: RedisConn) -> None:
    gate = Gate(redis)
    sku, buyers = stranded_sale(store, gate, total=5, landed=2)
    epoch = gate.state(sku)["epoch"]
    redis.client.set(stock_key(sku), '{"total": 5, "available": 0}')
    slept: list[float] = []
    healed = healer_for(store, redis, slept.append).run_pass()
    assert [(h.sku, h.available) for h in healed] == [(sku, 3)]
    assert slept == [GRACE]  # looked twice, the grace apart
    state = gate.state(sku)
    assert state["remaining"] == "3" and state["epoch"] != epoch
    # the dead admissions' per-buyer counts are gone too: those buyers may buy
    counted = redis.client.hgetall(buyers_key(sku))  # bytes here; typed bytes | str, as a client may decode
    assert {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in counted.items()} == store.buyer_units(sku)
    assert redis.client.get(stock_key(sku)) is None  # the cached "sold out" is dropped
    assert gate.admit(sku, buyers[4], 1).verdict == "admitted"


def test_an_order_landing_during_the_grace_is_in_flight_not_stranded(store: Store, redis: RedisConn) -> None:
    gate = Gate(redis)
    sku, buyers = stranded_sale(store, gate, total=4, landed=1)

    def an_order_lands(_seconds: float) -> None:
        store.place_order(sku, buyers[1], 1)

    assert healer_for(store, redis, an_order_lands).run_pass() == []
    assert gate.state(sku)["remaining"] == "0"  # left alone: something was still moving
    healed = healer_for(store, redis).run_pass()  # the next pass: nothing moves now
    assert [(h.sku, h.available) for h in healed] == [(sku, 2)]


def test_a_gate_the_database_agrees_with_is_left_alone_and_checked_cheaply(store: Store, redis: RedisConn) -> None:
    gate = Gate(redis)
    sku, _ = stranded_sale(store, gate, total=3, landed=3)
    counting = Counting(store)
    slept: list[float] = []
    healer = healer_for(counting, redis, slept.append)
    epoch = gate.state(sku)["epoch"]
    assert healer.run_pass() == [] and healer.run_pass() == []
    assert slept == []  # nothing suspect, no grace to wait
    assert gate.state(sku)["epoch"] == epoch
    # the full count once; after that, while the database offers nothing, the stock level only
    assert counting.calls["sale_stats"] == 1 and counting.calls["stock_level"] == 2
    assert counting.calls["reconcile"] == 0


def test_a_gate_still_admitting_is_not_second_guessed(store: Store, redis: RedisConn) -> None:
    gate = Gate(redis)
    sku = f"heal-{uuid.uuid4().hex[:6]}"
    store.create_sale(sku, 5, 1, None)
    gate.rebuild(store, sku)
    assert gate.admit(sku, "died-in-a-crash", 1).verdict == "admitted"  # the gate counts 4 left, the database 5
    counting = Counting(store)
    assert healer_for(counting, redis).run_pass() == []
    assert sum(counting.calls.values()) == 0  # the crowd drains the gate first; then the pass looks
    assert gate.state(sku)["remaining"] == "4"


def test_units_orphaned_between_mongodbs_steps_are_given_back_and_sold(store: Store, redis: RedisConn) -> None:
    if not isinstance(store, MongoStore):
        pytest.skip("SQLite writes an order in one transaction: it cannot orphan a unit")
    gate = Gate(redis)
    sku = f"heal-{uuid.uuid4().hex[:6]}"
    store.create_sale(sku, 3, 1, None)
    gate.rebuild(store, sku)
    store.place_order(sku, "alice", 1)
    for ghost in ("ghost-1", "ghost-2"):  # died after taking a ticket, before writing the order
        store.claim_buyer_units(sku, ghost, 1, 1)
        assert store.reserve_unit(sku) is not None
    level = store.stock_level(sku)
    assert level is not None and level.available == 0
    gate.close(sku, gate.state(sku)["epoch"])  # the database said sold out, so the gate closed
    healed = healer_for(store, redis).run_pass()
    assert [(h.sku, h.available, h.released_tickets) for h in healed] == [(sku, 2, 2)]
    assert gate.state(sku)["remaining"] == "2"
    store.place_order(sku, "bob", 1)
    store.place_order(sku, "carol", 1)
    stats = store.sale_stats(sku)
    assert (stats.sold, stats.total, stats.orphaned) == (3, 3, 0) and stats.invariants_hold
