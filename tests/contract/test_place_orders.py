"""place_orders, the group commit's store call: every answer is what place_order would have given
had the requests come one after another in list order, on every store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shared.errors import FlashsaleError, IdempotencyKeyReused, InvalidRequest, LimitReached, SoldOut, StoreError, UnknownSku
from shared.models import OrderRequest, PlacedOrder, request_fingerprint
from shared.store.base import Placement, Store
from shared.store.sqlite import SqliteStore


def order(user: str, quantity: int = 1, key: str | None = None, sku: str = "phone") -> OrderRequest:
    return OrderRequest(sku, user, quantity, key, request_fingerprint(sku, quantity))


def tickets(answers: list[Placement]) -> list[tuple[int, ...] | str]:
    """Each answer as its tickets, or its error's code."""
    return [a.order.tickets if isinstance(a, PlacedOrder) else a.code for a in answers]


def test_tickets_follow_the_list_and_a_refusal_fails_only_its_own_order(store: Store) -> None:
    store.create_sale("phone", 3, 1, None)
    answers = store.place_orders([order("a"), order("b"), order("a"), order("c"), order("d")])
    assert tickets(answers) == [(1,), (2,), "limit_reached", (3,), "sold_out"]
    assert [a.order.user_id for a in answers if isinstance(a, PlacedOrder)] == ["a", "b", "c"]
    stats = store.sale_stats("phone")
    assert (stats.sold, stats.orders, stats.available) == (3, 3, 0)
    assert stats.invariants_hold, stats.violations()
    assert store.buyer_units("phone") == {"a": 1, "b": 1, "c": 1}


def test_a_smaller_order_after_a_sold_out_one_is_still_served(store: Store) -> None:
    store.create_sale("phone", 3, 3, None)
    answers = store.place_orders([order("a", 2), order("b", 2), order("c", 1), order("d", 1)])
    assert tickets(answers) == [(1, 2), "sold_out", (3,), "sold_out"]
    stats = store.sale_stats("phone")
    assert (stats.sold, stats.available, stats.orphaned) == (3, 0, 0) and stats.invariants_hold


def test_the_same_key_twice_in_one_batch_replays_the_first(store: Store) -> None:
    store.create_sale("phone", 5, 2, None)
    first, again, other_body = store.place_orders([order("a", 1, "k1"), order("a", 1, "k1"), order("a", 2, "k1")])
    assert isinstance(first, PlacedOrder) and isinstance(again, PlacedOrder)
    assert not first.replayed and again.replayed and again.order == first.order
    assert isinstance(other_body, IdempotencyKeyReused)
    assert store.sale_stats("phone").sold == 1


def test_a_key_placed_before_the_batch_replays_inside_it(store: Store) -> None:
    store.create_sale("phone", 1, 1, None)
    earlier = store.place_order("phone", "a", 1, idempotency_key="k1", request_hash=request_fingerprint("phone", 1)).order
    replay, late = store.place_orders([order("a", 1, "k1"), order("b")])
    assert isinstance(replay, PlacedOrder) and replay.replayed and replay.order == earlier
    assert isinstance(late, SoldOut)


def test_a_buyers_earlier_orders_in_the_batch_count_towards_the_limit(store: Store) -> None:
    store.create_sale("phone", 10, 2, None)
    assert tickets(store.place_orders([order("a"), order("a"), order("a"), order("a", 3)])) == [
        (1,),
        (2,),
        "limit_reached",
        "limit_reached",
    ]
    assert store.buyer_units("phone") == {"a": 2}


def test_a_buyers_sold_out_order_does_not_count_towards_the_limit(store: Store) -> None:
    """As one by one: the sold-out order took nothing, so the buyer's next one fits the limit."""
    store.create_sale("phone", 1, 2, None)
    assert tickets(store.place_orders([order("a", 2), order("a", 1)])) == ["sold_out", (1,)]
    assert store.buyer_units("phone") == {"a": 1}


