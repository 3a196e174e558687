"""The production store: MongoDB through pymongo.

No multi-document transaction is used. Orders are placed in batches (one
order is a batch of one) by named atomic steps, each a single-document
conditional update or one insert, and each undone by a later step's failure:

1. ``claim_buyer_units``: the buyer's count, upserted only while under the
   limit; a unique (sku, user_id) index turns a second racer's upsert into a
   duplicate-key error, so the limit holds under any interleaving. One step
   per order: each buyer's count is its own document, and no single atomic
   step spans several documents.
2. ``reserve_tickets``: pop the lowest returned tickets, then take a block of
   fresh ones for the whole batch with one conditional ``$inc`` while
   ``remaining`` covers it (stock never goes below zero). The tickets are dealt
   out in list order; those no order can use go straight back.
3. ``confirm_orders``: one ordered ``insert_many`` of the batch's orders; a
   unique index on ``idem`` (the buyer's Idempotency-Key, or the order id)
   makes a concurrent replay lose cleanly, and the insert resumes after it.
4. on any failure, ``release_ticket`` and ``release_buyer_units`` give back
   what was taken. A process killed between steps leaves orphaned units, which
   ``reconcile`` returns.

A batch is cut into runs in which each buyer appears once: a buyer's second
order (or a replay of their key) then sees the first's outcome, exactly as if
the orders had come one after another.

Sale settings change by versioned compare-and-set with jittered retries.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, MongoClient, ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from shared.errors import (
    ConcurrentUpdate,
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

Doc = dict[str, Any]
CAS_ATTEMPTS = 6
DUPLICATE_KEY = 11000


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


@contextmanager
def _unavailable() -> Iterator[None]:
    """A MongoDB failure inside the block as StoreError: the request was fine, the database was not (503)."""
    try:
        yield
    except PyMongoError as exc:
        raise StoreError(str(exc)) from exc


def _backoff(attempt: int) -> None:
    # Full jitter: spreads racers apart instead of retrying in lockstep.
    time.sleep(random.uniform(0, 0.005 * 2**attempt))


class MongoStore:
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

    # the named atomic steps -------------------------------------------
    def claim_buyer_units(self, sku: str, user_id: str, quantity: int, limit: int) -> None:
        if quantity > limit:
            raise LimitReached(f"this sale allows {limit} per buyer")
        try:
            self.buyers.update_one(
                {"sku": sku, "user_id": user_id, "units": {"$lte": limit - quantity}},
                {"$inc": {"units": quantity}},
                upsert=True,
            )
        except DuplicateKeyError as exc:
            raise LimitReached(f"this sale allows {limit} per buyer") from exc

    def release_buyer_units(self, sku: str, user_id: str, quantity: int) -> None:
        self.buyers.update_one({"sku": sku, "user_id": user_id, "units": {"$gte": quantity}}, {"$inc": {"units": -quantity}})

    def reserve_tickets(self, sku: str, wanted: int) -> list[int]:
        """Up to ``wanted`` tickets, the lowest returned ones first; fewer means the sale has no more.

        Returned tickets are popped one at a time (there are few: cancellations
        and reconciles make them); fresh ones come as one block, one
        conditional ``$inc``, however many orders share it. On a failure what
        was taken goes back (best effort; reconcile returns the rest).
        """
        tickets: list[int] = []
        try:
            while len(tickets) < wanted:
                returned = self.sales.find_one_and_update(
                    {"_id": sku, "free_tickets.0": {"$exists": True}},
                    {"$pop": {"free_tickets": -1}},
                    projection={"free_tickets": {"$slice": 1}},
                    return_document=ReturnDocument.BEFORE,
                )
                if returned is None:
                    break
                tickets.append(int(returned["free_tickets"][0]))
            fresh = wanted - len(tickets)
            while fresh > 0:
                block = self.sales.find_one_and_update(
                    {"_id": sku, "remaining": {"$gte": fresh}},
                    {"$inc": {"remaining": -fresh, "issued": fresh}},
                    projection={"issued": 1},
                    return_document=ReturnDocument.AFTER,
                )
                if block is not None:
                    tickets.extend(range(int(block["issued"]) - fresh + 1, int(block["issued"]) + 1))
                    break
                # Fewer left than wanted: ask for what is left (others may take it first; then ask again).
                left = self.sales.find_one({"_id": sku}, {"remaining": 1})
                fresh = min(fresh, int(left["remaining"])) if left else 0
        except PyMongoError:
            self._give_back(sku, tickets, [])
            raise
        return tickets

    def reserve_unit(self, sku: str) -> int | None:
        """One ticket, or None when sold out."""
        return next(iter(self.reserve_tickets(sku, 1)), None)

    def release_ticket(self, sku: str, tickets: Iterable[int]) -> None:
        given_back = sorted(tickets)
        if given_back:
            self.sales.update_one({"_id": sku}, {"$push": {"free_tickets": {"$each": given_back, "$sort": 1}}})

    @staticmethod
    def _order_doc(order: Order) -> Doc:
        return {
            "_id": order.order_id,
            "idem": f"{order.user_id}\n{order.idempotency_key}" if order.idempotency_key else order.order_id,
            "sku": order.sku,
            "user_id": order.user_id,
            "quantity": order.quantity,
            "tickets": list(order.tickets),
            "status": "confirmed",
            "idempotency_key": order.idempotency_key,
            "request_hash": order.request_hash,
            "created_at": order.created_at,
        }

    def confirm_order(self, order: Order) -> None:
        self.orders.insert_one(self._order_doc(order))

    def confirm_orders(self, orders: Sequence[Order]) -> set[str]:
        """Insert the orders, in list order; return the ids of those whose Idempotency-Key another request used first.

        An ordered insert stops at a duplicate: the orders before it are in,
        and the insert goes on from the one after it.
        """
        lost: set[str] = set()
        rest = list(orders)
        while rest:
            try:
                self.orders.insert_many([self._order_doc(order) for order in rest], ordered=True)
                break
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors") or []
                if not errors or errors[0].get("code") != DUPLICATE_KEY:
                    raise
                at = int(errors[0]["index"])
                lost.add(rest[at].order_id)
                rest = rest[at + 1 :]
        return lost

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
        answers: list[Placement] = []
        for run in _runs_of_distinct_buyers(requests):
            answers += self._place_run(run)
        return answers

    def _place_run(self, run: Sequence[OrderRequest]) -> list[Placement]:
        """Orders of distinct buyers: replays answered from one lookup, units taken per sku, one insert for all."""
        answers: dict[int, Placement] = {}
        taken: dict[int, Order] = {}  # units held for orders not written yet
        for i, request in enumerate(run):
            if request.quantity < 1:
                answers[i] = InvalidRequest("quantity must be at least 1")
        try:
            answers.update(self._replays(run, [i for i in range(len(run)) if i not in answers]))
            for sku in dict.fromkeys(request.sku for i, request in enumerate(run) if i not in answers):
                wanting = {i: request for i, request in enumerate(run) if request.sku == sku and i not in answers}
                for i, outcome in self._take_units(sku, wanting).items():
                    if isinstance(outcome, Order):
                        taken[i] = outcome
                    else:
                        answers[i] = outcome
        except StoreError as failed:
            # The failing step gave back what it took; earlier skus' units are held in ``taken``.
            self._give_back_orders(taken.values())
            return [answers.get(i) or again(failed) for i in range(len(run))]
        answers.update(self._confirm(taken))
        return [answers[i] for i in range(len(run))]

    def _replays(self, run: Sequence[OrderRequest], pending: list[int]) -> dict[int, Placement]:
        by_idem = {f"{run[i].user_id}\n{run[i].idempotency_key}": i for i in pending if run[i].idempotency_key is not None}
        if not by_idem:
            return {}
        with _unavailable():
            earlier = list(self.orders.find({"idem": {"$in": list(by_idem)}}))
        return {by_idem[doc["idem"]]: _replay_of(self._order(doc), run[by_idem[doc["idem"]]].request_hash) for doc in earlier}

    def _take_units(self, sku: str, wanting: dict[int, OrderRequest]) -> dict[int, Order | FlashsaleError]:
        """Claim each buyer's units, then one block of tickets for all, dealt out in list order.

        An order the tickets do not cover is sold out (a smaller one after it
        may still be covered, as one by one); its claim and unused tickets go back.
        """
        sale = self.get_sale(sku)
        if sale is None:
            return {i: UnknownSku(f"no sale for sku {sku!r}") for i in wanting}
        outcomes: dict[int, Order | FlashsaleError] = {}
        claimed: dict[int, OrderRequest] = {}
        try:
            for i, request in wanting.items():
                try:
                    self.claim_buyer_units(sku, request.user_id, request.quantity, sale.per_user_limit)
                    claimed[i] = request
                except LimitReached as refused:
                    outcomes[i] = refused
            tickets = self.reserve_tickets(sku, sum(request.quantity for request in claimed.values()))
        except PyMongoError as exc:
            self._give_back(sku, [], claimed.values())
            raise StoreError(str(exc)) from exc
        dealt = 0
        for i, request in claimed.items():
            if request.quantity > len(tickets) - dealt:
                outcomes[i] = SoldOut()
                continue
            outcomes[i] = Order(
                order_id=uuid.uuid4().hex,
                sku=sku,
                user_id=request.user_id,
                quantity=request.quantity,
                tickets=tuple(sorted(tickets[dealt : dealt + request.quantity])),
                status="confirmed",
                created_at=utcnow(),
                idempotency_key=request.idempotency_key,
                request_hash=request.request_hash,
            )
            dealt += request.quantity
        self._give_back(sku, tickets[dealt:], [claimed[i] for i in claimed if isinstance(outcomes[i], SoldOut)])
        return outcomes

    def _confirm(self, taken: dict[int, Order]) -> dict[int, Placement]:
        if not taken:
            return {}
        try:
            lost = self.confirm_orders(list(taken.values()))
        except PyMongoError as exc:
            return self._after_failed_insert(taken, StoreError(str(exc)))
        answers: dict[int, Placement] = {}
        for i, order in taken.items():
            if order.order_id not in lost:
                answers[i] = PlacedOrder(order)
                continue
            # A concurrent request with the same Idempotency-Key won the insert.
            self._give_back_orders([order])
            try:
                earlier = self.find_order_by_key(order.user_id, order.idempotency_key or "")
            except StoreError as failed:
                answers[i] = failed
                continue
            answers[i] = StoreError("order insert conflicted") if earlier is None else _replay_of(earlier, order.request_hash)
        return answers

    def _after_failed_insert(self, taken: dict[int, Order], failed: StoreError) -> dict[int, Placement]:
        """An insert that failed may still have landed in part: only orders known absent give their units back.

        If even that cannot be read, nothing is given back (a ticket given back
        while an order holds it would be sold twice); reconcile returns them later.
        """
        try:
            landed = {doc["_id"] for doc in self.orders.find({"_id": {"$in": [o.order_id for o in taken.values()]}}, {"_id": 1})}
        except PyMongoError:
            return {i: again(failed) for i in taken}
        self._give_back_orders([order for order in taken.values() if order.order_id not in landed])
        return {i: PlacedOrder(order) if order.order_id in landed else again(failed) for i, order in taken.items()}

    def _give_back_orders(self, orders: Iterable[Order]) -> None:
        for order in orders:
            self._give_back(order.sku, order.tickets, [OrderRequest(order.sku, order.user_id, order.quantity)])

    def _give_back(self, sku: str, tickets: Sequence[int], claims: Iterable[OrderRequest]) -> None:
        # Best effort: if MongoDB is gone too, reconcile returns what is left.
        try:
            self.release_ticket(sku, tickets)
            for claim in claims:
                self.release_buyer_units(sku, claim.user_id, claim.quantity)
        except PyMongoError:
            pass

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


def _runs_of_distinct_buyers(requests: Sequence[OrderRequest]) -> list[list[OrderRequest]]:
    """Consecutive runs in which each buyer appears once: a buyer's next order must see the outcome of the one before."""
    runs: list[list[OrderRequest]] = []
    buyers: set[str] = set()
    for request in requests:
        if not runs or request.user_id in buyers:
            runs.append([])
            buyers = set()
        runs[-1].append(request)
        buyers.add(request.user_id)
    return runs


def _replay_of(earlier: Order, request_hash: str | None) -> Placement:
    try:
        return PlacedOrder.replay_of(earlier, request_hash)
    except FlashsaleError as refused:
        return refused
