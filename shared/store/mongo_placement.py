"""How the MongoDB store places orders without a transaction: the named atomic steps, and batches made of them.

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
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from shared.errors import FlashsaleError, InvalidRequest, LimitReached, SoldOut, StoreError, UnknownSku
from shared.models import Order, OrderRequest, PlacedOrder, Sale, utcnow
from shared.store.base import Placement, PlacesOneAsABatch, again
from shared.store.mongo_common import Doc, _unavailable

DUPLICATE_KEY = 11000


class MongoPlacement(PlacesOneAsABatch):
    """MongoStore's order placement, as a base class; the store supplies what is declared under TYPE_CHECKING."""

    if TYPE_CHECKING:
        sales: Collection[Doc]
        orders: Collection[Doc]
        buyers: Collection[Doc]

        def get_sale(self, sku: str) -> Sale | None: ...

        @staticmethod
        def _order(doc: Doc) -> Order: ...

        def find_order_by_key(self, user_id: str, idempotency_key: str) -> Order | None: ...

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
