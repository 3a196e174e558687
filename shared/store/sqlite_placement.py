"""How the SQLite store places orders: a batch in one transaction, set-based, order by order when it must be.

Orders arriving together share one transaction
(``place_orders``, fed by :class:`shared.store.batching.OrderBatcher`): a
commit's fsync is paid once per batch, not once per order. Inside it the batch
is set-based (a few reads, every order decided in Python in list order, a few
``executemany`` writes), since once fsync is shared the per-order statements
are what is left to pay; anything unexpected falls back to a savepoint per order.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from shared.errors import FlashsaleError, InvalidRequest, LimitReached, SoldOut, StoreError, UnknownSku
from shared.models import Order, OrderRequest, PlacedOrder, utcnow
from shared.store.base import Placement, PlacesOneAsABatch, again


def _order_id(count: int) -> list[str]:
    """``count`` new order ids: 32 hex digits each, the millisecond first, then 80 random bits.

    One ``os.urandom`` call for a whole batch, sliced: 0.3 us an id for 64,
    where an ``os.urandom`` call an id took 1.5 us on the same machine (and a
    uuid4 object more still).

    Ids that grow with time append to the orders primary key and to
    order_tickets_by_order; random ones dirty a leaf page of each per order,
    which a group commit writes to the WAL and a checkpoint writes again:
    that, not the SQL, was most of a batch's commit. The ids of one batch
    share their millisecond and differ in their random bits.
    """
    millisecond = f"{time.time_ns() // 1_000_000:012x}"
    random = os.urandom(10 * count).hex()
    return [millisecond + random[start : start + 20] for start in range(0, 20 * count, 20)]


def _confirmed(request: OrderRequest, tickets: tuple[int, ...], created_at: datetime) -> Order:
    """The confirmed order a request becomes, holding ``tickets``."""
    return Order(
        order_id=_order_id(1)[0],
        sku=request.sku,
        user_id=request.user_id,
        quantity=request.quantity,
        tickets=tickets,
        status="confirmed",
        created_at=created_at,
        idempotency_key=request.idempotency_key,
        request_hash=request.request_hash,
    )


class _Diverged(Exception):
    """The database is not what the batch read (a row count is off): the batch is placed again order by order."""


@dataclass
class _Stock:
    """One sku's stock as a batch read it, moved on by each order the batch decides."""

    total: int
    per_user_limit: int
    issued: int  # as read: the batch's fresh tickets follow it
    returned: list[int]  # the lowest free tickets, as many as the batch could take
    returned_taken: int = 0
    fresh_taken: int = 0

    def take(self, quantity: int) -> tuple[int, ...]:
        """The next order's tickets: the lowest returned ones first, then fresh ones. Raise SoldOut, taking nothing."""
        # The usual order takes one fresh ticket: that case builds no list and no range (0.3 us a call, not 0.9).
        taken = self.returned_taken
        returned = self.returned[taken : taken + quantity] if taken < len(self.returned) else []
        fresh = quantity - len(returned)
        issued = self.issued + self.fresh_taken
        if issued + fresh > self.total:
            raise SoldOut()
        self.returned_taken = taken + len(returned)
        self.fresh_taken += fresh
        if returned:
            return (*returned, *range(issued + 1, issued + fresh + 1))
        if fresh == 1:
            return (issued + 1,)
        return tuple(range(issued + 1, issued + fresh + 1))


