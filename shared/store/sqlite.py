"""The embedded store: one SQLite file shared by every process.

WAL lets readers run beside the one writer; ``BEGIN IMMEDIATE`` takes the write
lock before reading, so each order is reserved and confirmed in one
serialised transaction: no interleaving of processes can oversell, and a crash
rolls the whole order back. Orders arriving together share one transaction
(``place_orders``, fed by :class:`shared.store.batching.OrderBatcher`): a
commit's fsync is paid once per batch, not once per order. Inside it the batch
is set-based (a few reads, every order decided in Python in list order, a few
``executemany`` writes), since once fsync is shared the per-order statements
are what is left to pay; anything unexpected falls back to a savepoint per order.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from shared.errors import (
    EmailTaken,
    FlashsaleError,
    InvalidRequest,
    LimitReached,
    NotFound,
    SaleChanged,
    SaleExists,
    SoldOut,
    StoreError,
    UnknownSku,
)
from shared.models import Order, OrderRequest, PlacedOrder, ReconcileReport, Sale, SaleStats, StockLevel, User, to_millis, utcnow
from shared.store.base import Placement, again, placed
from shared.store.tickets import Leaks, excess_units, lasting_leaks, orphaned_tickets

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sales (
    sku TEXT PRIMARY KEY,
    total INTEGER NOT NULL CHECK (total >= 0),
    per_user_limit INTEGER NOT NULL CHECK (per_user_limit >= 1),
    starts_at REAL,
    issued INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    CHECK (issued <= total)
);
CREATE TABLE IF NOT EXISTS free_tickets (
    sku TEXT NOT NULL,
    ticket INTEGER NOT NULL,
    PRIMARY KEY (sku, ticket)
);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    sku TEXT NOT NULL,
    user_id TEXT NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity >= 1),
    status TEXT NOT NULL,
    idempotency_key TEXT,
    request_hash TEXT,
    created_at REAL NOT NULL,
    cancelled_tickets TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS orders_idempotency ON orders (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, created_at);
CREATE INDEX IF NOT EXISTS orders_by_sku ON orders (sku, status);
CREATE TABLE IF NOT EXISTS order_tickets (
    sku TEXT NOT NULL,
    ticket INTEGER NOT NULL,
    order_id TEXT NOT NULL REFERENCES orders (order_id),
    PRIMARY KEY (sku, ticket)
);
CREATE INDEX IF NOT EXISTS order_tickets_by_order ON order_tickets (order_id);
CREATE TABLE IF NOT EXISTS buyers (
    sku TEXT NOT NULL,
    user_id TEXT NOT NULL,
    units INTEGER NOT NULL CHECK (units >= 0),
    PRIMARY KEY (sku, user_id)
);
"""


