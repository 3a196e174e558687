"""What the database says after a sale, set against what every client was told.

Nothing here trusts the function set's own view: every count comes from the
store, and every promise from the answers the crowd recorded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from shared.store.base import Store
from tests.faults.crowd import Buyer


@dataclass
class Verdict:
    total: int
    buyers: int
    sold: int
    acknowledged: int  # orders clients were given with a 201
    found: int  # of those, confirmed in the database for the same buyer
    lost: int  # acknowledged but missing or not confirmed
    oversold: int
    over_limit: int  # buyers holding more than the per-user limit
    unacknowledged: int  # confirmed orders that no client was given (a refused client with an order)
    duplicate_tickets: int
    inconsistent: int  # buyers told different things for one Idempotency-Key
    wrong_refusals: int  # buyers told limit_reached while holding less than the limit
    gave_up: int  # buyers still without an answer when their patience ran out
    unsold_before_reconcile: int
    undersold: int  # units unsold at the end although demand exceeded supply
    other_answers: Counter[str] = field(default_factory=Counter)  # every answer that was neither 201 nor 409
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def judge(store: Store, sku: str, buyers: list[Buyer], *, unsold_before_reconcile: int, demand_exceeds_supply: bool) -> Verdict:
    stats = store.sale_stats(sku)
    acknowledged = found = unacknowledged = over_limit = wrong_refusals = inconsistent = gave_up = 0
    crowd_orders = 0
    problems: list[str] = []
    told_tickets: dict[int, str] = {}
    other: Counter[str] = Counter()
    for buyer in buyers:
        held = [o for o in store.list_orders(buyer.user_id) if o.sku == sku and o.status == "confirmed"]
        crowd_orders += len(held)
        in_database = {o.order_id: o for o in held}
        told = buyer.order_ids
        acknowledged += len(told)
        found += len(told & in_database.keys())
        unacknowledged += len(in_database.keys() - told)
        units = sum(o.quantity for o in held)
        if units > stats.per_user_limit:
            over_limit += 1
        for answer in buyer.answers:
            if answer.status not in (201, 409):
                other[answer.label] += 1
            if answer.status == 201 and answer.order_id in in_database:
                if answer.ticket != in_database[answer.order_id].ticket:
                    problems.append(f"order {answer.order_id}: client was told ticket {answer.ticket}, database has another")
                if told_tickets.setdefault(answer.ticket or 0, answer.order_id) != answer.order_id:
                    problems.append(f"ticket {answer.ticket} was given to two orders")
        if any(a.code == "limit_reached" for a in buyer.answers) and units < stats.per_user_limit:
            wrong_refusals += 1
        if len({(a.status, a.order_id or a.code) for a in buyer.finals}) > 1:
            inconsistent += 1
        if not buyer.finals or any(not a.settled for a in buyer.finals):
            gave_up += 1
    lost = acknowledged - found
    oversold = max(0, stats.sold - stats.total)
    undersold = stats.total - stats.sold if demand_exceeds_supply else 0
    duplicates = stats.duplicate_tickets + stats.tickets_out_of_range
    for count, what in [
        (lost, "acknowledged orders are not confirmed in the database"),
        (oversold, "units oversold"),
        (over_limit, "buyers hold more than the per-user limit"),
        (unacknowledged, "confirmed orders were never acknowledged to their buyer"),
        (duplicates, "tickets held twice or out of range"),
        (inconsistent, "buyers got different answers for one Idempotency-Key"),
        (wrong_refusals, "buyers were told limit_reached while holding less than the limit"),
        (gave_up, "buyers never got an answer"),
        (undersold, "units unsold after reconcile although demand exceeded supply"),
        (stats.orphaned, "units orphaned after reconcile"),
        (other["500 internal"], "answers were 500 internal"),
    ]:
        if count:
            problems.append(f"{count} {what}")
    if crowd_orders != stats.orders:
        problems.append(f"the database has {stats.orders} orders, the crowd's buyers {crowd_orders}")
    problems.extend(stats.violations())
    return Verdict(
        total=stats.total,
        buyers=len(buyers),
        sold=stats.sold,
        acknowledged=acknowledged,
        found=found,
        lost=lost,
        oversold=oversold,
        over_limit=over_limit,
        unacknowledged=unacknowledged,
        duplicate_tickets=duplicates,
        inconsistent=inconsistent,
        wrong_refusals=wrong_refusals,
        gave_up=gave_up,
        unsold_before_reconcile=unsold_before_reconcile,
        undersold=undersold,
        other_answers=other,
        problems=problems,
    )