def test_each_request_gets_its_own_refusal(store: Store) -> None:
    store.create_sale("phone", 5, 1, None)
    store.create_sale("case", 1, 1, None)
    answers = store.place_orders([order("a", 0), order("b", sku="nothing"), order("c", 2), order("d", sku="case"), order("e")])
    assert [type(a) for a in answers] == [InvalidRequest, UnknownSku, LimitReached, PlacedOrder, PlacedOrder]
    assert tickets(answers)[3:] == [(1,), (1,)]  # each sku has its own tickets
    assert store.sale_stats("phone").sold == store.sale_stats("case").sold == 1


def test_a_batch_lands_as_the_same_orders_placed_one_by_one(store: Store, tmp_path: Path) -> None:
    """The batch against the same requests placed singly on a second store of the same kind."""
    requests = [
        order("a", 2, "k"),
        order("b"),
        order("a", 2, "k"),
        order("c", 3),
        order("a"),
        order("d", 2),
        order("b", 1, "k"),
        order("e"),
    ]
    alone = SqliteStore(str(tmp_path / "one-by-one.db"))
    for each in (store, alone):
        each.create_sale("phone", 6, 3, None)
    batched = store.place_orders(requests)
    single: list[Placement] = []
    for r in requests:
        try:
            single.append(alone.place_order(r.sku, r.user_id, r.quantity, idempotency_key=r.idempotency_key, request_hash=r.request_hash))
        except FlashsaleError as refused:
            single.append(refused)
    assert tickets(batched) == tickets(single)
    assert [getattr(a, "replayed", None) for a in batched] == [getattr(a, "replayed", None) for a in single]
    assert store.buyer_units("phone") == alone.buyer_units("phone")
    alone.close()


def test_returned_tickets_go_first_lowest_first_then_fresh_ones(store: Store) -> None:
    store.create_sale("phone", 5, 3, None)
    bought = store.place_orders([order("a"), order("b"), order("c"), order("d")])
    for answer in (bought[3], bought[1]):  # tickets 4 and 2 come back
        assert isinstance(answer, PlacedOrder)
        store.cancel_order(answer.order.order_id)
    answers = store.place_orders([order("e"), order("f", 3), order("g", 2), order("h")])
    # f needs 4 and two fresh ones, only 5 is left: sold out, and 4 stays for g.
    assert tickets(answers) == [(2,), "sold_out", (4, 5), "sold_out"]
    stats = store.sale_stats("phone")
    assert (stats.sold, stats.issued, stats.free, stats.available) == (5, 5, 0, 0)
    assert stats.invariants_hold, stats.violations()


def test_a_refused_requests_key_binds_nothing_and_the_next_one_places(store: Store) -> None:
    store.create_sale("phone", 1, 2, None)
    answers = store.place_orders([order("a", 2, "k"), order("a", 1, "k"), order("a", 1, "k")])
    assert tickets(answers) == ["sold_out", (1,), (1,)]
    assert [getattr(a, "replayed", None) for a in answers] == [None, False, True]
    assert store.buyer_units("phone") == {"a": 1}


def test_two_skus_in_one_batch_keep_their_own_tickets_limits_and_stock(store: Store) -> None:
    store.create_sale("phone", 2, 1, None)
    store.create_sale("case", 3, 2, None)
    answers = store.place_orders(
        [
            order("a", 1, "k"),
            order("a", 2, sku="case"),
            order("b"),
            order("a"),
            order("c"),
            order("b", 2, sku="case"),
            order("b", 1, sku="case"),
            order("a", 1, "k", sku="case"),  # a buyer's key spans skus: another body
        ]
    )
    assert tickets(answers) == [(1,), (1, 2), (2,), "limit_reached", "sold_out", "sold_out", (3,), "idempotency_key_reused"]
    assert store.buyer_units("phone") == {"a": 1, "b": 1}
    assert store.buyer_units("case") == {"a": 2, "b": 1}
    for sku in ("phone", "case"):
        stats = store.sale_stats(sku)
        assert stats.available == 0 and stats.invariants_hold, stats.violations()


