"""Group commit: the orders a process's buyers press at about the same moment share one write.

On SQLite each write transaction ends in an fsync (``synchronous=FULL``), and
one process writes at a time: placed one by one, a crowd's winners queue for
one fsync each. :class:`OrderBatcher` stands in front of the store instead.
The first order to arrive while no batch is open opens one and leads it; the
orders arriving after it join. The leader writes the batch with one
``Store.place_orders`` call once it holds ``max_size`` orders, or once
``max_wait_s`` has passed and the previous batch's write has finished: while
one batch is written the next keeps collecting, so a busy store gets bigger
batches and an idle one costs a buyer at most ``max_wait_s``. Batches are
written one after another in the order they opened, so tickets follow arrival
order. Every caller returns after the transaction holding its order committed,
with its own answer or its own error.

The locks are :mod:`threading`'s, which gevent's monkey patching makes
cooperative: the same code serves a gunicorn gevent worker (whose store is the
:class:`~shared.store.offload.OffloadedStore`, so a leader waiting on the write
lets the loop collect the next batch) and plain threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.errors import OutcomeUnknown, StoreError
from shared.models import OrderRequest, PlacedOrder
from shared.store.base import Placement, again, placed


class PlacesOrders(Protocol):
    """All the batcher needs of a store (any :class:`~shared.store.base.Store`, or its offloaded wrapper)."""

    def place_orders(self, requests: Sequence[OrderRequest]) -> list[Placement]: ...


def _event() -> threading.Event:
    # Looked up at each call, not when this module was imported: gevent may patch threading after that.
    return threading.Event()


@dataclass
class _Batch:
    number: int  # batches are written in this order
    opened_at: float
    requests: list[OrderRequest] = field(default_factory=list)
    answers: list[Placement] = field(default_factory=list)
    written: threading.Event = field(default_factory=_event)


class OrderBatcher:
    def __init__(self, store: PlacesOrders, *, max_wait_s: float, max_size: int) -> None:
        if max_wait_s < 0 or max_size < 1:
            raise ValueError("max_wait_s must be >= 0 and max_size >= 1")
        self.store = store
        self.max_wait_s = max_wait_s
        self.max_size = max_size
        self._changed = threading.Condition()  # a batch filled, or a write finished
        self._open: _Batch | None = None
        self._opened = 0  # number of the newest batch
        self._written = 0  # every batch up to this number has finished
        self._finished: set[int] = set()  # batches past ``_written`` that finished early (their leader failed)

    def place_order(
        self,
        sku: str,
        user_id: str,
        quantity: int,
        *,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> PlacedOrder:
        """What ``Store.place_order`` answers or raises, once the order's batch has committed."""
        with self._changed:
            batch, leads = self._join(OrderRequest(sku, user_id, quantity, idempotency_key, request_hash))
            slot = len(batch.requests) - 1
        if leads:
            self._lead(batch)
        else:
            batch.written.wait()
        return placed(batch.answers[slot])

    def _join(self, request: OrderRequest) -> tuple[_Batch, bool]:
        leads = self._open is None
        if self._open is None:
            self._opened += 1
            self._open = _Batch(self._opened, time.monotonic())
        batch = self._open
        batch.requests.append(request)
        if len(batch.requests) >= self.max_size:
            self._open = None  # full: the next order opens the next batch
            self._changed.notify_all()
        return batch, leads

    def _lead(self, batch: _Batch) -> None:
        failure: BaseException | None = None
        writing = False
        try:
            with self._changed:
                deadline = batch.opened_at + self.max_wait_s
                while self._open is batch and (left := deadline - time.monotonic()) > 0:
                    self._changed.wait(left)
                while self._written < batch.number - 1:
                    self._changed.wait()  # the batch before is still being written: keep collecting
                if self._open is batch:
                    self._open = None
            writing = True
            batch.answers = self.store.place_orders(batch.requests)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._finish(batch, failure, unknown=writing and not isinstance(failure, StoreError))

    def _finish(self, batch: _Batch, failure: BaseException | None, *, unknown: bool = False) -> None:
        """Wake the batch's callers and the next leader, even if this leader was killed (a gevent timeout) or the store raised.

        ``unknown``: the write began and did not report back (its leader was
        killed while the database thread went on, or the write raised
        something other than the store's own error). It may have committed,
        so its callers hear OutcomeUnknown, never "not written".
        """
        with self._changed:
            if self._open is batch:
                self._open = None  # closed before the answers, so no order joins a batch nobody will write
            if failure is not None or len(batch.answers) != len(batch.requests):
                unwritten: StoreError = (
                    OutcomeUnknown(f"the batch's write began and its outcome is unknown: {failure!r}")
                    if unknown
                    else StoreError(f"the batch was not written: {failure!r}")
                )
                unwritten.__cause__ = failure
                batch.answers = [again(unwritten) for _ in batch.requests]
            self._finished.add(batch.number)
            while self._written + 1 in self._finished:
                self._written += 1
                self._finished.discard(self._written)
            self._changed.notify_all()
        batch.written.set()
