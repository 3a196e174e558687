"""Several OS processes, each with many buyers going through its own OrderBatcher, race on one real SQLite file.

Two processes run native threads, two run greenlets under gevent with the store
offloaded as in a gunicorn gevent worker. These fail on an oversell, a ticket
sold twice, a buyer over the limit, or a caller told something the database
does not hold.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shared.store.sqlite import SqliteStore

pytestmark = pytest.mark.concurrency
ROOT = Path(__file__).resolve().parents[2]
TOTAL, LIMIT = 150, 2
PROCESSES = [("threads", "tests.concurrency.batch_racers")] * 2 + [("gevent", "tests.concurrency.gevent_racer")] * 2
BUYERS_PER_PROCESS, PRESSES_PER_BUYER = 16, 5
GREEDY = [f"greedy{i}" for i in range(8)]  # press in every process: the limit must hold across processes


def buyers_of(process: int) -> list[list[str]]:
    """Each buyer (a thread or greenlet) presses for a few fresh users and one greedy user."""
    return [
        [f"p{process}-b{b}-u{n}" for n in range(PRESSES_PER_BUYER - 1)] + [GREEDY[(process + b) % len(GREEDY)]]
        for b in range(BUYERS_PER_PROCESS)
    ]


def test_batched_buyers_in_many_processes_sell_exactly_the_stock(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    store = SqliteStore(str(path))
    store.create_sale("phone", TOTAL, LIMIT, None)
    start_at = time.time() + 3  # time for every process to import and open the file
    racers = [
        subprocess.Popen(
            [sys.executable, "-m", module, json.dumps({"path": str(path), "sku": "phone", "buyers": buyers_of(p), "start_at": start_at})],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for p, (_, module) in enumerate(PROCESSES)
    ]
    results: list[dict[str, Any]] = []
    for racer in racers:
        out, _ = racer.communicate(timeout=120)
        assert racer.returncode == 0
        results.append(json.loads(out))
    assert [r["gevent"] for r in results] == [mode == "gevent" for mode, _ in PROCESSES]

    answers = [a for r in results for a in r["answers"]]
    presses = len(PROCESSES) * BUYERS_PER_PROCESS * PRESSES_PER_BUYER
    assert len(answers) == presses, "a caller got no answer"
    told = {a["order_id"]: (a["user"], tuple(a["tickets"])) for a in answers if "order_id" in a}
    refusals = Counter(a["refused"] for a in answers if "refused" in a)

    stats = store.sale_stats("phone")
    assert stats.sold == TOTAL == len(told), (stats, len(told))  # not more (oversell), not fewer (undersell)
    assert sorted(t for _, tickets in told.values() for t in tickets) == list(range(1, TOTAL + 1))  # each ticket once
    assert stats.max_units_per_buyer <= LIMIT
    assert set(refusals) <= {"sold_out", "limit_reached"} and sum(refusals.values()) == presses - TOTAL
    # Every caller's answer is what the database holds, and the database holds nothing no caller was told.
    users = {a["user"] for a in answers}
    held = {o.order_id: (o.user_id, o.tickets) for user in users for o in store.list_orders(user)}
    assert held == told
    for greedy in GREEDY:
        limited = [a for a in answers if a["user"] == greedy and a.get("refused") == "limit_reached"]
        assert not limited or sum(1 for user, _ in held.values() if user == greedy) == LIMIT
    assert stats.invariants_hold, stats.violations()
    # Group commit happened in every process: fewer transactions than presses.
    assert all(r["transactions"] < len(r["answers"]) for r in results), [r["transactions"] for r in results]
    store.close()