def _ts(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _dt(value: float | None) -> datetime | None:
    if value is None:
        return None
    # Stored as float seconds: round back to the millisecond it was written with.
    return datetime.fromtimestamp(round(value, 3), UTC)


def _order_id() -> str:
    """A new order's id: 32 hex digits, the millisecond first, then 80 random bits.

    ``os.urandom``, not a uuid4 object: 0.6 us against 2.7 us, paid for each order of a batch.

    Ids that grow with time append to the orders primary key and to
    order_tickets_by_order; random ones dirty a leaf page of each per order,
    which a group commit writes to the WAL and a checkpoint writes again:
    that, not the SQL, was most of a batch's commit.
    """
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def _confirmed(request: OrderRequest, tickets: tuple[int, ...], created_at: datetime) -> Order:
    """The confirmed order a request becomes, holding ``tickets``."""
    return Order(
        order_id=_order_id(),
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
        returned = self.returned[self.returned_taken : self.returned_taken + quantity]
        fresh = quantity - len(returned)
        issued = self.issued + self.fresh_taken
        if issued + fresh > self.total:
            raise SoldOut()
        self.returned_taken += len(returned)
        self.fresh_taken += fresh
        return (*returned, *range(issued + 1, issued + fresh + 1))


@dataclass
class _Batch:
    """What a batch of orders needs from the database, read once, and the orders decided against it in list order."""

    stock: dict[str, _Stock]  # by sku; a sku without a sale is absent
    held: dict[tuple[str, str], int]  # units each (sku, buyer) holds, the batch's orders included
    by_key: dict[tuple[str, str], Order]  # (buyer, Idempotency-Key): the order it bought, before or in the batch
    confirmed_at: datetime  # one commit confirms every order of the batch: one moment for all
    placed: list[Order] = field(default_factory=list)

    def decide(self, request: OrderRequest) -> Placement:
        try:
            return self._place(request)
        except FlashsaleError as refused:
            return refused

    def _place(self, request: OrderRequest) -> PlacedOrder:
        # The checks of _reserve_and_confirm in its order, so both paths give the same answer.
        sku, user_id, quantity, key = request.sku, request.user_id, request.quantity, request.idempotency_key
        if quantity < 1:
            raise InvalidRequest("quantity must be at least 1")
        if key is not None and (earlier := self.by_key.get((user_id, key))) is not None:
            return PlacedOrder.replay_of(earlier, request.request_hash)
        stock = self.stock.get(sku)
        if stock is None:
            raise UnknownSku(f"no sale for sku {sku!r}")
        units = self.held.get((sku, user_id), 0)
        if units + quantity > stock.per_user_limit:
            raise LimitReached(f"this sale allows {stock.per_user_limit} per buyer")
        tickets = stock.take(quantity)
        order = _confirmed(request, tickets, self.confirmed_at)
        self.held[(sku, user_id)] = units + quantity
        if key is not None:
            self.by_key[(user_id, key)] = order
        self.placed.append(order)
        return PlacedOrder(order)


class SqliteStore:
    def __init__(self, path: str, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        if not url.startswith("sqlite:///"):
            raise ValueError(f"not a sqlite URL: {url!r}")
        return cls(url.removeprefix("sqlite:///") or ":memory:")

    # connection -------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        # One connection per process (a forked worker opens its own); the lock
        # keeps threads or greenlets of one process from sharing a transaction.
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a confirmed order survives a power cut, not only a crash.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.row_factory = sqlite3.Row  # columns read by name: a column added or moved in a SELECT shifts nothing
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _migrate(self) -> None:
        with self._lock:
            try:
                self._connection().executescript(SCHEMA)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the database: {exc}") from exc
        # Files made before orders kept a cancelled order's tickets get the
        # column; under the write lock, so that of several processes one adds it.
        if not self._has_column("orders", "cancelled_tickets"):
            with self._errors(), self._transaction() as conn:
                if not self._has_column("orders", "cancelled_tickets"):
                    conn.execute("ALTER TABLE orders ADD COLUMN cancelled_tickets TEXT")

    def _has_column(self, table: str, column: str) -> bool:
        with self._errors(), self._lock:
            return any(row["name"] == column for row in self._connection().execute(f"PRAGMA table_info({table})"))

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise StoreError(f"database busy: {exc}") from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK")
                    raise StoreError(f"commit failed: {exc}") from exc

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from exc

    def ping(self) -> None:
        with self._errors(), self._lock:
            self._connection().execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # users ------------------------------------------------------------
    def create_user(self, email: str, password_hash: bytes) -> User:
        user = User(uuid.uuid4().hex, email, password_hash, utcnow())
        try:
            with self._errors(), self._transaction() as conn:
                conn.execute(
                    "INSERT INTO users (user_id, email, password_hash, created_at) VALUES (?, ?, ?, ?)",
                    (user.user_id, user.email, user.password_hash, user.created_at.timestamp()),
                )
        except sqlite3.IntegrityError as exc:
            raise EmailTaken() from exc
        return user

    def ensure_users(self, emails: Iterable[str], password_hash: bytes) -> list[User]:
        wanted = list(emails)
        now = time.time()
        with self._errors(), self._transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO users (user_id, email, password_hash, created_at) VALUES (?, ?, ?, ?)",
                ((uuid.uuid4().hex, email, password_hash, now) for email in wanted),
            )
            found: dict[str, User] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows = conn.execute(
                    f"SELECT user_id, email, password_hash, created_at FROM users WHERE email IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                for row in rows:
                    found[row["email"]] = self._user(row)
        return [found[email] for email in wanted]

    @staticmethod
    def _user(row: sqlite3.Row) -> User:
        return User(row["user_id"], row["email"], bytes(row["password_hash"]), _dt(row["created_at"]) or utcnow())

    def get_user_by_email(self, email: str) -> User | None:
        with self._errors(), self._lock:
            row = (
                self._connection()
                .execute("SELECT user_id, email, password_hash, created_at FROM users WHERE email = ?", (email,))
                .fetchone()
            )
        return None if row is None else self._user(row)

    # sales ------------------------------------------------------------
    def create_sale(self, sku: str, total: int, per_user_limit: int, starts_at: datetime | None) -> Sale:
        starts_at = to_millis(starts_at)
        try:
            with self._errors(), self._transaction() as conn:
                conn.execute(
                    "INSERT INTO sales (sku, total, per_user_limit, starts_at, created_at) VALUES (?, ?, ?, ?, ?)",
                    (sku, total, per_user_limit, _ts(starts_at), time.time()),
                )
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc) or "PRIMARY" in str(exc):
                raise SaleExists(f"sku {sku!r} already has a sale") from exc
            raise InvalidRequest(str(exc)) from exc
        return Sale(sku, total, per_user_limit, starts_at)

    @staticmethod
    def _sale_row(conn: sqlite3.Connection, sku: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT sku, total, per_user_limit, starts_at, version, issued FROM sales WHERE sku = ?", (sku,)
        ).fetchone()
        return row

    def get_sale(self, sku: str) -> Sale | None:
        with self._errors(), self._lock:
            row = self._sale_row(self._connection(), sku)
        return None if row is None else Sale(row["sku"], row["total"], row["per_user_limit"], _dt(row["starts_at"]), row["version"])

    def update_sale(
        self,
        sku: str,
        *,
        total: int | None = None,
        per_user_limit: int | None = None,
        starts_at: datetime | None = None,
        clear_start: bool = False,
        expected_version: int | None = None,
    ) -> Sale:
        starts_at = to_millis(starts_at)
        # BEGIN IMMEDIATE takes the write lock before the read: no other edit
        # can come between this read and the write, so the version the caller
        # expected is compared with the one this transaction writes over.
        with self._errors(), self._transaction() as conn:
            row = self._sale_row(conn, sku)
            if row is None:
                raise UnknownSku(f"no sale for sku {sku!r}")
            version, issued = row["version"], row["issued"]
            if expected_version is not None and version != expected_version:
                raise SaleChanged(f"sale {sku!r} is at version {version}, not {expected_version}: read it again")
            new_total = row["total"] if total is None else total
            if new_total < issued - self._free_count(conn, sku):
                raise InvalidRequest(f"total {new_total} is below the units already sold")
            if new_total < issued:
                raise InvalidRequest("cannot shrink below tickets already issued; reconcile first")
            new_limit = row["per_user_limit"] if per_user_limit is None else per_user_limit
            new_start = None if clear_start else (_dt(row["starts_at"]) if starts_at is None else starts_at)
            conn.execute(
                "UPDATE sales SET total = ?, per_user_limit = ?, starts_at = ?, version = version + 1 WHERE sku = ? AND version = ?",
                (new_total, new_limit, _ts(new_start), sku, version),
            )
            return Sale(sku, new_total, new_limit, new_start, version + 1)

    @staticmethod
    def _free_count(conn: sqlite3.Connection, sku: str) -> int:
        count: int = conn.execute("SELECT COUNT(*) AS free FROM free_tickets WHERE sku = ?", (sku,)).fetchone()["free"]
        return count

    def stock_level(self, sku: str) -> StockLevel | None:
        with self._errors(), self._lock:
            conn = self._connection()
            row = conn.execute(
                "SELECT total, issued, (SELECT COUNT(*) FROM free_tickets f WHERE f.sku = s.sku) AS free FROM sales s WHERE sku = ?",
                (sku,),
            ).fetchone()
        if row is None:
            return None
        return StockLevel(sku, row["total"], max(0, row["total"] - row["issued"] + row["free"]))

    # orders -----------------------------------------------------------
    @classmethod
    def _order(cls, conn: sqlite3.Connection, row: sqlite3.Row) -> Order:
        held = tuple(
            t["ticket"] for t in conn.execute("SELECT ticket FROM order_tickets WHERE order_id = ? ORDER BY ticket", (row["order_id"],))
        )
        return cls._order_holding(row, held)

    @staticmethod
    def _order_holding(row: sqlite3.Row, held: tuple[int, ...]) -> Order:
        """An order from its row and the tickets it holds (sorted)."""
        # A cancelled order holds none but keeps the tickets it had in its history.
        tickets = held or tuple(int(t) for t in (row["cancelled_tickets"] or "").split(",") if t)
        return Order(
            order_id=row["order_id"],
            sku=row["sku"],
            user_id=row["user_id"],
            quantity=row["quantity"],
            tickets=tickets,
            status=row["status"],
            idempotency_key=row["idempotency_key"],
            request_hash=row["request_hash"],
            created_at=_dt(row["created_at"]) or utcnow(),
        )

    _ORDER_COLUMNS = "order_id, sku, user_id, quantity, status, idempotency_key, request_hash, created_at, cancelled_tickets"

    def _find_by_key(self, conn: sqlite3.Connection, user_id: str, key: str) -> Order | None:
        row = conn.execute(f"SELECT {self._ORDER_COLUMNS} FROM orders WHERE user_id = ? AND idempotency_key = ?", (user_id, key)).fetchone()
        return None if row is None else self._order(conn, row)

    def find_order_by_key(self, user_id: str, idempotency_key: str) -> Order | None:
        with self._errors(), self._lock:
            return self._find_by_key(self._connection(), user_id, idempotency_key)

    def place_order(
        self,
        sku: str,
        user_id: str,
        quantity: int,
        *,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> PlacedOrder:
        return placed(self.place_orders([OrderRequest(sku, user_id, quantity, idempotency_key, request_hash)])[0])

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
        answers = [batch.decide(request) for request in requests]
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
        """The decided orders in one statement a table; raise _Diverged if the database is not what was read."""
        placed = batch.placed
        if not placed:
            return
        confirmed_at = batch.confirmed_at.timestamp()
        conn.executemany(
            "INSERT INTO orders (order_id, sku, user_id, quantity, status, idempotency_key, request_hash, created_at)"
            " VALUES (?, ?, ?, ?, 'confirmed', ?, ?, ?)",
            ((o.order_id, o.sku, o.user_id, o.quantity, o.idempotency_key, o.request_hash, confirmed_at) for o in placed),
        )
        conn.executemany(
            "INSERT INTO order_tickets (sku, ticket, order_id) VALUES (?, ?, ?)",
            ((o.sku, t, o.order_id) for o in placed for t in o.tickets),
        )
        bought: dict[tuple[str, str], int] = {}
        for o in placed:
            bought[(o.sku, o.user_id)] = bought.get((o.sku, o.user_id), 0) + o.quantity
        conn.executemany(
            "INSERT INTO buyers (sku, user_id, units) VALUES (?, ?, ?)"
            " ON CONFLICT (sku, user_id) DO UPDATE SET units = units + excluded.units",
            ((sku, user_id, units) for (sku, user_id), units in bought.items()),
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

    def list_orders(self, user_id: str) -> list[Order]:
        with self._errors(), self._lock:
            conn = self._connection()
            rows = conn.execute(f"SELECT {self._ORDER_COLUMNS} FROM orders WHERE user_id = ? ORDER BY created_at", (user_id,)).fetchall()
            return [self._order(conn, row) for row in rows]

    def cancel_order(self, order_id: str) -> Order:
        with self._errors(), self._transaction() as conn:
            row = conn.execute(f"SELECT {self._ORDER_COLUMNS} FROM orders WHERE order_id = ?", (order_id,)).fetchone()
            if row is None:
                raise NotFound(f"no order {order_id!r}")
            order = self._order(conn, row)
            if order.status != "confirmed":
                return order
            conn.execute(
                "UPDATE orders SET status = 'cancelled', cancelled_tickets = ? WHERE order_id = ?",
                (",".join(str(t) for t in order.tickets), order_id),
            )
            conn.execute("DELETE FROM order_tickets WHERE order_id = ?", (order_id,))
            conn.executemany("INSERT OR IGNORE INTO free_tickets (sku, ticket) VALUES (?, ?)", ((order.sku, t) for t in order.tickets))
            conn.execute(
                "UPDATE buyers SET units = MAX(0, units - ?) WHERE sku = ? AND user_id = ?",
                (order.quantity, order.sku, order.user_id),
            )
        return Order(**{**order.__dict__, "status": "cancelled"})

    def buyer_units(self, sku: str) -> dict[str, int]:
        with self._errors(), self._lock:
            rows = self._connection().execute(
                "SELECT user_id, SUM(quantity) AS units FROM orders WHERE sku = ? AND status = 'confirmed' GROUP BY user_id", (sku,)
            )
            return {row["user_id"]: int(row["units"]) for row in rows}

    def sale_stats(self, sku: str) -> SaleStats:
        with self._errors(), self._transaction(write=False) as conn:
            return self._stats(conn, sku)

    def _stats(self, conn: sqlite3.Connection, sku: str) -> SaleStats:
        sale = self._sale_row(conn, sku)
        if sale is None:
            raise UnknownSku(f"no sale for sku {sku!r}")
        total, per_user_limit, issued = sale["total"], sale["per_user_limit"], sale["issued"]
        confirmed = conn.execute(
            "SELECT COALESCE(SUM(quantity), 0) AS sold, COUNT(*) AS orders, COUNT(DISTINCT user_id) AS buyers"
            " FROM orders WHERE sku = ? AND status = 'confirmed'",
            (sku,),
        ).fetchone()
        sold = confirmed["sold"]
        max_units = conn.execute(
            "SELECT COALESCE(MAX(u), 0) AS max_units FROM"
            " (SELECT SUM(quantity) AS u FROM orders WHERE sku = ? AND status = 'confirmed' GROUP BY user_id)",
            (sku,),
        ).fetchone()["max_units"]
        held = conn.execute(
            "SELECT COUNT(*) AS tickets, COUNT(DISTINCT t.ticket) AS distinct_tickets,"
            " COALESCE(SUM(t.ticket < 1 OR t.ticket > ?), 0) AS out_of_range,"
            " COALESCE(SUM(o.status IS NOT 'confirmed'), 0) AS without_order"
            " FROM order_tickets t LEFT JOIN orders o ON o.order_id = t.order_id WHERE t.sku = ?",
            (total, sku),
        ).fetchone()
        problems: list[str] = []
        if held["tickets"] != sold:
            problems.append(f"confirmed orders hold {sold} units but {held['tickets']} tickets are recorded")
        return SaleStats(
            sku=sku,
            total=total,
            per_user_limit=per_user_limit,
            sold=int(sold),
            orders=int(confirmed["orders"]),
            buyers=int(confirmed["buyers"]),
            max_units_per_buyer=int(max_units),
            issued=int(issued),
            free=self._free_count(conn, sku),
            duplicate_tickets=int(held["tickets"] - held["distinct_tickets"]),
            tickets_out_of_range=int(held["out_of_range"]),
            tickets_without_order=int(held["without_order"]),
            problems=tuple(problems),
        )

    def _leaks(self, sku: str) -> Leaks:
        with self._errors(), self._transaction(write=False) as conn:
            sale = self._sale_row(conn, sku)
            if sale is None:
                raise UnknownSku(f"no sale for sku {sku!r}")
            held = {row["ticket"] for row in conn.execute("SELECT ticket FROM order_tickets WHERE sku = ?", (sku,))}
            free = {row["ticket"] for row in conn.execute("SELECT ticket FROM free_tickets WHERE sku = ?", (sku,))}
            orphans = orphaned_tickets(int(sale["issued"]), held, free)
            counted = {row["user_id"]: row["units"] for row in conn.execute("SELECT user_id, units FROM buyers WHERE sku = ?", (sku,))}
            confirmed = {
                row["user_id"]: int(row["units"])
                for row in conn.execute(
                    "SELECT user_id, SUM(quantity) AS units FROM orders WHERE sku = ? AND status = 'confirmed' GROUP BY user_id", (sku,)
                )
            }
        return orphans, excess_units(counted, confirmed)

    def reconcile(self, sku: str, grace_seconds: float = 0.0) -> ReconcileReport:
        orphans, excess = lasting_leaks(lambda: self._leaks(sku), grace_seconds)
        with self._errors(), self._transaction() as conn:
            # Re-check inside the write lock: only tickets still unheld go back.
            held = {row["ticket"] for row in conn.execute("SELECT ticket FROM order_tickets WHERE sku = ?", (sku,))}
            released = sorted(orphans - held)
            conn.executemany("INSERT OR IGNORE INTO free_tickets (sku, ticket) VALUES (?, ?)", ((sku, t) for t in released))
            for user_id, extra in excess.items():
                conn.execute("UPDATE buyers SET units = MAX(0, units - ?) WHERE sku = ? AND user_id = ?", (extra, sku, user_id))
            stats = self._stats(conn, sku)
        return ReconcileReport(sku, tuple(released), len(excess), stats)