@dataclass
class _Batch:
    """What a batch of orders needs from the database, read once, and the orders decided against it in list order."""

    stock: dict[str, _Stock]  # by sku; a sku without a sale is absent
    held: dict[tuple[str, str], int]  # units each (sku, buyer) holds, the batch's orders included
    by_key: dict[tuple[str, str], Order]  # (buyer, Idempotency-Key): the order it bought, before or in the batch
    confirmed_at: datetime  # one commit confirms every order of the batch: one moment for all
    # What _write_batch inserts, added to as each order is confirmed, in list order.
    order_rows: list[tuple[str, str, str, int, str | None, str | None, float]] = field(default_factory=list)
    ticket_rows: list[tuple[str, int, str]] = field(default_factory=list)
    bought: dict[tuple[str, str], int] = field(default_factory=dict)  # units the batch's orders take, by (sku, buyer)

    def decide(self, requests: Sequence[OrderRequest]) -> list[Placement]:
        """Each request's answer, in list order, every order seeing the ones before it.

        One loop with its lookups in locals, building the rows
        ``_write_batch`` inserts as it goes, the batch's order ids from one
        ``os.urandom`` call. For 64 one-unit orders, by timeit without the SQL
        (best of alternating rounds, two runs): 0.21-0.24 ms, against
        0.47-0.50 ms with a method call, an ``os.urandom`` call and its rows
        built again from the ``Order`` for each order.
        """
        stock_of, held, by_key = self.stock.get, self.held, self.by_key
        order_rows, ticket_rows, bought = self.order_rows, self.ticket_rows, self.bought
        confirmed_at = self.confirmed_at
        created_at = confirmed_at.timestamp()
        order_ids = iter(_order_id(len(requests)))
        answers: list[Placement] = []
        for request in requests:
            sku, user_id, quantity, key = request.sku, request.user_id, request.quantity, request.idempotency_key
            try:
                # The checks of _reserve_and_confirm in its order, so both paths give the same answer.
                if quantity < 1:
                    raise InvalidRequest("quantity must be at least 1")
                if key is not None and (earlier := by_key.get((user_id, key))) is not None:
                    answers.append(PlacedOrder.replay_of(earlier, request.request_hash))
                    continue
                stock = stock_of(sku)
                if stock is None:
                    raise UnknownSku(f"no sale for sku {sku!r}")
                buyer = (sku, user_id)
                units = held.get(buyer, 0)
                if units + quantity > stock.per_user_limit:
                    raise LimitReached(f"this sale allows {stock.per_user_limit} per buyer")
                tickets = stock.take(quantity)
            except FlashsaleError as refused:
                answers.append(refused)
                continue
            order_id = next(order_ids)
            request_hash = request.request_hash
            order = Order(order_id, sku, user_id, quantity, tickets, "confirmed", confirmed_at, key, request_hash)
            held[buyer] = units + quantity
            if key is not None:
                by_key[(user_id, key)] = order
            bought[buyer] = bought.get(buyer, 0) + quantity
            order_rows.append((order_id, sku, user_id, quantity, key, request_hash, created_at))
            for ticket in tickets:
                ticket_rows.append((sku, ticket, order_id))
            answers.append(PlacedOrder(order))
        return answers


