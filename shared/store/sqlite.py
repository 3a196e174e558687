"""The embedded store: one SQLite file shared by every process.

WAL lets readers run beside the one writer; ``BEGIN IMMEDIATE`` takes the write
lock before reading, so each order is reserved and confirmed in one
serialised transaction: no interleaving of processes can oversell, and a crash
rolls the whole order back. Placing orders (one transaction a batch) is in
:mod:`shared.store.sqlite_placement`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from shared.errors import EmailTaken, InvalidRequest, NotFound, SaleChanged, SaleExists, StoreError, UnknownSku
from shared.models import Order, ReconcileReport, Sale, SaleStats, StockLevel, User, to_millis, utcnow
from shared.store.sqlite_placement import SqlitePlacement
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


class SqliteStore(SqlitePlacement):
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
