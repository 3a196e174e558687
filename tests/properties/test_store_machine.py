"""Any sequence of orders (alone or in batches), replays, cancellations, crashes and reconciles keeps the store's invariants.

A hypothesis state machine drives one store against a small model of what it
should hold: units per buyer, the confirmed orders, what each Idempotency-Key
bought, and units a crash left orphaned. After every step the store must
agree with the model and with its own invariants. It runs on SQLite (a real
file) and, single-threaded, on the MongoDB store through mongomock.

A crash is the store's own worst case: on MongoDB a process dying between
the named atomic steps (the buyer's units claimed, some tickets reserved, no
order written), which only ``reconcile`` repairs; on SQLite an exception in
the middle of the order's transaction, which must leave no trace at all.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import mongomock
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from shared.context import Context
from shared.errors import FlashsaleError, IdempotencyKeyReused, LimitReached, SoldOut
from shared.models import Order, OrderRequest, PlacedOrder, request_fingerprint
from shared.store.base import Store
from shared.store.mongo import MongoStore
from shared.store.sqlite import SqliteStore
from tests import openapi
from tests.clients import bearer, function_client
from tests.conftest import Mint

SKU = "phone"
USERS = st.sampled_from(["ada", "bob", "cy", "di"])
KEYS = st.sampled_from([None, "k1", "k2"])
QUANTITIES = st.integers(min_value=1, max_value=3)
MACHINE_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    database=None,  # nothing written into the work tree
    suppress_health_check=[HealthCheck.too_slow],
)


class Crash(BaseException):
    """A process dying mid-order: not an Exception, so nothing on the way may swallow it."""


@dataclass(frozen=True)
class Bought:
    order_id: str
    quantity: int
    tickets: tuple[int, ...]


class StoreMachine(RuleBasedStateMachine):
    store: Store

    def __init__(self) -> None:
        super().__init__()
        self.total = self.limit = 0
        self.held: dict[str, int] = {}  # units each buyer holds in confirmed orders
        self.claimed: dict[str, int] = {}  # units the store counts per buyer (a crash can leave extra)
        self.orphans = 0  # units a crash took that no order holds
        self.confirmed: dict[str, Order] = {}
        self.cancelled: list[str] = []
        self.by_key: dict[tuple[str, str], Bought] = {}

    @initialize(total=st.integers(min_value=1, max_value=6), limit=st.integers(min_value=1, max_value=3))
    def open_sale(self, total: int, limit: int) -> None:
        self.store.create_sale(SKU, total, limit, None)
        self.total, self.limit = total, limit

    # what the model expects ---------------------------------------------
    @property
    def available(self) -> int:
        return self.total - sum(self.held.values()) - self.orphans

    def _place(self, user: str, quantity: int, key: str | None) -> PlacedOrder:
        return self.store.place_order(SKU, user, quantity, idempotency_key=key, request_hash=request_fingerprint(SKU, quantity))

    # rules ----------------------------------------------------------------
    @rule(user=USERS, quantity=QUANTITIES, key=KEYS)
    def place_order(self, user: str, quantity: int, key: str | None) -> None:
        answer: PlacedOrder | FlashsaleError
        try:
            answer = self._place(user, quantity, key)
        except FlashsaleError as refused:
            answer = refused
        self._expect(user, quantity, key, answer)

    @rule(orders=st.lists(st.tuples(USERS, QUANTITIES, KEYS), min_size=1, max_size=5))
    def place_orders(self, orders: list[tuple[str, int, str | None]]) -> None:
        """A batch answers each order as if the orders had come one by one, in list order."""
        answers = self.store.place_orders([OrderRequest(SKU, u, q, k, request_fingerprint(SKU, q)) for u, q, k in orders])
        assert len(answers) == len(orders)
        for (user, quantity, key), answer in zip(orders, answers, strict=True):
            self._expect(user, quantity, key, answer)

    def _expect(self, user: str, quantity: int, key: str | None, answer: PlacedOrder | FlashsaleError) -> None:
        earlier = self.by_key.get((user, key)) if key else None
        counted = self.claimed.get(user, 0)
        available = self.available
        if isinstance(answer, IdempotencyKeyReused):
            assert earlier is not None and earlier.quantity != quantity
            return
        if isinstance(answer, LimitReached):
            assert earlier is None and counted + quantity > self.limit
            return
        if isinstance(answer, SoldOut):
            assert earlier is None and counted + quantity <= self.limit and quantity > available
            return
        assert isinstance(answer, PlacedOrder), answer
        placed = answer
        if earlier is not None:
            # a replay returns the first order, whatever happened since
            assert placed.replayed and earlier.quantity == quantity
            assert (placed.order.order_id, placed.order.tickets) == (earlier.order_id, earlier.tickets)
            return
        order = placed.order
        assert not placed.replayed
        assert counted + quantity <= self.limit and quantity <= available, "sold what the model says it may not"
        assert order.status == "confirmed" and order.quantity == quantity and len(order.tickets) == quantity
        self.held[user] = self.held.get(user, 0) + quantity
        self.claimed[user] = counted + quantity
        self.confirmed[order.order_id] = order
        if key:
            self.by_key[(user, key)] = Bought(order.order_id, quantity, order.tickets)

    @precondition(lambda self: bool(self.confirmed))
    @rule(data=st.data())
    def cancel_order(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(list(self.confirmed)))  # insertion order: ids are random, steps are not
        order = self.confirmed.pop(order_id)
        assert self.store.cancel_order(order_id).status == "cancelled"
        self.cancelled.append(order_id)
        self.held[order.user_id] -= order.quantity
        self.claimed[order.user_id] -= order.quantity

    @precondition(lambda self: bool(self.cancelled))
    @rule(data=st.data())
    def cancel_again(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(self.cancelled))
        assert self.store.cancel_order(order_id).status == "cancelled"  # twice changes nothing

    @rule()
    def reconcile(self) -> None:
        report = self.store.reconcile(SKU)
        assert len(report.released_tickets) == self.orphans
        assert report.stats.invariants_hold, report.stats.violations()
        self.orphans = 0
        self.claimed = dict(self.held)

    # invariants -----------------------------------------------------------
    @invariant()
    def the_store_agrees_with_the_model(self) -> None:
        if not self.total:
            return
        stats = self.store.sale_stats(SKU)
        assert stats.invariants_hold, stats.violations()
        assert stats.sold == sum(self.held.values()) <= stats.total
        assert stats.max_units_per_buyer <= self.limit
        assert stats.duplicate_tickets == stats.tickets_out_of_range == 0
        assert stats.orphaned == self.orphans
        level = self.store.stock_level(SKU)
        assert level is not None and level.available == self.available
        assert self.store.buyer_units(SKU) == {u: n for u, n in self.held.items() if n}

    @invariant()
    def confirmed_orders_hold_distinct_tickets(self) -> None:
        tickets = [t for order in self.confirmed.values() for t in order.tickets]
        assert len(tickets) == len(set(tickets)) and all(1 <= t <= self.total for t in tickets)


class SqliteMachine(StoreMachine):
    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="flashsale-props-")
        self.store = SqliteStore(f"{self.directory}/machine.db")
        super().__init__()

    @rule(user=USERS, quantity=QUANTITIES)
    def crash_mid_transaction(self, user: str, quantity: int) -> None:
        """Die after the sale row and tickets were touched, before the order row: the transaction must leave nothing."""
        before = self.store.sale_stats(SKU)
        with mock.patch("shared.store.sqlite_placement._order_id", side_effect=Crash):
            try:
                self._place(user, quantity, None)
            except (Crash, LimitReached, SoldOut):
                pass
        assert self.store.sale_stats(SKU) == before

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class MongoMachine(StoreMachine):
    store: MongoStore

    def __init__(self) -> None:
        self.store = MongoStore(mongomock.MongoClient(tz_aware=True)["flashsale"])
        super().__init__()

    @rule(user=USERS, quantity=QUANTITIES, reserved=st.integers(min_value=0, max_value=3))
    def crash_between_steps(self, user: str, quantity: int, reserved: int) -> None:
        """Die after claim_buyer_units and some reserve_unit calls, before confirm_order."""
        try:
            self.store.claim_buyer_units(SKU, user, quantity, self.limit)
        except LimitReached:
            assert self.claimed.get(user, 0) + quantity > self.limit
            return
        self.claimed[user] = self.claimed.get(user, 0) + quantity
        for _ in range(min(reserved, quantity)):
            if self.store.reserve_unit(SKU) is None:
                assert self.available == 0
                break
            self.orphans += 1


TestSqliteStoreMachine = SqliteMachine.TestCase
TestSqliteStoreMachine.settings = MACHINE_SETTINGS
TestMongoStoreMachine = MongoMachine.TestCase
TestMongoStoreMachine.settings = MACHINE_SETTINGS


@pytest.mark.integration
def test_a_cancelled_order_keeps_its_tickets(ctx: Context, mint: Mint) -> None:
    """What the machine found on SQLite: a cancelled order came back without tickets, and GET /orders broke on it."""
    ctx.store.create_sale(SKU, 2, 1, None)
    user_id, token = mint()
    first = ctx.store.place_order(SKU, user_id, 1, idempotency_key="k1", request_hash=request_fingerprint(SKU, 1)).order
    ctx.store.cancel_order(first.order_id)
    assert [(o.status, o.tickets) for o in ctx.store.list_orders(user_id)] == [("cancelled", first.tickets)]
    replay = ctx.store.place_order(SKU, user_id, 1, idempotency_key="k1", request_hash=request_fingerprint(SKU, 1))
    assert replay.replayed and replay.order.tickets == first.tickets
    listed = function_client("order").get("/orders", headers=bearer(token))
    openapi.check("/orders", "GET", listed.status_code, listed.content_type, listed.data)
    assert listed.status_code == 200, listed.json
    shown = json.loads(listed.data)["orders"][0]
    assert shown["status"] == "cancelled" and shown["ticket"] == first.ticket


def test_an_older_database_file_gains_the_cancelled_tickets_column(tmp_path: Path) -> None:
    import sqlite3

    from shared.store.sqlite import SCHEMA

    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    old.executescript(SCHEMA.replace(",\n    cancelled_tickets TEXT", ""))
    assert "cancelled_tickets" not in {row[1] for row in old.execute("PRAGMA table_info(orders)")}
    old.close()
    store = SqliteStore(path)
    store.create_sale(SKU, 1, 1, None)
    order = store.place_order(SKU, "ada", 1).order
    assert store.cancel_order(order.order_id).tickets == store.list_orders("ada")[0].tickets == (1,)
    SqliteStore(path).close()  # a second process opening the file finds the column there
