"""The domain records every store returns."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.errors import IdempotencyKeyReused


def utcnow() -> datetime:
    """Now, to the millisecond: what every store (BSON dates included) keeps exactly."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def to_millis(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def request_fingerprint(sku: str, quantity: int) -> str:
    """What makes two order requests "the same body" for an Idempotency-Key."""
    canonical = json.dumps({"sku": sku, "quantity": quantity}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    user_id: str
    email: str
    password_hash: bytes
    created_at: datetime


@dataclass(frozen=True)
class Sale:
    sku: str
    total: int
    per_user_limit: int
    starts_at: datetime | None
    version: int = 1

    def started(self, now: datetime) -> bool:
        return self.starts_at is None or now >= self.starts_at


@dataclass(frozen=True)
class Order:
    order_id: str
    sku: str
    user_id: str
    quantity: int
    tickets: tuple[int, ...]
    status: str
    created_at: datetime
    idempotency_key: str | None = None
    request_hash: str | None = None

    @property
    def ticket(self) -> int:
        """The buyer's first-come-first-served position: the first unit they got."""
        return min(self.tickets)

    def to_public(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "sku": self.sku,
            "quantity": self.quantity,
            "ticket": self.ticket,
            "status": self.status,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True)
class PlacedOrder:
    order: Order
    replayed: bool = False

    @classmethod
    def replay_of(cls, earlier: Order, request_hash: str | None) -> PlacedOrder:
        """The answer to an Idempotency-Key seen before: the first order, unless the body differs."""
        if earlier.request_hash != request_hash:
            raise IdempotencyKeyReused()
        return cls(earlier, replayed=True)


@dataclass(frozen=True)
class OrderRequest:
    """One buyer's order as the store receives it, so several can be placed in one write (``Store.place_orders``)."""

    sku: str
    user_id: str
    quantity: int
    idempotency_key: str | None = None
    request_hash: str | None = None


@dataclass(frozen=True)
class StockLevel:
    sku: str
    total: int
    available: int

    @property
    def sold_out(self) -> bool:
        return self.available <= 0

    def to_public(self) -> dict[str, Any]:
        return {"sku": self.sku, "total": self.total, "available": self.available, "sold_out": self.sold_out}


@dataclass(frozen=True)
class SaleStats:
    """What the database says about a sale, and whether the invariants hold."""

    sku: str
    total: int
    per_user_limit: int
    sold: int
    orders: int
    buyers: int
    max_units_per_buyer: int
    issued: int
    free: int
    duplicate_tickets: int
    tickets_out_of_range: int
    tickets_without_order: int
    problems: tuple[str, ...] = field(default=())

    @property
    def available(self) -> int:
        return max(0, self.total - (self.issued - self.free))

    @property
    def orphaned(self) -> int:
        """Units taken from stock that no confirmed order holds (reconcile gives them back)."""
        return max(0, self.issued - self.free - self.sold)

    @property
    def invariants_hold(self) -> bool:
        return not self.violations()

    def violations(self) -> list[str]:
        found = list(self.problems)
        if self.sold > self.total:
            found.append(f"oversold: {self.sold} confirmed units of {self.total}")
        if self.max_units_per_buyer > self.per_user_limit:
            found.append(f"a buyer holds {self.max_units_per_buyer} units, limit {self.per_user_limit}")
        if self.duplicate_tickets:
            found.append(f"{self.duplicate_tickets} tickets held twice")
        if self.tickets_out_of_range:
            found.append(f"{self.tickets_out_of_range} tickets outside 1..{self.total}")
        if self.tickets_without_order:
            found.append(f"{self.tickets_without_order} tickets held by no confirmed order")
        return found

    def to_public(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "total": self.total,
            "available": self.available,
            "sold": self.sold,
            "orders": self.orders,
            "buyers": self.buyers,
            "per_user_limit": self.per_user_limit,
            "max_units_per_buyer": self.max_units_per_buyer,
            "orphaned": self.orphaned,
            "invariants_hold": self.invariants_hold,
            "violations": self.violations(),
        }


@dataclass(frozen=True)
class ReconcileReport:
    sku: str
    released_tickets: tuple[int, ...]
    corrected_buyers: int
    stats: SaleStats