class SqlitePlacement(PlacesOneAsABatch):
    """SqliteStore's order placement, as a base class; the store supplies what is declared under TYPE_CHECKING."""

    if TYPE_CHECKING:
        _ORDER_COLUMNS: str

        def _errors(self) -> AbstractContextManager[None]: ...

        def _transaction(self, *, write: bool = True) -> AbstractContextManager[sqlite3.Connection]: ...

        @staticmethod
        def _sale_row(conn: sqlite3.Connection, sku: str) -> sqlite3.Row | None: ...

        @staticmethod
        def _order_holding(row: sqlite3.Row, held: tuple[int, ...]) -> Order: ...

        def _find_by_key(self, conn: sqlite3.Connection, user_id: str, key: str) -> Order | None: ...

    def place_orders(self, requests: Sequence[OrderRequest]) -> list[Placement]:
        """All the orders in one write transaction, so one fsync confirms them all.

        The batch is read once, decided in Python in list order and written
        with a few statements (``_place_set``), as if the orders had been
        placed one by one. Should the database disagree with what was read (a
        constraint failing, a row count off), the batch is rolled back to its
        start and placed again order by order, each in its own savepoint
        (``_place_one``): then a failure costs that order alone, and the
        answers stay exact.
        """
        if not requests:
            return []
        try:
            with self._errors(), self._transaction() as conn:
                answers = self._place_batch(conn, requests)
        except StoreError as failed:
            # Nothing was committed: every request gets the failure (its own
            # instance, since each caller raises it from its own thread).
            return [again(failed) for _ in requests]
        return answers

    def _place_batch(self, conn: sqlite3.Connection, requests: Sequence[OrderRequest]) -> list[Placement]:
        conn.execute("SAVEPOINT batch")
        try:
            answers = self._place_set(conn, requests)
        except (sqlite3.IntegrityError, _Diverged):
            # Nothing else writes inside BEGIN IMMEDIATE, so this is a row the
            # batch did not expect (a ticket already held, say): find the order
            # it belongs to by placing them one at a time.
            conn.execute("ROLLBACK TO batch")
            answers = [self._place_one(conn, request) for request in requests]
        conn.execute("RELEASE batch")
        return answers

    def _place_set(self, conn: sqlite3.Connection, requests: Sequence[OrderRequest]) -> list[Placement]:
        batch = self._read_batch(conn, requests)
        answers = batch.decide(requests)
        self._write_batch(conn, batch)
        return answers

    def _read_batch(self, conn: sqlite3.Connection, requests: Sequence[OrderRequest]) -> _Batch:
        """Everything the batch's decisions depend on, in a few queries: the write lock keeps it true until commit."""
        wanted = [request for request in requests if request.quantity >= 1]  # the others are refused before any read
        stock: dict[str, _Stock] = {}
        for sku in dict.fromkeys(request.sku for request in wanted):
            sale = self._sale_row(conn, sku)
            if sale is None:
                continue
            total, per_user_limit, issued = sale["total"], sale["per_user_limit"], sale["issued"]
            # No order takes more than the limit, so the batch never needs more returned tickets than this.
            most = sum(min(request.quantity, per_user_limit) for request in wanted if request.sku == sku)
            stock[sku] = _Stock(total, per_user_limit, issued, self._lowest_free(conn, sku, most))
        held = self._held_units(conn, {(r.sku, r.user_id) for r in wanted if r.sku in stock})
        by_key = self._orders_by_key(conn, {(r.user_id, r.idempotency_key) for r in wanted if r.idempotency_key is not None})
        return _Batch(stock, held, by_key, utcnow())

    @staticmethod
    def _lowest_free(conn: sqlite3.Connection, sku: str, count: int) -> list[int]:
        return [
            row["ticket"] for row in conn.execute("SELECT ticket FROM free_tickets WHERE sku = ? ORDER BY ticket LIMIT ?", (sku, count))
        ]

    _PAIRS_AT_ONCE = 400  # well under SQLite's limit of bound parameters

    @classmethod
    def _pairs(cls, pairs: set[tuple[str, str]]) -> Iterator[tuple[str, list[str]]]:
        """``pairs`` in chunks, each as a VALUES list and its parameters.

        The queries join the list (CROSS JOIN: the list first), so each pair is
        looked up in a primary key or unique index; ``(a, b) IN (VALUES ...)``
        would scan the whole table.
        """
        ordered = sorted(pairs)
        for start in range(0, len(ordered), cls._PAIRS_AT_ONCE):
            chunk = ordered[start : start + cls._PAIRS_AT_ONCE]
            yield ", ".join(["(?, ?)"] * len(chunk)), [value for pair in chunk for value in pair]

    def _held_units(self, conn: sqlite3.Connection, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
        held: dict[tuple[str, str], int] = {}
        for values, parameters in self._pairs(pairs):
            rows = conn.execute(
                f"WITH wanted (sku, user_id) AS (VALUES {values})"
                " SELECT b.sku, b.user_id, b.units FROM wanted w CROSS JOIN buyers b ON b.sku = w.sku AND b.user_id = w.user_id",
                parameters,
            )
            held.update(((row["sku"], row["user_id"]), row["units"]) for row in rows)
        return held

    def _orders_by_key(self, conn: sqlite3.Connection, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], Order]:
        """The orders earlier requests bought with these (buyer, key) pairs, each with its tickets in the same query."""
        found: dict[tuple[str, str], Order] = {}
        columns = ", ".join(f"o.{column} AS {column}" for column in self._ORDER_COLUMNS.split(", "))
        for values, parameters in self._pairs(pairs):
            rows = conn.execute(
                f"WITH wanted (user_id, idempotency_key) AS (VALUES {values})"
                f" SELECT {columns}, (SELECT group_concat(t.ticket) FROM order_tickets t WHERE t.order_id = o.order_id) AS held"
                " FROM wanted w CROSS JOIN orders o ON o.user_id = w.user_id AND o.idempotency_key = w.idempotency_key",
                parameters,
            )
            for row in rows:
                held = tuple(sorted(int(t) for t in (row["held"] or "").split(",") if t))
                order = self._order_holding(row, held)
                found[(order.user_id, row["idempotency_key"])] = order
        return found

    @staticmethod
    def _write_batch(conn: sqlite3.Connection, batch: _Batch) -> None:
        """The decided orders (rows ``decide`` built) in one statement a table; raise _Diverged if the database is not what was read."""
        if not batch.order_rows:
            return
        conn.executemany(
            "INSERT INTO orders (order_id, sku, user_id, quantity, status, idempotency_key, request_hash, created_at)"
            " VALUES (?, ?, ?, ?, 'confirmed', ?, ?, ?)",
            batch.order_rows,
        )
        conn.executemany("INSERT INTO order_tickets (sku, ticket, order_id) VALUES (?, ?, ?)", batch.ticket_rows)
        conn.executemany(
            "INSERT INTO buyers (sku, user_id, units) VALUES (?, ?, ?)"
            " ON CONFLICT (sku, user_id) DO UPDATE SET units = units + excluded.units",
            [(sku, user_id, units) for (sku, user_id), units in batch.bought.items()],
        )
        for sku, stock in batch.stock.items():
            returned = stock.returned[: stock.returned_taken]
            if returned:
                deleted = conn.executemany("DELETE FROM free_tickets WHERE sku = ? AND ticket = ?", ((sku, t) for t in returned))
                if deleted.rowcount != len(returned):
                    raise _Diverged(f"{sku}: {deleted.rowcount} of {len(returned)} returned tickets were free")
            if stock.fresh_taken:
                # The guard of the order-by-order path, for the batch's fresh tickets at once; issued = ? pins it to what was read.
                issued = conn.execute(
                    "UPDATE sales SET issued = issued + ? WHERE sku = ? AND issued = ? AND issued + ? <= total",
                    (stock.fresh_taken, sku, stock.issued, stock.fresh_taken),
                )
                if issued.rowcount != 1:
                    raise _Diverged(f"{sku}: issued is no longer {stock.issued}")

    def _place_one(self, conn: sqlite3.Connection, request: OrderRequest) -> Placement:
        conn.execute("SAVEPOINT one_order")
        try:
            answer: Placement = self._reserve_and_confirm(conn, request)
        except (FlashsaleError, sqlite3.IntegrityError) as refused:
            conn.execute("ROLLBACK TO one_order")
            answer = refused if isinstance(refused, FlashsaleError) else StoreError(f"order conflicted: {refused}")
        conn.execute("RELEASE one_order")
        return answer

    def _reserve_and_confirm(self, conn: sqlite3.Connection, request: OrderRequest) -> PlacedOrder:
        sku, user_id, quantity, idempotency_key = request.sku, request.user_id, request.quantity, request.idempotency_key
        if quantity < 1:
            raise InvalidRequest("quantity must be at least 1")
        if idempotency_key is not None:
            earlier = self._find_by_key(conn, user_id, idempotency_key)
            if earlier is not None:
                return PlacedOrder.replay_of(earlier, request.request_hash)
        sale = self._sale_row(conn, sku)
        if sale is None:
            raise UnknownSku(f"no sale for sku {sku!r}")
        total, per_user_limit, issued = sale["total"], sale["per_user_limit"], sale["issued"]
        held = conn.execute("SELECT units FROM buyers WHERE sku = ? AND user_id = ?", (sku, user_id)).fetchone()
        units = 0 if held is None else held["units"]
        if units + quantity > per_user_limit:
            raise LimitReached(f"this sale allows {per_user_limit} per buyer")
        # The lowest returned tickets first, then fresh ones: first come, first served.
        returned = self._lowest_free(conn, sku, quantity)
        fresh = quantity - len(returned)
        if issued + fresh > total:
            raise SoldOut()
        tickets = tuple(returned) + tuple(range(issued + 1, issued + fresh + 1))
        if returned:
            conn.executemany("DELETE FROM free_tickets WHERE sku = ? AND ticket = ?", ((sku, t) for t in returned))
        if fresh:
            conn.execute("UPDATE sales SET issued = issued + ? WHERE sku = ? AND issued + ? <= total", (fresh, sku, fresh))
        order = _confirmed(request, tickets, utcnow())
        conn.execute(
            "INSERT INTO orders (order_id, sku, user_id, quantity, status, idempotency_key, request_hash, created_at)"
            " VALUES (?, ?, ?, ?, 'confirmed', ?, ?, ?)",
            (order.order_id, sku, user_id, quantity, idempotency_key, request.request_hash, order.created_at.timestamp()),
        )
        conn.executemany(
            "INSERT INTO order_tickets (sku, ticket, order_id) VALUES (?, ?, ?)",
            ((sku, t, order.order_id) for t in tickets),
        )
        conn.execute(
            "INSERT INTO buyers (sku, user_id, units) VALUES (?, ?, ?)"
            " ON CONFLICT (sku, user_id) DO UPDATE SET units = units + excluded.units",
            (sku, user_id, quantity),
        )
        return PlacedOrder(order)