def test_a_key_whose_order_was_cancelled_replays_the_cancelled_order(store: Store) -> None:
    store.create_sale("phone", 3, 2, None)
    first = store.place_order("phone", "a", 2, idempotency_key="k", request_hash=request_fingerprint("phone", 2)).order
    store.cancel_order(first.order_id)
    replay, other = store.place_orders([order("a", 2, "k"), order("b", 2)])
    assert isinstance(replay, PlacedOrder) and replay.replayed
    assert (replay.order.order_id, replay.order.status, replay.order.tickets) == (first.order_id, "cancelled", (1, 2))
    assert tickets([other]) == [(1, 2)]


def test_an_empty_batch_answers_nothing(store: Store) -> None:
    assert store.place_orders([]) == []


def test_a_single_order_is_a_batch_of_one(store: Store) -> None:
    store.create_sale("phone", 1, 1, None)
    with pytest.raises(UnknownSku):
        store.place_order("nothing", "a", 1)
    assert store.place_order("phone", "a", 1).order.ticket == 1
    with pytest.raises(SoldOut):
        store.place_order("phone", "b", 1)


# SQLite: one transaction, set-based, a savepoint per order when that fails ----------


def test_sqlite_a_batch_reads_a_few_times_not_once_an_order(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "set.db"))
    store.create_sale("phone", 100, 2, None)
    store.create_sale("case", 100, 2, None)
    statements: list[str] = []
    store._connection().set_trace_callback(statements.append)
    answers = store.place_orders([order(f"u{i}", 1 + i % 2, f"k{i}", sku=("phone", "case")[i % 2]) for i in range(40)])
    store._connection().set_trace_callback(None)
    assert all(isinstance(a, PlacedOrder) for a in answers)
    reads = [s for s in statements if s.startswith(("SELECT", "WITH"))]
    assert len(reads) == 2 * 2 + 2, reads  # each sku's sale and free tickets, then all buyers, all keys
    assert not any("one_order" in s for s in statements)  # no order needed its own savepoint
    store.close()


def test_sqlite_a_busy_database_fails_the_whole_batch_and_commits_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "busy.db")
    store = SqliteStore(path, busy_timeout_ms=50)
    store.create_sale("phone", 5, 1, None)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock past our busy timeout
    answers = store.place_orders([order("a"), order("b"), order("c", 0)])
    other.execute("ROLLBACK")
    assert all(isinstance(a, StoreError) for a in answers)
    assert len({id(a) for a in answers}) == 3  # one error each: every caller raises its own
    assert store.sale_stats("phone").sold == 0
    assert tickets(store.place_orders([order("a")])) == [(1,)]
    store.close()
    other.close()


def test_sqlite_a_constraint_failure_rolls_back_only_its_order(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "forged.db"))
    store.create_sale("phone", 5, 1, None)
    with store._transaction() as conn:  # a forged holder of ticket 2: the next fresh ticket cannot be recorded
        conn.execute("INSERT INTO orders (order_id, sku, user_id, quantity, status, created_at) VALUES ('x', 'other', 'z', 1, 'gone', 0)")
        conn.execute("INSERT INTO order_tickets (sku, ticket, order_id) VALUES ('phone', 2, 'x')")
    a, b = store.place_orders([order("a"), order("b")])
    assert isinstance(a, PlacedOrder) and a.order.tickets == (1,)
    assert isinstance(b, StoreError) and "conflicted" in b.detail
    stats = store.sale_stats("phone")
    assert (stats.sold, stats.issued) == (1, 1)  # b's ticket and count were rolled back with it
    assert store.list_orders("b") == [] and store.buyer_units("phone") == {"a": 1}
    store.close()
