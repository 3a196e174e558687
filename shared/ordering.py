"""Placing an order: the request path of the place-order function.

Cheapest refusal first. A worker that has seen the sale sold out answers from
memory; otherwise the Redis gate turns away the crowd in one round trip; only
admitted buyers reach the database, which decides for real. Losing Redis costs
speed (every buyer goes to the database), never correctness.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar, cast

from shared.blocking import gevent_active
from shared.errors import FlashsaleError, LimitReached, OutcomeUnknown, SaleNotStarted, SoldOut, StoreError, Unavailable, UnknownSku
from shared.events import EventEmitter, order_placed_event
from shared.gate import Admission, Gate
from shared.models import Order, PlacedOrder, Sale, request_fingerprint, utcnow
from shared.redisconn import RedisDown
from shared.soldout import SoldOutMemo, SoldOutMemos
from shared.stock import StockCache
from shared.store.base import Store
from shared.ttlcache import TTLCache

log = logging.getLogger(__name__)


def _bounded_semaphore(value: int) -> AbstractContextManager[bool]:
    """gevent's own semaphore in a gevent worker, threading's elsewhere.

    Monkey-patching leaves ``threading.BoundedSemaphore`` pure Python, a
    Condition with a new lock for every waiter: by timeit under gevent, 4.8 us
    an uncontended acquire and release against gevent's 0.2 us; with 5,000
    greenlets through 48 slots, about 55 us of CPU a press against 26 us. In
    a crowd every press before the sold-out memo arms queues here, and the
    crowd's profile put 2.4 % of the order workers' samples in its acquire and
    release.
    """
    if gevent_active():
        from gevent.lock import BoundedSemaphore

        return cast(AbstractContextManager[bool], BoundedSemaphore(value))
    return threading.BoundedSemaphore(value)


SALE_CACHE_SECONDS = 1.0
SALES_HELD = 10_000  # unknown skus from a client must not grow memory forever
# Presses of one worker asking the gate at once. Fewer than the Redis pool's
# connections (redisconn.MAX_CONNECTIONS), so in a crowd the presses wait here,
# where each looks at the sold-out memo again once its turn comes, rather than
# inside the Redis client: the sale sells out while thousands of them wait, and
# every one the memo now refuses is answered without a round trip.
GATE_SLOTS = 48
# A cold gate another worker is rebuilding: how long a press waits for it before the database decides alone.
GATE_WARM_SECONDS = 2.0
GATE_WARM_POLL_SECONDS = 0.02
T = TypeVar("T")


class OrderPlacer(Protocol):
    """Where admitted orders are written: the store itself, or an OrderBatcher in front of it (group commit)."""

    def place_order(
        self, sku: str, user_id: str, quantity: int, *, idempotency_key: str | None = None, request_hash: str | None = None
    ) -> PlacedOrder: ...


class OrderDesk:
    def __init__(
        self,
        store: Store,
        gate: Gate,
        stock: StockCache,
        emitter: EventEmitter,
        *,
        sold_out_memo_seconds: float,
        placer: OrderPlacer | None = None,
    ) -> None:
        self.store = store
        self.placer = placer or store
        self.gate = gate
        self.stock = stock
        self.emitter = emitter
        self.memos = SoldOutMemos(sold_out_memo_seconds)
        self._sales: TTLCache[str, Sale | None] = TTLCache(SALES_HELD, clock=time.monotonic)  # None: no sale for that sku
        self._reading: dict[str, threading.Event] = {}  # skus one request is reading from the database now
        self._warming: dict[str, threading.Event] = {}  # skus whose cold gate one press is rebuilding or waiting for
        self._warmed: dict[str, bool] = {}  # how the last warming of each sku ended (real skus only: after sale())
        self._gate_slots = _bounded_semaphore(GATE_SLOTS)
        self.observers: list[Callable[[str, str], None]] = []  # (sku, outcome) for metrics
        self.on_store_error: list[Callable[[Exception], None]] = []

    # what a worker remembers -------------------------------------------
    def sale(self, sku: str) -> Sale:
        """The sale, read at most once a SALE_CACHE_SECONDS per worker, by one request at a time.

        A crowd arrives at once: without the single read, every buyer of the
        first instant (thousands) queued a read on the worker's one database
        thread, and the winners' writes waited behind them. Once a sale was
        read, a lapsed copy answers while one request reads it again.
        """
        cached = self._sales.entries.get(sku)
        if cached is not None and (cached[0] > time.monotonic() or sku in self._reading):
            return self._known(sku, cached[1])
        reading = self._reading.get(sku)
        if reading is not None:  # nothing read yet, and another request is reading it: wait for that read
            reading.wait()
            return self.sale(sku)
        self._reading[sku] = done = threading.Event()
        try:
            sale = self.store.get_sale(sku)
            self._sales.set(sku, sale, SALE_CACHE_SECONDS)
        finally:
            del self._reading[sku]
            done.set()
        return self._known(sku, sale)

    def known_total(self, sku: str) -> int | None:
        """The sale's stock as this worker last read it, lapsed or not; None if it never did. No I/O, for metrics."""
        cached = self._sales.entries.get(sku)
        sale = cached[1] if cached is not None else None
        return sale.total if sale is not None else None

    @staticmethod
    def _known(sku: str, sale: Sale | None) -> Sale:
        if sale is None:
            raise UnknownSku(f"no sale for sku {sku!r}")
        return sale

    def refuse_from_memory(self, sku: str, user_id: str) -> None:
        """Raise SoldOut when this worker knows the sale is sold out and ``user_id`` holds none of it.

        No I/O, no thread hop. ``user_id`` may come from a token whose signature
        is not checked yet: the answer states a public fact (``GET /stock`` says
        the same), hands out nothing and changes nothing. A holder, whose answer
        may be their order, is never refused here.
        """
        memo = self.memos.peek(sku)
        if memo is not None and memo.refuses(user_id):
            self._observe(sku, "sold_out")
            raise SoldOut()

    def refuse_unverified(self, sku: str) -> None:
        """Raise SoldOut when this worker knows the sale is sold out; for a token that failed verification.

        Anyone who holds none of a sold-out sale hears "sold out" before the
        signature check (:meth:`refuse_from_memory`); a token naming a holder
        reaches the check. Answered 401 there, a forged token would tell
        whether the user it names holds units: it gets the same "sold out".
        """
        if self.memos.peek(sku) is not None:
            self._observe(sku, "sold_out")
            raise SoldOut()

    def remember_sold_out(self, sale: Sale) -> None:
        """The gate or the database said sold out: load who may hold units, once per worker at a time."""
        if not self.memos.begin_load(sale.sku):
            return
        try:
            first = self.memos.peek(sale.sku) is None
            last = self.memos.last(sale.sku)
            holders = set(last.holders) if last else set()  # holders only grow: one who cancelled merely goes the slow way
            from_database = last is not None and last.from_database
            try:
                # Every buyer the gate counts units for, admissions whose order
                # may still be on its way included: the memo answers at once.
                holders.update(self.gate.holders(sale.sku))
                self.memos.remember(sale.sku, frozenset(holders), from_database=from_database)
            except RedisDown:
                pass
            if not from_database:
                # Then, until one such read succeeds, every order the database
                # has: one written while Redis was down is in the database only.
                # In a crowd this read queues behind the winners' writes, which
                # is why the memo does not wait for it.
                holders.update(self.store.buyer_units(sale.sku))
                self.memos.remember(sale.sku, frozenset(holders), from_database=True)
        except StoreError as exc:
            self._store_failed(exc)  # the memo keeps the gate's holders; the next renewal reads the database again
        finally:
            self.memos.end_load(sale.sku)
        if first:
            self.stock.mark_sold_out(sale.sku, sale.total)

    # the request path ----------------------------------------------------
    def place(self, user_id: str, sku: str, quantity: int, idempotency_key: str | None) -> PlacedOrder:
        outcome = FlashsaleError.code  # anything not a FlashsaleError is a bug, answered 500 internal
        memo, rechecking = self.memos.get(sku)
        try:
            placed = self._place(user_id, sku, quantity, idempotency_key, memo, rechecking)
            outcome = "idempotent_replay" if placed.replayed else "confirmed"
            return placed
        except FlashsaleError as error:
            outcome = error.code
            raise
        finally:
            if rechecking:
                self.memos.end_recheck(sku)
            self._observe(sku, outcome)

    def _observe(self, sku: str, outcome: str) -> None:
        for observe in self.observers:
            observe(sku, outcome)

    def _place(
        self, user_id: str, sku: str, quantity: int, idempotency_key: str | None, memo: SoldOutMemo | None, rechecking: bool
    ) -> PlacedOrder:
        if memo is not None and memo.refuses(user_id):
            raise SoldOut()  # no order of theirs to give back, nothing left to sell
        fingerprint = request_fingerprint(sku, quantity)
        if memo is not None:  # a holder: their answer may be their order
            return self._replay_or(SoldOut(), user_id, idempotency_key, fingerprint)
        sale = self._guard(lambda: self.sale(sku))
        if not sale.started(utcnow()):
            raise SaleNotStarted(f"the sale starts at {sale.starts_at.isoformat() if sale.starts_at else 'soon'}")
        if quantity > sale.per_user_limit:
            raise LimitReached(f"this sale allows {sale.per_user_limit} per buyer")
        # The gate before any database read: in a crowd almost every press is
        # refused here, and a refused buyer the gate counts no units for has no
        # order to give back, so only buyers who hold units pay for a lookup.
        admission = self._admission(sale, user_id, quantity, rechecking=rechecking)
        epoch: str | None = None
        if admission is not None and admission.verdict == "sold_out":
            self.remember_sold_out(sale)
            if admission.held == 0:
                raise SoldOut()
            return self._replay_or(SoldOut(), user_id, idempotency_key, fingerprint)
        if admission is not None and admission.verdict == "limit_reached":
            if not self._guard(lambda: self._gate_overcounts(sale, user_id, quantity, idempotency_key)):
                raise LimitReached(f"this sale allows {sale.per_user_limit} per buyer")
            # else the database decides: it sells, replays or refuses
        elif admission is not None and admission.verdict == "admitted":
            self.memos.forget(sale.sku)  # units came back since this worker last heard "sold out"
            epoch = admission.epoch
        try:
            # The database re-checks everything and answers a known Idempotency-Key with its order.
            placed = self.placer.place_order(sku, user_id, quantity, idempotency_key=idempotency_key, request_hash=fingerprint)
        except SoldOut:
            self._gate(lambda e: self.gate.close(sku, e), epoch)
            self.remember_sold_out(sale)
            raise
        except LimitReached:
            self._gate(lambda e: self.gate.release(sku, user_id, quantity, e, units_after=sale.per_user_limit), epoch)
            raise
        except OutcomeUnknown as exc:
            # It may have committed: the gate keeps the unit (healing gives it back if no order
            # holds it), and the buyer's retry with the same key finds the truth.
            self._store_failed(exc)
            raise Unavailable(
                "the order may or may not have been placed; retry with the same Idempotency-Key to find out", retry_after=1
            ) from exc
        except StoreError as exc:
            self._gate(lambda e: self.gate.release(sku, user_id, quantity, e), epoch)
            self._store_failed(exc)
            raise Unavailable("the database is unavailable; try again shortly") from exc
        except Exception:
            self._gate(lambda e: self.gate.release(sku, user_id, quantity, e), epoch)
            raise
        if placed.replayed:
            self._gate(lambda e: self.gate.release(sku, user_id, quantity, e), epoch)
        else:
            if epoch is None:
                # The database sold without the gate (Redis down, a cold gate): no admission ended
                # the memo, so this sale does, or a restock, a cancellation or a heal goes on hearing
                # "sold out" while units are left. An admission already ended it: a winner whose batch
                # lands after the sell-out must not make the losers load the holders again.
                self.memos.forget(sku)
            self.emitter.emit(order_placed_event(placed.order, sale.total))
        return placed

    def _replay_or(self, refusal: FlashsaleError, user_id: str, idempotency_key: str | None, fingerprint: str) -> PlacedOrder:
        """The buyer's earlier order under ``idempotency_key`` if there is one; otherwise ``refusal`` is raised."""
        if idempotency_key is not None:
            earlier = self._guard(lambda: self.store.find_order_by_key(user_id, idempotency_key))
            if earlier is not None:
                return PlacedOrder.replay_of(earlier, fingerprint)
        raise refusal

    def _admission(self, sale: Sale, user_id: str, quantity: int, *, rechecking: bool = False) -> Admission | None:
        """The gate's verdict; None when the database must decide alone (Redis down, or a rebuild under way elsewhere).

        Raises SoldOut, without asking the gate, when the sale sold out while
        this press waited for its turn and its buyer holds none of it; never
        for the one press re-checking a lapsed memo, whose errand is the gate.
        """
        with self._gate_slots:
            memo = None if rechecking else self.memos.peek(sale.sku)
            if memo is not None and memo.refuses(user_id):
                raise SoldOut()
            return self._ask_gate(sale, user_id, quantity)

    def _ask_gate(self, sale: Sale, user_id: str, quantity: int) -> Admission | None:
        try:
            admission = self.gate.admit(sale.sku, user_id, quantity)
            if admission.verdict == "cold":
                if not self._warm_gate(sale.sku):
                    return None
                admission = self.gate.admit(sale.sku, user_id, quantity)
        except RedisDown:
            return None
        return admission if admission.verdict in {"admitted", "sold_out", "limit_reached"} else None

    def _warm_gate(self, sku: str) -> bool:
        """Whether the cold gate of ``sku`` is warm again, rebuilt by this press or by another worker meanwhile.

        A crowd meets a cold gate at once (a sale's first press, Redis
        restarted): without the wait, every press but the rebuilder's went to
        the database alone, and in the benchmark hundreds of them queued on the
        worker's one database thread for up to 8 s. One press per worker
        rebuilds or waits for the worker that does, at most GATE_WARM_SECONDS;
        the others wait for that press. Then the database decides alone, as
        when Redis is down.
        """
        warming = self._warming.get(sku)
        if warming is not None:
            warming.wait(GATE_WARM_SECONDS)
            return self._warmed.get(sku, False)
        self._warming[sku] = done = threading.Event()
        warm = False
        try:
            if self.gate.try_rebuild(self.store, sku) is not None:
                warm = True
            else:
                deadline = time.monotonic() + GATE_WARM_SECONDS
                while not (warm := self.gate.warm(sku)) and time.monotonic() < deadline:
                    time.sleep(GATE_WARM_POLL_SECONDS)  # gevent's sleep, once time is patched
        finally:
            self._warmed[sku] = warm
            del self._warming[sku]
            done.set()
        return warm

    def _gate_overcounts(self, sale: Sale, user_id: str, quantity: int, idempotency_key: str | None) -> bool:
        """Whether a ``limit_reached`` from the gate may be wrong.

        The gate counts a unit at admission, before the database writes. A
        request cut off after admission (its worker killed) leaves a count
        no order backs, and a retry racing its own first request with the same
        Idempotency-Key meets that request's count. Either buyer deserves the
        database's answer, not a refusal; two indexed reads, paid only by
        buyers the gate turns away for the limit.
        """
        held = sum(o.quantity for o in self.store.list_orders(user_id) if o.sku == sale.sku and o.status == "confirmed")
        if held + quantity <= sale.per_user_limit:
            return True
        return idempotency_key is not None and self.store.find_order_by_key(user_id, idempotency_key) is not None

    def _gate(self, change: Callable[[str], object], epoch: str | None) -> None:
        if epoch is None:
            return
        try:
            change(epoch)
        except RedisDown:
            pass  # the gate is rebuilt from the database when Redis is back

    def _guard(self, read: Callable[[], T]) -> T:
        try:
            return read()
        except StoreError as exc:
            self._store_failed(exc)
            raise Unavailable("the database is unavailable; try again shortly") from exc

    def _store_failed(self, exc: Exception) -> None:
        log.warning("database unavailable: %s", exc)
        for observe in self.on_store_error:
            observe(exc)

    def orders_of(self, user_id: str) -> list[Order]:
        return self._guard(lambda: self.store.list_orders(user_id))
