"""Buyers racing through one process's OrderBatcher: native threads, or greenlets under gevent.

Run as ``python -m tests.concurrency.batch_racers ARGS_JSON`` (threads) or through
:mod:`tests.concurrency.gevent_racer` (gevent, patched first, the store offloaded as
in a gunicorn gevent worker). Prints the process's answers as JSON.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from shared.errors import FlashsaleError
from shared.models import OrderRequest, request_fingerprint
from shared.store.base import Placement
from shared.store.batching import OrderBatcher, PlacesOrders
from shared.store.offload import OffloadedStore
from shared.store.sqlite import SqliteStore


class Counting:
    def __init__(self, inner: PlacesOrders) -> None:
        self.inner = inner
        self.transactions = 0

    def place_orders(self, requests: Sequence[OrderRequest]) -> list[Placement]:
        self.transactions += 1
        return self.inner.place_orders(requests)


def race(path: str, sku: str, buyers: list[list[str]], start_at: float, *, gevent: bool) -> dict[str, Any]:
    """Each buyer list is one thread (or greenlet) pressing Buy for its users one after another."""
    store = SqliteStore(path)
    counting = Counting(OffloadedStore(store) if gevent else store)
    batcher = OrderBatcher(counting, max_wait_s=0.002, max_size=64)
    answers: list[dict[str, Any]] = []

    def press(users: list[str]) -> None:
        for user in users:
            try:
                order = batcher.place_order(sku, user, 1, request_hash=request_fingerprint(sku, 1)).order
                answers.append({"user": user, "order_id": order.order_id, "tickets": list(order.tickets)})
            except FlashsaleError as refused:
                answers.append({"user": user, "refused": refused.code})

    time.sleep(max(0.0, start_at - time.time()))  # every process starts at the same moment
    run_all(press, buyers, gevent=gevent)
    store.close()
    return {"answers": answers, "transactions": counting.transactions, "gevent": gevent}


def run_all(press: Callable[[list[str]], None], buyers: list[list[str]], *, gevent: bool) -> None:
    if gevent:
        import gevent as gevent_module

        gevent_module.joinall([gevent_module.spawn(press, users) for users in buyers])
        return
    threads = [threading.Thread(target=press, args=(users,)) for users in buyers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main(argv: list[str], *, gevent: bool = False) -> None:
    args = json.loads(argv[0])
    print(json.dumps(race(args["path"], args["sku"], args["buyers"], args["start_at"], gevent=gevent)))


if __name__ == "__main__":
    main(sys.argv[1:])
