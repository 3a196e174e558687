"""The crowd against the real stack: gunicorn gevent workers (several processes), the Redis gate, SQLite."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ops.devstack import Stack
from ops.sales import fresh_sku, open_sale
from shared.settings import Settings
from shared.store import open_store
from tests.clients import press_buy

pytestmark = [pytest.mark.concurrency, pytest.mark.integration]


def test_a_crowd_buys_exactly_the_stock(stack: Stack, stack_settings: Settings) -> None:
    store = open_store(stack_settings)
    sale = open_sale(stack_settings, fresh_sku("crowd"), 100, buyers=400, store=store)
    sku, users, tokens = sale.sku, sale.buyers.users, sale.buyers.tokens
    answers: list[tuple[int, dict[str, Any]]] = [(0, {})] * len(tokens)
    barrier = threading.Barrier(len(tokens))

    def buyer(i: int) -> None:
        barrier.wait()
        answers[i] = press_buy(stack.url("order"), tokens[i], sku, f"k{i}")

    threads = [threading.Thread(target=buyer, args=(i,)) for i in range(len(tokens))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    statuses = [status for status, _ in answers]
    assert statuses.count(201) == 100 and statuses.count(409) == 300, sorted(set(statuses))
    assert {body["code"] for status, body in answers if status == 409} == {"sold_out"}
    stats = store.sale_stats(sku)
    assert stats.sold == 100 and stats.invariants_hold, stats.violations()
    # Every 201 is in the database; every refused buyer has no order.
    for user, (status, body) in zip(users, answers, strict=True):
        orders = store.list_orders(user.user_id)
        if status == 201:
            assert [o.order_id for o in orders] == [body["order_id"]]
        else:
            assert orders == []
    assert sorted(int(body["ticket"]) for status, body in answers if status == 201) == list(range(1, 101))
