"""The store interface. SQLite (embedded) and MongoDB (production) implement it;
tests/contract runs one suite against both.

The database is the source of truth. Every method that changes a sale is atomic
on its own: a crash between two calls never oversells and never hands one
ticket to two orders; at worst it leaves units that no order holds, which
:meth:`Store.reconcile` gives back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from shared.errors import FlashsaleError, StoreError
from shared.models import Order, OrderRequest, PlacedOrder, ReconcileReport, Sale, SaleStats, StockLevel, User

Placement = PlacedOrder | FlashsaleError  # one request's answer in a batch: its order, or what place_order would raise


class Store(Protocol):
    def ping(self) -> None:
        """Raise StoreError unless the database answers."""

    def close(self) -> None: ...

    # users
    def create_user(self, email: str, password_hash: bytes) -> User:
        """Raise EmailTaken if the email exists."""

    def ensure_users(self, emails: Iterable[str], password_hash: bytes) -> list[User]:
        """Create the users that do not exist yet (load-test accounts); return all of them in order."""

    def get_user_by_email(self, email: str) -> User | None: ...

    # sales
    def create_sale(self, sku: str, total: int, per_user_limit: int, starts_at: datetime | None) -> Sale:
        """Raise SaleExists if the sku has a sale."""

    def get_sale(self, sku: str) -> Sale | None: ...

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
        """Change a sale's terms: a compare-and-set on its version, which moves on every change of terms (not on sales).

        ``expected_version``: the version the caller read; if the sale is at
        another by the time the change is written, nothing changes and
        SaleChanged is raised (optimistic locking: two operators editing the
        same sale never overwrite each other unseen). Raise UnknownSku,
        InvalidRequest (total below what is sold), SaleChanged, ConcurrentUpdate.
        """

    def stock_level(self, sku: str) -> StockLevel | None: ...

    # orders
    def place_order(
        self,
        sku: str,
        user_id: str,
        quantity: int,
        *,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> PlacedOrder:
        """Reserve ``quantity`` units and confirm the order, or change nothing.

        Raise UnknownSku, SoldOut, LimitReached, IdempotencyKeyReused.
        The same (user, key, request) returns the first order with ``replayed``.
        """

    def place_orders(self, requests: Sequence[OrderRequest]) -> list[Placement]:
        """Place several orders in one write (group commit); answers in request order.

        Each answer is what ``place_order`` would have returned or raised had the
        requests been placed one after another in list order: tickets follow the
        list (first come, first served), a key seen earlier in the list replays,
        a buyer's earlier orders in the list count towards their limit. Errors
        are returned, not raised; a StoreError may answer every request.
        """

    def find_order_by_key(self, user_id: str, idempotency_key: str) -> Order | None: ...

    def list_orders(self, user_id: str) -> list[Order]: ...

    def cancel_order(self, order_id: str) -> Order:
        """Cancel a confirmed order and give its tickets back. Raise NotFound."""

    def buyer_units(self, sku: str) -> dict[str, int]:
        """Units each buyer holds in confirmed orders (the gate is rebuilt from it)."""

    def sale_stats(self, sku: str) -> SaleStats:
        """Raise UnknownSku."""

    def reconcile(self, sku: str, grace_seconds: float = 0.0) -> ReconcileReport:
        """Give back units no confirmed order holds and correct per-buyer counts.

        A unit counts as orphaned only if it is orphaned both before and after
        ``grace_seconds``, so an order still in flight is not robbed.
        """


def placed(answer: Placement) -> PlacedOrder:
    """A batch's answer as ``place_order`` gives it: the order, or its error raised."""
    if isinstance(answer, FlashsaleError):
        raise answer
    return answer


class PlacesOneAsABatch:
    """``place_order`` as a batch of one, for a store whose ``place_orders`` decides every order: one path, not two."""

    def place_orders(self, requests: Sequence[OrderRequest]) -> list[Placement]:
        raise NotImplementedError

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


def again(failure: StoreError) -> StoreError:
    """A copy of a failure that answers a whole batch, one per caller: one instance raised in many threads tangles their tracebacks."""
    copy = type(failure)(failure.detail)
    copy.__cause__ = failure.__cause__ or failure
    return copy
