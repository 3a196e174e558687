"""The MongoDB store's named atomic steps, and what reconcile does when a process dies between them.

mongomock runs the real queries single-threaded; the races themselves are
covered on SQLite and, with FLASHSALE_TEST_MONGODB_URI, on a real MongoDB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import mongomock
import pytest
from pymongo.errors import AutoReconnect
from pymongo.results import UpdateResult

from shared.errors import LimitReached, SoldOut, StoreError
from shared.models import Order, OrderRequest, PlacedOrder, request_fingerprint, utcnow
from shared.store.base import Placement
from shared.store.mongo import Doc, MongoStore
from shared.store.tickets import Leaks


def tickets_of(answers: list[Placement]) -> list[tuple[int, ...] | str]:
    return [a.order.tickets if isinstance(a, PlacedOrder) else a.code for a in answers]


@pytest.fixture
def store() -> MongoStore:
    return MongoStore(mongomock.MongoClient(tz_aware=True)["flashsale"])


def test_a_process_killed_after_reserving_leaves_an_orphan_that_reconcile_returns(store: MongoStore) -> None:
    store.create_sale("phone", 2, 1, None)
    # The dying process: claimed the buyer and took ticket 1, never wrote the order.
    store.claim_buyer_units("phone", "ghost", 1, 1)
    assert store.reserve_unit("phone") == 1
    store.place_order("phone", "alice", 1)
    with pytest.raises(SoldOut):
        store.place_order("phone", "bob", 1)
    before = store.sale_stats("phone")
    assert (before.sold, before.orphaned, before.available) == (1, 1, 0)
    report = store.reconcile("phone")
    assert report.released_tickets == (1,) and report.corrected_buyers == 1
    order = store.place_order("phone", "bob", 1).order  # the unit is sold after all: no undersell
    assert order.ticket == 1
    with pytest.raises(SoldOut):
        store.place_order("phone", "carol", 1)
    # The ghost's claim was undone too, so it can buy in a later sale of the same sku.
    assert store.buyer_units("phone") == {"alice": 1, "bob": 1}
    assert store.sale_stats("phone").invariants_hold


def test_the_grace_period_spares_an_order_still_in_flight(store: MongoStore) -> None:
    store.create_sale("phone", 2, 1, None)
    store.claim_buyer_units("phone", "slow", 1, 1)
    ticket = store.reserve_unit("phone")
    assert ticket == 1
    original = store._leaks
    calls = {"n": 0}

    def leaks_then_confirm(sku: str) -> Leaks:
        result = original(sku)
        calls["n"] += 1
        if calls["n"] == 1:  # the slow order lands during the grace period
            store.confirm_order(Order("o1", "phone", "slow", 1, (1,), "confirmed", utcnow()))
        return result

    store._leaks = leaks_then_confirm
    report = store.reconcile("phone", grace_seconds=0.01)
    assert report.released_tickets == ()
    assert store.sale_stats("phone").sold == 1 and store.sale_stats("phone").invariants_hold


def test_a_failed_order_insert_gives_everything_back(store: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.create_sale("phone", 1, 1, None)

    def broken(orders: Sequence[Order]) -> set[str]:
        raise AutoReconnect("primary stepped down")

    monkeypatch.setattr(store, "confirm_orders", broken)
    with pytest.raises(StoreError):
        store.place_order("phone", "alice", 1, request_hash=request_fingerprint("phone", 1))
    monkeypatch.undo()
    stats = store.sale_stats("phone")
    assert (stats.sold, stats.available, stats.orphaned) == (0, 1, 0)
    assert store.place_order("phone", "alice", 1).order.ticket == 1  # her limit was given back


def test_claim_is_refused_by_the_unique_index_once_at_the_limit(store: MongoStore) -> None:
    store.create_sale("phone", 5, 2, None)
    store.claim_buyer_units("phone", "a", 2, 2)
    with pytest.raises(LimitReached):
        store.claim_buyer_units("phone", "a", 1, 2)
    store.release_buyer_units("phone", "a", 1)
    store.claim_buyer_units("phone", "a", 1, 2)


def test_update_sale_gives_up_after_bounded_retries(store: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.errors import ConcurrentUpdate

    store.create_sale("phone", 5, 1, None)
    real_update = store.sales.update_one
    attempts = {"n": 0}

    def always_beaten(filter: Mapping[str, Any], update: Mapping[str, Any], *args: Any, **kwargs: Any) -> UpdateResult:
        if "version" in filter:
            attempts["n"] += 1
            real_update({"_id": "phone"}, {"$inc": {"version": 1}})  # someone else got there first
        return real_update(filter, update, *args, **kwargs)

    monkeypatch.setattr(store.sales, "update_one", always_beaten)
    with pytest.raises(ConcurrentUpdate):
        store.update_sale("phone", total=6)
    assert attempts["n"] == 6
    monkeypatch.undo()
    assert store.update_sale("phone", total=6).total == 6


# batches ------------------------------------------------------------------------


def batch(*users: str, key: str | None = None) -> list[OrderRequest]:
    return [OrderRequest("phone", user, 1, key if i == 0 else None, request_fingerprint("phone", 1)) for i, user in enumerate(users)]


def test_reserve_tickets_takes_returned_ones_first_then_one_fresh_block(store: MongoStore) -> None:
    store.create_sale("phone", 6, 1, None)
    assert store.reserve_tickets("phone", 3) == [1, 2, 3]
    store.release_ticket("phone", [2])
    calls = {"n": 0}
    real = store.sales.find_one_and_update

    def counted(*args: Any, **kwargs: Any) -> Doc | None:
        calls["n"] += 1
        return real(*args, **kwargs)

    store.sales.find_one_and_update = counted
    assert store.reserve_tickets("phone", 3) == [2, 4, 5]
    assert calls["n"] == 3  # pop 2, find the free list empty, one $inc for 4 and 5
    assert store.reserve_tickets("phone", 4) == [6]  # fewer left than wanted: what is left
    assert store.reserve_tickets("phone", 1) == []


def test_a_process_killed_before_the_batch_insert_leaves_orphans_that_reconcile_returns(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create_sale("phone", 3, 1, None)

    def killed(orders: Sequence[Order]) -> set[str]:
        raise KeyboardInterrupt  # not an Exception: nothing on the way may undo anything, as when the process dies

    monkeypatch.setattr(store, "confirm_orders", killed)
    with pytest.raises(KeyboardInterrupt):
        store.place_orders(batch("a", "b", "c"))
    monkeypatch.undo()
    stats = store.sale_stats("phone")
    assert (stats.sold, stats.orphaned, stats.available) == (0, 3, 0)
    report = store.reconcile("phone")
    assert report.released_tickets == (1, 2, 3) and report.corrected_buyers == 3
    assert tickets_of(store.place_orders(batch("a", "b", "c"))) == [(1,), (2,), (3,)]


def test_a_concurrent_replay_that_wins_the_insert_is_answered_and_the_rest_still_lands(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create_sale("phone", 5, 1, None)
    real = store._replays

    def lookup_then_lose(run: Sequence[OrderRequest], pending: list[int]) -> dict[int, Placement]:
        found = real(run, pending)
        # Another process places the same (buyer, key) between our lookup and our insert.
        other = Order("winner", "phone", "a", 1, (5,), "confirmed", utcnow(), "k1", request_fingerprint("phone", 1))
        store.confirm_order(other)
        return found

    monkeypatch.setattr(store, "_replays", lookup_then_lose)
    first, second, third = store.place_orders(batch("a", "b", "c", key="k1"))
    assert isinstance(first, PlacedOrder) and first.replayed and first.order.order_id == "winner"
    assert isinstance(second, PlacedOrder) and isinstance(third, PlacedOrder) and not second.replayed
    assert {d["user_id"] for d in store.orders.find({"sku": "phone"})} == {"a", "b", "c"}
    assert store.buyer_units("phone") == {"a": 1, "b": 1, "c": 1}
    assert store.sale_stats("phone").free == 1  # the loser's ticket went back


def test_an_insert_that_failed_part_way_answers_what_landed_and_gives_back_the_rest(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create_sale("phone", 2, 1, None)
    real = store.confirm_orders

    def first_then_gone(orders: Sequence[Order]) -> set[str]:
        real(orders[:1])
        raise AutoReconnect("primary stepped down")

    monkeypatch.setattr(store, "confirm_orders", first_then_gone)
    landed, lost = store.place_orders(batch("a", "b"))
    monkeypatch.undo()
    assert isinstance(landed, PlacedOrder) and landed.order.tickets == (1,)
    assert isinstance(lost, StoreError)
    stats = store.sale_stats("phone")
    assert (stats.sold, stats.available, stats.orphaned) == (1, 1, 0)
    assert tickets_of(store.place_orders(batch("b"))) == [(2,)]


def test_when_even_the_read_back_fails_nothing_is_given_back_until_reconcile(store: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ticket given back while an order might hold it could be sold twice."""
    store.create_sale("phone", 2, 1, None)

    def gone(*args: Any, **kwargs: Any) -> None:
        raise AutoReconnect("no primary")

    monkeypatch.setattr(store, "confirm_orders", gone)
    monkeypatch.setattr(store.orders, "find", gone)
    answers = store.place_orders(batch("a", "b"))
    monkeypatch.undo()
    assert all(isinstance(a, StoreError) for a in answers)
    assert store.sale_stats("phone").orphaned == 2
    assert store.reconcile("phone").released_tickets == (1, 2)
