"""The MongoDB store's named atomic steps, and what reconcile does when a process dies between them.

mongomock runs the real queries single-threaded; the races themselves are
covered on SQLite and, with FLASHSALE_TEST_MONGODB_URI, on a real MongoDB.
"""

from __future__ import annotations

import mongomock
import pytest
from pymongo.errors import AutoReconnect

from shared.errors import LimitReached, SoldOut, StoreError
from shared.models import request_fingerprint
from shared.store.mongo import MongoStore


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

    def leaks_then_confirm(sku: str):  # type: ignore[no-untyped-def]
        result = original(sku)
        calls["n"] += 1
        if calls["n"] == 1:  # the slow order lands during the grace period
            from shared.models import Order, utcnow

            store.confirm_order(Order("o1", "phone", "slow", 1, (1,), "confirmed", utcnow()))
        return result

    store._leaks = leaks_then_confirm  # type: ignore[method-assign]
    report = store.reconcile("phone", grace_seconds=0.01)
    assert report.released_tickets == ()
    assert store.sale_stats("phone").sold == 1 and store.sale_stats("phone").invariants_hold


def test_a_failed_order_insert_gives_everything_back(store: MongoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.create_sale("phone", 1, 1, None)

    def broken(order):  # type: ignore[no-untyped-def]
        raise AutoReconnect("primary stepped down")

    monkeypatch.setattr(store, "confirm_order", broken)
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

    def always_beaten(filter, update, *args, **kwargs):  # type: ignore[no-untyped-def]
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
