"""The production store: MongoDB through pymongo.

Orders are placed without a multi-document transaction, by named atomic
steps: see :mod:`shared.store.mongo_placement`.

Sale settings change by versioned compare-and-set with jittered retries.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from shared.errors import ConcurrentUpdate, EmailTaken, InvalidRequest, NotFound, SaleChanged, SaleExists, StoreError, UnknownSku
from shared.models import Order, ReconcileReport, Sale, SaleStats, StockLevel, User, to_millis, utcnow
from shared.store.mongo_common import Doc as Doc
from shared.store.mongo_common import _unavailable
from shared.store.mongo_placement import MongoPlacement
from shared.store.tickets import Leaks, excess_units, lasting_leaks, orphaned_tickets

CAS_ATTEMPTS = 6


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _backoff(attempt: int) -> None:
    # Full jitter: spreads racers apart instead of retrying in lockstep.
    time.sleep(random.uniform(0, 0.005 * 2**attempt))


class MongoStore(MongoPlacement):
    def __init__(self, database: Database[Doc], client: Any = None) -> None:
        self._client = client
        self.db = database
        self.users: Collection[Doc] = database["users"]
        self.sales: Collection[Doc] = database["sales"]
        self.orders: Collection[Doc] = database["orders"]
        self.buyers: Collection[Doc] = database["buyers"]
        self._ensure_indexes()

    @classmethod
    def from_url(cls, url: str, database: str, *, timeout_ms: int = 2000) -> MongoStore:
        client: MongoClient[Doc] = MongoClient(
            url, serverSelectionTimeoutMS=timeout_ms, retryWrites=True, tz_aware=True, uuidRepresentation="standard"
        )
        # Majority: a confirmed order survives the loss of the primary.
        db = client.get_database(database, write_concern=WriteConcern("majority"), read_concern=ReadConcern("majority"))
        return cls(db, client)

    def _ensure_indexes(self) -> None:
        try:
            self.users.create_index([("email", ASCENDING)], unique=True)
            self.orders.create_index([("idem", ASCENDING)], unique=True)
            self.orders.create_index([("user_id", ASCENDING), ("created_at", ASCENDING)])
            self.orders.create_index([("sku", ASCENDING), ("status", ASCENDING)])
            self.buyers.create_index([("sku", ASCENDING), ("user_id", ASCENDING)], unique=True)
        except PyMongoError as exc:
            raise StoreError(f"cannot prepare MongoDB: {exc}") from exc

    def ping(self) -> None:
        with _unavailable():
            self.db.command("ping")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # users ------------------------------------------------------------
    @staticmethod
    def _user(doc: Doc) -> User:
        return User(doc["_id"], doc["email"], bytes(doc["password_hash"]), _aware(doc["created_at"]) or utcnow())

    def create_user(self, email: str, password_hash: bytes) -> User:
        user = User(uuid.uuid4().hex, email, password_hash, utcnow())
        with _unavailable():
            try:
                self.users.insert_one({"_id": user.user_id, "email": email, "password_hash": password_hash, "created_at": user.created_at})
            except DuplicateKeyError as exc:
                raise EmailTaken() from exc
        return user

    def ensure_users(self, emails: Iterable[str], password_hash: bytes) -> list[User]:
        wanted = list(emails)
        with _unavailable():
            known = {d["email"]: self._user(d) for d in self.users.find({"email": {"$in": wanted}})}
            now = utcnow()
            missing = [e for e in wanted if e not in known]
            if missing:
                docs = [{"_id": uuid.uuid4().hex, "email": e, "password_hash": password_hash, "created_at": now} for e in missing]
                try:
                    self.users.insert_many(docs, ordered=False)
                except DuplicateKeyError:
                    pass
                known.update({d["email"]: self._user(d) for d in self.users.find({"email": {"$in": missing}})})
        return [known[e] for e in wanted]

    def get_user_by_email(self, email: str) -> User | None:
        with _unavailable():
            doc = self.users.find_one({"email": email})
        return None if doc is None else self._user(doc)

    # sales ------------------------------------------------------------
    @staticmethod
    def _sale(doc: Doc) -> Sale:
        return Sale(doc["_id"], doc["total"], doc["per_user_limit"], _aware(doc.get("starts_at")), doc["version"])

    def create_sale(self, sku: str, total: int, per_user_limit: int, starts_at: datetime | None) -> Sale:
        starts_at = to_millis(starts_at)
        if total < 0 or per_user_limit < 1:
            raise InvalidRequest("total must be >= 0 and per_user_limit >= 1")
        with _unavailable():
            try:
                self.sales.insert_one(
                    {
                        "_id": sku,
                        "total": total,
                        "per_user_limit": per_user_limit,
                        "starts_at": starts_at,
                        "issued": 0,
                        "remaining": total,
                        "free_tickets": [],
                        "version": 1,
                        "created_at": utcnow(),
                    }
                )
            except DuplicateKeyError as exc:
                raise SaleExists(f"sku {sku!r} already has a sale") from exc
        return Sale(sku, total, per_user_limit, starts_at)

    def get_sale(self, sku: str) -> Sale | None:
        with _unavailable():
            doc = self.sales.find_one({"_id": sku}, {"free_tickets": 0})
        return None if doc is None else self._sale(doc)

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
        for attempt in range(CAS_ATTEMPTS):
            with _unavailable():
                doc = self.sales.find_one({"_id": sku}, {"free_tickets": 0})
                if doc is None:
                    raise UnknownSku(f"no sale for sku {sku!r}")
                if expected_version is not None and doc["version"] != expected_version:
                    # Also when another edit won the race to the update below: the re-read lands here.
                    raise SaleChanged(f"sale {sku!r} is at version {doc['version']}, not {expected_version}: read it again")
                new_total = doc["total"] if total is None else total
                if new_total < doc["issued"]:
                    raise InvalidRequest("cannot shrink below tickets already issued; reconcile first")
                changes: Doc = {
                    "total": new_total,
                    "remaining": new_total - doc["issued"],
                    "per_user_limit": doc["per_user_limit"] if per_user_limit is None else per_user_limit,
                    "starts_at": None if clear_start else (doc.get("starts_at") if starts_at is None else starts_at),
                }
                # Compare-and-set on the version read above: a reservation or
                # another edit in between moves it, and we read again.
                result = self.sales.update_one(
                    {"_id": sku, "version": doc["version"], "issued": doc["issued"]},
                    {"$set": changes, "$inc": {"version": 1}},
                )
            if result.modified_count == 1:
                return Sale(sku, changes["total"], changes["per_user_limit"], _aware(changes["starts_at"]), doc["version"] + 1)
            _backoff(attempt)
        raise ConcurrentUpdate(f"sale {sku!r} kept changing; try again")

    def stock_level(self, sku: str) -> StockLevel | None:
        with _unavailable():
            doc = self.sales.find_one({"_id": sku}, {"total": 1, "remaining": 1, "free_tickets": 1})
        if doc is None:
            return None
        return StockLevel(sku, doc["total"], doc["remaining"] + len(doc.get("free_tickets") or []))

    # orders -----------------------------------------------------------
    @staticmethod
    def _order(doc: Doc) -> Order:
        return Order(
            order_id=doc["_id"],
            sku=doc["sku"],
            user_id=doc["user_id"],
            quantity=doc["quantity"],
            tickets=tuple(sorted(doc["tickets"])),
            status=doc["status"],
            created_at=_aware(doc["created_at"]) or utcnow(),
            idempotency_key=doc.get("idempotency_key"),
            request_hash=doc.get("request_hash"),
        )

    def find_order_by_key(self, user_id: str, idempotency_key: str) -> Order | None:
        with _unavailable():
            doc = self.orders.find_one({"idem": f"{user_id}\n{idempotency_key}"})
        return None if doc is None else self._order(doc)

    def list_orders(self, user_id: str) -> list[Order]:
        with _unavailable():
            return [self._order(d) for d in self.orders.find({"user_id": user_id}).sort("created_at", ASCENDING)]

    def cancel_order(self, order_id: str) -> Order:
        with _unavailable():
            doc = self.orders.find_one_and_update(
                {"_id": order_id, "status": "confirmed"},
                {"$set": {"status": "cancelled"}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                existing = self.orders.find_one({"_id": order_id})
                if existing is None:
                    raise NotFound(f"no order {order_id!r}")
                return self._order(existing)
            order = self._order(doc)
            self.release_ticket(order.sku, order.tickets)
            self.release_buyer_units(order.sku, order.user_id, order.quantity)
        return order

    def buyer_units(self, sku: str) -> dict[str, int]:
        units: dict[str, int] = {}
        with _unavailable():
            for doc in self.orders.find({"sku": sku, "status": "confirmed"}, {"user_id": 1, "quantity": 1}):
                units[doc["user_id"]] = units.get(doc["user_id"], 0) + int(doc["quantity"])
        return units

    def _snapshot(self, sku: str) -> tuple[Doc, list[Doc], dict[str, int]]:
        with _unavailable():
            sale = self.sales.find_one({"_id": sku})
            if sale is None:
                raise UnknownSku(f"no sale for sku {sku!r}")
            orders = list(self.orders.find({"sku": sku, "status": "confirmed"}, {"user_id": 1, "quantity": 1, "tickets": 1}))
            counted = {d["user_id"]: int(d["units"]) for d in self.buyers.find({"sku": sku})}
        return sale, orders, counted

    def sale_stats(self, sku: str) -> SaleStats:
        sale, orders, _ = self._snapshot(sku)
        return self._stats(sale, orders)

    @staticmethod
    def _stats(sale: Doc, orders: list[Doc]) -> SaleStats:
        total = int(sale["total"])
        per_buyer: dict[str, int] = {}
        held: list[int] = []
        for doc in orders:
            per_buyer[doc["user_id"]] = per_buyer.get(doc["user_id"], 0) + int(doc["quantity"])
            held.extend(int(t) for t in doc["tickets"])
        sold = sum(per_buyer.values())
        problems = () if len(held) == sold else (f"confirmed orders hold {sold} units but {len(held)} tickets",)
        return SaleStats(
            sku=sale["_id"],
            total=total,
            per_user_limit=int(sale["per_user_limit"]),
            sold=sold,
            orders=len(orders),
            buyers=len(per_buyer),
            max_units_per_buyer=max(per_buyer.values(), default=0),
            issued=int(sale["issued"]),
            free=len(sale.get("free_tickets") or []),
            duplicate_tickets=len(held) - len(set(held)),
            tickets_out_of_range=sum(1 for t in held if not 1 <= t <= total),
            tickets_without_order=0,
            problems=problems,
        )

    def _leaks(self, sku: str) -> Leaks:
        sale, orders, counted = self._snapshot(sku)
        held = {int(t) for d in orders for t in d["tickets"]}
        orphans = orphaned_tickets(int(sale["issued"]), held, {int(t) for t in sale.get("free_tickets") or []})
        confirmed: dict[str, int] = {}
        for d in orders:
            confirmed[d["user_id"]] = confirmed.get(d["user_id"], 0) + int(d["quantity"])
        return orphans, excess_units(counted, confirmed)

    def reconcile(self, sku: str, grace_seconds: float = 0.0) -> ReconcileReport:
        orphans, excess = lasting_leaks(lambda: self._leaks(sku), grace_seconds)
        with _unavailable():
            # An orphan still unheld after the grace is nobody's: give it back.
            still_held = {
                int(t)
                for d in self.orders.find({"sku": sku, "status": "confirmed", "tickets": {"$in": sorted(orphans)}})
                for t in d["tickets"]
            }
            released = sorted(orphans - still_held)
            self.release_ticket(sku, released)
            for user_id, extra in excess.items():
                self.release_buyer_units(sku, user_id, extra)
        return ReconcileReport(sku, tuple(released), len(excess), self.sale_stats(sku))
