"""Several OS processes race on one real SQLite file. These fail on an oversell."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from pathlib import Path

import pytest

from shared.store.sqlite import SqliteStore
from tests.concurrency.racers import race

pytestmark = pytest.mark.concurrency
PROCESSES = 6


def run_race(path: Path, sku: str, users_per_process: list[list[str]], naive: bool = False) -> Counter[str]:
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 1.5  # time for every spawned process to import and open the file
    with ctx.Pool(len(users_per_process)) as pool:
        results = pool.starmap(race, [(str(path), sku, users, start_at, naive) for users in users_per_process])
    total: Counter[str] = Counter()
    for result in results:
        total.update(result)
    return total


def test_many_processes_never_oversell(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    store = SqliteStore(str(path))
    store.create_sale("phone", 100, 1, None)
    users = [[f"p{p}-u{i}" for i in range(60)] for p in range(PROCESSES)]  # 360 buyers, 100 units
    outcome = run_race(path, "phone", users)
    stats = store.sale_stats("phone")
    assert stats.sold == 100, stats  # not more (oversell), not fewer (undersell)
    assert outcome["confirmed"] == 100 and outcome["sold_out"] == 260
    assert stats.duplicate_tickets == 0 and stats.tickets_out_of_range == 0
    assert sorted(t for o in [store.list_orders(u) for us in users for u in us] for order in o for t in order.tickets) == list(
        range(1, 101)
    )
    assert stats.invariants_hold, stats.violations()


def test_one_buyer_in_many_processes_gets_at_most_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    store = SqliteStore(str(path))
    store.create_sale("phone", 100, 2, None)
    outcome = run_race(path, "phone", [["same-buyer"] * 20 for _ in range(PROCESSES)])
    assert outcome["confirmed"] == 2 and outcome["limit_reached"] == 20 * PROCESSES - 2
    assert store.sale_stats("phone").max_units_per_buyer == 2


def test_the_race_catches_a_store_that_is_not_atomic(tmp_path: Path) -> None:
    """The same race against a read-then-write store must show an oversell, or the race proves nothing."""
    path = tmp_path / "race.db"
    store = SqliteStore(str(path))
    store.create_sale("phone", 20, 1, None)
    run_race(path, "phone", [[f"p{p}-u{i}" for i in range(30)] for p in range(PROCESSES)], naive=True)
    stats = store.sale_stats("phone")
    assert stats.sold > 20, "the naive store did not oversell: the race is not racing"
    assert not stats.invariants_hold
