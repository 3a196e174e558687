"""One contract, every store: SQLite (real file), MongoDB queries through
mongomock (single-threaded: mongomock is not thread-safe), and a real MongoDB
when FLASHSALE_TEST_MONGODB_URI is set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import (
    EmailTaken,
    IdempotencyKeyReused,
    InvalidRequest,
    LimitReached,
    NotFound,
    SaleChanged,
    SaleExists,
    SoldOut,
    UnknownSku,
)
from shared.models import PlacedOrder, request_fingerprint
from shared.store.base import Store
from shared.store.mongo import MongoStore
from shared.store.sqlite import SqliteStore


def buy(store: Store, sku: str, user: str, quantity: int = 1, key: str | None = None) -> PlacedOrder:
    return store.place_order(sku, user, quantity, idempotency_key=key, request_hash=request_fingerprint(sku, quantity))


def test_users_are_unique_by_email(store: Store) -> None:
    user = store.create_user("ada@example.com", b"hash")
    assert store.get_user_by_email("ada@example.com") == user
    assert store.get_user_by_email("bob@example.com") is None
    with pytest.raises(EmailTaken):
        store.create_user("ada@example.com", b"other")


def test_ensure_users_creates_only_missing_ones(store: Store) -> None:
    first = store.create_user("u1@example.com", b"h")
    users = store.ensure_users(["u1@example.com", "u2@example.com"], b"h2")
    assert [u.email for u in users] == ["u1@example.com", "u2@example.com"]
    assert users[0].user_id == first.user_id
    assert store.ensure_users(["u2@example.com"], b"h3")[0].user_id == users[1].user_id


def test_sale_lifecycle(store: Store) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)
    sale = store.create_sale("phone", 10, 2, start)
    assert store.get_sale("phone") == sale
    assert store.get_sale("nothing") is None
    with pytest.raises(SaleExists):
        store.create_sale("phone", 5, 1, None)
    level = store.stock_level("phone")
    assert level is not None and (level.total, level.available, level.sold_out) == (10, 10, False)


def test_update_sale_moves_the_version(store: Store) -> None:
    before = store.create_sale("phone", 10, 1, None)
    after = store.update_sale("phone", total=12, per_user_limit=3)
    assert (after.total, after.per_user_limit, after.version) == (12, 3, before.version + 1)
    assert store.get_sale("phone") == after
    with pytest.raises(UnknownSku):
        store.update_sale("nothing", total=1)


def test_update_sale_with_a_version_that_moved_changes_nothing(store: Store) -> None:
    read = store.create_sale("phone", 10, 1, None)
    mine = store.update_sale("phone", total=12, expected_version=read.version)  # the first editor wins
    with pytest.raises(SaleChanged):
        store.update_sale("phone", total=20, per_user_limit=5, expected_version=read.version)  # the second read the same version
    assert store.get_sale("phone") == mine  # the second edit left no trace
    level = store.stock_level("phone")
    assert level is not None and level.total == 12
    buy(store, "phone", "a")  # a sale is not an edit: the version stays
    assert store.update_sale("phone", per_user_limit=2, expected_version=mine.version).version == mine.version + 1


def test_update_sale_refuses_to_shrink_below_what_is_sold(store: Store) -> None:
    store.create_sale("phone", 3, 1, None)
    buy(store, "phone", "a")
    buy(store, "phone", "b")
    with pytest.raises(InvalidRequest):
        store.update_sale("phone", total=1)


def test_orders_take_tickets_in_order_until_sold_out(store: Store) -> None:
    store.create_sale("phone", 3, 1, None)
    tickets = [buy(store, "phone", f"user{i}").order.ticket for i in range(3)]
    assert tickets == [1, 2, 3]
    with pytest.raises(SoldOut):
        buy(store, "phone", "late")
    stats = store.sale_stats("phone")
    assert (stats.sold, stats.orders, stats.buyers, stats.available) == (3, 3, 3, 0)
    assert stats.invariants_hold, stats.violations()
    level = store.stock_level("phone")
    assert level is not None and level.sold_out


def test_sold_out_changes_nothing(store: Store) -> None:
    store.create_sale("phone", 1, 1, None)
    buy(store, "phone", "a")
    with pytest.raises(SoldOut):
        buy(store, "phone", "b")
    assert store.list_orders("b") == []
    assert store.buyer_units("phone") == {"a": 1}


def test_per_user_limit(store: Store) -> None:
    store.create_sale("phone", 10, 2, None)
    buy(store, "phone", "a")
    buy(store, "phone", "a")
    with pytest.raises(LimitReached):
        buy(store, "phone", "a")
    with pytest.raises(LimitReached):
        buy(store, "phone", "b", quantity=3)
    assert store.buyer_units("phone") == {"a": 2}
    stats = store.sale_stats("phone")
    assert stats.sold == 2 and stats.max_units_per_buyer == 2


def test_limit_reached_does_not_take_stock(store: Store) -> None:
    store.create_sale("phone", 2, 1, None)
    buy(store, "phone", "a")
    with pytest.raises(LimitReached):
        buy(store, "phone", "a")
    assert buy(store, "phone", "b").order.ticket == 2


def test_quantity_takes_several_tickets(store: Store) -> None:
    store.create_sale("phone", 5, 3, None)
    order = buy(store, "phone", "a", quantity=3).order
    assert order.tickets == (1, 2, 3) and order.ticket == 1 and order.quantity == 3
    with pytest.raises(SoldOut):
        buy(store, "phone", "b", quantity=3)
    assert buy(store, "phone", "b", quantity=2).order.tickets == (4, 5)


def test_unknown_sku(store: Store) -> None:
    with pytest.raises(UnknownSku):
        buy(store, "nothing", "a")
    with pytest.raises(UnknownSku):
        store.sale_stats("nothing")
    assert store.stock_level("nothing") is None


def test_idempotency_key_replays_the_same_order(store: Store) -> None:
    store.create_sale("phone", 5, 1, None)
    first = buy(store, "phone", "a", key="k1")
    again = buy(store, "phone", "a", key="k1")
    assert not first.replayed and again.replayed
    assert again.order == first.order
    assert store.sale_stats("phone").sold == 1
    assert store.find_order_by_key("a", "k1") == first.order
    assert store.find_order_by_key("b", "k1") is None


def test_idempotency_key_replays_even_after_sold_out(store: Store) -> None:
    store.create_sale("phone", 1, 1, None)
    first = buy(store, "phone", "a", key="k1")
    with pytest.raises(SoldOut):
        buy(store, "phone", "b")
    assert buy(store, "phone", "a", key="k1").order == first.order


def test_idempotency_key_with_another_body_is_refused(store: Store) -> None:
    store.create_sale("phone", 5, 2, None)
    buy(store, "phone", "a", key="k1")
    with pytest.raises(IdempotencyKeyReused):
        buy(store, "phone", "a", quantity=2, key="k1")
    assert store.sale_stats("phone").sold == 1


def test_keys_are_per_user(store: Store) -> None:
    store.create_sale("phone", 5, 1, None)
    a = buy(store, "phone", "a", key="same")
    b = buy(store, "phone", "b", key="same")
    assert a.order.order_id != b.order.order_id and not b.replayed


def test_list_orders(store: Store) -> None:
    store.create_sale("phone", 5, 1, None)
    store.create_sale("case", 5, 1, None)
    one = buy(store, "phone", "a").order
    two = buy(store, "case", "a").order
    buy(store, "case", "b")
    assert [o.order_id for o in store.list_orders("a")] == [one.order_id, two.order_id]
    assert all(o.status == "confirmed" for o in store.list_orders("a"))


def test_cancel_gives_the_ticket_back_to_the_next_buyer(store: Store) -> None:
    store.create_sale("phone", 2, 1, None)
    first = buy(store, "phone", "a").order
    buy(store, "phone", "b")
    cancelled = store.cancel_order(first.order_id)
    assert cancelled.status == "cancelled"
    assert store.cancel_order(first.order_id).status == "cancelled"  # twice changes nothing more
    level = store.stock_level("phone")
    assert level is not None and level.available == 1
    assert buy(store, "phone", "c").order.ticket == first.ticket
    with pytest.raises(SoldOut):
        buy(store, "phone", "d")
    stats = store.sale_stats("phone")
    assert stats.invariants_hold, stats.violations()


def test_cancel_unknown_order(store: Store) -> None:
    with pytest.raises(NotFound):
        store.cancel_order("nope")


def test_reconcile_on_a_clean_sale_changes_nothing(store: Store) -> None:
    store.create_sale("phone", 3, 1, None)
    buy(store, "phone", "a")
    report = store.reconcile("phone")
    assert report.released_tickets == () and report.corrected_buyers == 0
    assert report.stats.sold == 1 and report.stats.available == 2


def test_stats_see_an_oversell(store: Store) -> None:
    """The checker itself must be able to fail: forge a second holder of ticket 1."""
    store.create_sale("phone", 1, 1, None)
    buy(store, "phone", "a")
    if isinstance(store, SqliteStore):
        with store._transaction() as conn:
            conn.execute(
                "INSERT INTO orders (order_id, sku, user_id, quantity, status, created_at) VALUES ('x', 'phone', 'b', 1, 'confirmed', 0)"
            )
    else:
        assert isinstance(store, MongoStore)
        store.orders.insert_one(
            {"_id": "x", "idem": "x", "sku": "phone", "user_id": "b", "quantity": 1, "tickets": [1], "status": "confirmed",
             "created_at": datetime.now(UTC)}
        )  # fmt: skip
    stats = store.sale_stats("phone")
    assert not stats.invariants_hold
    assert any("oversold" in v for v in stats.violations())
