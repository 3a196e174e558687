"""Code that runs inside the racing processes (spawned, so it must be importable)."""

from __future__ import annotations

import os
import time
import uuid

from shared.errors import LimitReached, SoldOut
from shared.models import PlacedOrder, request_fingerprint
from shared.store.sqlite import SqliteStore


class NaiveStore(SqliteStore):
    """What not to do: read the stock, then write, in two steps. It exists to prove the race test can fail."""

    def place_order(
        self, sku: str, user_id: str, quantity: int, *, idempotency_key: str | None = None, request_hash: str | None = None
    ) -> PlacedOrder:
        with self._lock:
            conn = self._connection()
            total = conn.execute("SELECT total FROM sales WHERE sku = ?", (sku,)).fetchone()[0]
            sold = conn.execute("SELECT COUNT(*) FROM orders WHERE sku = ? AND status = 'confirmed'", (sku,)).fetchone()[0]
        if sold + quantity > total:
            raise SoldOut()
        time.sleep(0.002)  # any delay between the read and the write lets another process in
        order_id = uuid.uuid4().hex
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO orders (order_id, sku, user_id, quantity, status, created_at) VALUES (?, ?, ?, 1, 'confirmed', 0)",
                (order_id, sku, user_id),
            )
            conn.execute(
                "INSERT INTO order_tickets (sku, ticket, order_id) VALUES (?, ?, ?)", (sku, sold + 1 + 10_000 * os.getpid(), order_id)
            )
        return PlacedOrder(self.list_orders(user_id)[-1])


def race(path: str, sku: str, users: list[str], start_at: float, naive: bool) -> dict[str, int]:
    store = (NaiveStore if naive else SqliteStore)(path)
    outcome = {"confirmed": 0, "sold_out": 0, "limit_reached": 0}
    while time.time() < start_at:  # every process starts at the same moment
        time.sleep(0.001)
    for user in users:
        try:
            store.place_order(sku, user, 1, request_hash=request_fingerprint(sku, 1))
            outcome["confirmed"] += 1
        except SoldOut:
            outcome["sold_out"] += 1
        except LimitReached:
            outcome["limit_reached"] += 1
    store.close()
    return outcome


def edit_sale(path: str, sku: str, total: int, start_at: float, locking: bool) -> tuple[int, str]:
    """Read the sale, wait for the common instant, then write a new total over what was read: (total, outcome)."""
    from shared.errors import SaleChanged

    store = SqliteStore(path)
    read = store.get_sale(sku)
    assert read is not None
    while time.time() < start_at:
        time.sleep(0.0005)
    try:
        store.update_sale(sku, total=total, expected_version=read.version if locking else None)
    except SaleChanged:
        return total, "sale_changed"
    return total, "written"
