"""OrderBatcher with plain threads on a real SQLite file: callers share transactions, each gets its own answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import pytest

from shared.errors import FlashsaleError, InvalidRequest, LimitReached, SoldOut, StoreError, UnknownSku
from shared.models import OrderRequest, PlacedOrder, request_fingerprint
from shared.store.base import Placement
from shared.store.batching import OrderBatcher
from shared.store.sqlite import SqliteStore

Answer = PlacedOrder | FlashsaleError


class Counting:
    """The real store, recording each transaction the batcher asks for: its size and when it was asked."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.batches: list[int] = []
        self.asked_at: list[float] = []

    def place_orders(self, requests: Sequence[OrderRequest]) -> list[Placement]:
        self.asked_at.append(time.monotonic())
        self.batches.append(len(requests))
        return self.inner.place_orders(requests)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    made = SqliteStore(str(tmp_path / "batching.db"))
    yield made
    made.close()


def buy(batcher: OrderBatcher, user: str, quantity: int = 1, sku: str = "phone") -> Answer:
    try:
        return batcher.place_order(sku, user, quantity, request_hash=request_fingerprint(sku, quantity))
    except FlashsaleError as refused:
        return refused


def at_once(calls: dict[str, Callable[[], Answer]]) -> dict[str, Answer]:
    """Run every call in its own thread, all released at the same instant."""
    start = threading.Barrier(len(calls))
    answers: dict[str, Answer] = {}

    def run(name: str, call: Callable[[], Answer]) -> None:
        start.wait()
        answers[name] = call()

    threads = [threading.Thread(target=run, args=item) for item in calls.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a caller never got its answer"
    return answers


def test_concurrent_callers_share_transactions(store: SqliteStore) -> None:
    store.create_sale("phone", 100, 1, None)
    counting = Counting(store)
    batcher = OrderBatcher(counting, max_wait_s=0.05, max_size=64)
    users = [f"u{i}" for i in range(40)]
    answers = at_once({u: partial(buy, batcher, u) for u in users})
    assert sum(counting.batches) == 40
    assert len(counting.batches) < 40, counting.batches  # fewer transactions than orders: batching happened
    assert all(isinstance(a, PlacedOrder) and a.order.user_id == u for u, a in answers.items())
    assert sorted(t for a in answers.values() if isinstance(a, PlacedOrder) for t in a.order.tickets) == list(range(1, 41))
    assert store.sale_stats("phone").sold == 40


def test_a_lone_order_waits_at_most_max_wait(store: SqliteStore) -> None:
    store.create_sale("phone", 5, 1, None)
    counting = Counting(store)
    batcher = OrderBatcher(counting, max_wait_s=0.2, max_size=64)
    pressed = time.monotonic()
    answer = buy(batcher, "alone")
    assert isinstance(answer, PlacedOrder)
    waited = counting.asked_at[0] - pressed
    assert 0.2 <= waited < 0.2 + 0.1, waited  # it waited for company, and no longer than allowed


def test_a_full_batch_is_written_without_waiting(store: SqliteStore) -> None:
    store.create_sale("phone", 100, 1, None)
    counting = Counting(store)
    batcher = OrderBatcher(counting, max_wait_s=60, max_size=4)
    started = time.monotonic()
    answers = at_once({f"u{i}": partial(buy, batcher, f"u{i}") for i in range(8)})
    assert time.monotonic() - started < 10
    assert counting.batches == [4, 4]
    assert all(isinstance(a, PlacedOrder) for a in answers.values())


def test_each_caller_gets_its_own_answer(store: SqliteStore) -> None:
    store.create_sale("phone", 10, 2, None)
    batcher = OrderBatcher(Counting(store), max_wait_s=0.05, max_size=64)
    answers = at_once(
        {
            "zero": lambda: buy(batcher, "zero", quantity=0),
            "unknown": lambda: buy(batcher, "unknown", sku="nothing"),
            "greedy": lambda: buy(batcher, "greedy", quantity=3),
            "ada": lambda: buy(batcher, "ada"),
            "bob": lambda: buy(batcher, "bob", quantity=2),
        }
    )
    assert isinstance(answers["zero"], InvalidRequest)
    assert isinstance(answers["unknown"], UnknownSku)
    assert isinstance(answers["greedy"], LimitReached)
    for user, quantity in (("ada", 1), ("bob", 2)):
        mine = answers[user]
        assert isinstance(mine, PlacedOrder) and (mine.order.user_id, mine.order.quantity) == (user, quantity)
    assert store.buyer_units("phone") == {"ada": 1, "bob": 2}


def test_one_callers_sold_out_does_not_fail_the_others(store: SqliteStore) -> None:
    store.create_sale("phone", 5, 1, None)
    counting = Counting(store)
    batcher = OrderBatcher(counting, max_wait_s=0.05, max_size=64)
    answers = at_once({f"u{i}": partial(buy, batcher, f"u{i}") for i in range(12)})
    placed = {u: a for u, a in answers.items() if isinstance(a, PlacedOrder)}
    assert len(placed) == 5 and all(a.order.user_id == u for u, a in placed.items())
    assert all(isinstance(a, SoldOut) for u, a in answers.items() if u not in placed)
    assert len(counting.batches) < 12
    assert store.sale_stats("phone").sold == 5


def test_the_next_batch_collects_while_one_is_written(store: SqliteStore) -> None:
    store.create_sale("phone", 100, 1, None)
    writing, release = threading.Event(), threading.Event()

    class SlowFirst(Counting):
        def place_orders(self, requests: Sequence[OrderRequest]) -> list[Placement]:
            if not self.batches:
                writing.set()
                release.wait(30)
            return super().place_orders(requests)

    slow = SlowFirst(store)
    batcher = OrderBatcher(slow, max_wait_s=0, max_size=64)  # no wait at all: only the busy writer holds a batch back
    first = threading.Thread(target=buy, args=(batcher, "first"))
    first.start()
    assert writing.wait(10)
    later = [threading.Thread(target=buy, args=(batcher, f"u{i}")) for i in range(10)]
    for thread in later:
        thread.start()
    deadline = time.monotonic() + 10
    while (batcher._open is None or len(batcher._open.requests) < 10) and time.monotonic() < deadline:
        time.sleep(0.005)
    release.set()
    for thread in [first, *later]:
        thread.join(30)
    assert slow.batches == [1, 10]
    assert store.sale_stats("phone").sold == 11


def test_a_store_that_raises_fails_every_caller_and_the_next_batch_still_runs(store: SqliteStore) -> None:
    store.create_sale("phone", 100, 1, None)

    class Broken(Counting):
        def place_orders(self, requests: Sequence[OrderRequest]) -> list[Placement]:
            if not self.batches:
                self.batches.append(len(requests))
                raise RuntimeError("disk on fire")
            return super().place_orders(requests)

    broken = Broken(store)
    batcher = OrderBatcher(broken, max_wait_s=0.05, max_size=64)
    outcomes: dict[str, BaseException | Answer] = {}

    def press(user: str) -> None:
        try:
            outcomes[user] = buy(batcher, user)
        except RuntimeError as exc:  # the leader sees the store's own error
            outcomes[user] = exc

    threads = [threading.Thread(target=press, args=(f"u{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(outcomes) == 6, "a caller hangs"
    leaders = [o for o in outcomes.values() if isinstance(o, RuntimeError)]
    assert len(leaders) == 1 and all(isinstance(o, StoreError) for o in outcomes.values() if o not in leaders)
    assert isinstance(buy(batcher, "later"), PlacedOrder)
    assert store.sale_stats("phone").sold == 1


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        OrderBatcher(Counting(SqliteStore(":memory:")), max_wait_s=0.002, max_size=0)
