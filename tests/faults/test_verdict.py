"""The judge must be able to fail: each check catches the breach it exists for.

A fault scenario that passes proves something only if the same checks would
fail on a lost order, an oversell, a phantom order or a wrong answer. Here
each breach is staged in a real SQLite file and set against made-up answers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.models import request_fingerprint
from shared.store.sqlite import SqliteStore
from tests.faults.crowd import Answer, Buyer
from tests.faults.verdict import Verdict, judge

SKU = "phone"


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    made = SqliteStore(str(tmp_path / "verdict.db"))
    made.create_sale(SKU, 2, 1, None)
    return made


def confirmed(store: SqliteStore, user: str) -> Answer:
    order = store.place_order(SKU, user, 1, idempotency_key=f"key-{user}", request_hash=request_fingerprint(SKU, 1)).order
    return Answer(201, "confirmed", order.order_id, order.ticket)


def buyer(user: str, *answers: Answer) -> Buyer:
    made = Buyer(user, "token", f"key-{user}", list(answers))
    made.finals = [answers[-1]] if answers else []
    return made


SOLD_OUT = Answer(409, "sold_out")


def verdict(store: SqliteStore, buyers: list[Buyer], demand: bool = True) -> Verdict:
    return judge(store, SKU, buyers, unsold_before_reconcile=0, demand_exceeds_supply=demand)


def test_a_fair_sale_passes(store: SqliteStore) -> None:
    buyers = [buyer("a", confirmed(store, "a")), buyer("b", Answer(0, "reset"), confirmed(store, "b")), buyer("c", SOLD_OUT)]
    result = verdict(store, buyers)
    assert result.ok, result.problems
    assert (result.acknowledged, result.found, result.lost, result.sold) == (2, 2, 0, 2)
    assert result.other_answers == {"reset": 1}


def test_a_lost_order_is_caught(store: SqliteStore) -> None:
    buyers = [buyer("a", confirmed(store, "a")), buyer("b", confirmed(store, "b"))]
    with store._transaction() as conn:  # the database "forgets" b's order
        conn.execute("DELETE FROM order_tickets WHERE order_id = ?", (buyers[1].answers[0].order_id,))
        conn.execute("DELETE FROM orders WHERE order_id = ?", (buyers[1].answers[0].order_id,))
    result = verdict(store, buyers, demand=False)
    assert result.lost == 1 and not result.ok


def test_a_201_that_was_never_written_is_caught(store: SqliteStore) -> None:
    result = verdict(store, [buyer("a", Answer(201, "confirmed", "made-up-order", 1))], demand=False)
    assert result.lost == 1 and not result.ok


def test_an_order_behind_a_refusal_is_caught(store: SqliteStore) -> None:
    confirmed(store, "a")
    result = verdict(store, [buyer("a", SOLD_OUT)], demand=False)
    assert result.unacknowledged == 1 and not result.ok


def test_an_oversell_is_caught(store: SqliteStore) -> None:
    buyers = [buyer(u, confirmed(store, u)) for u in ("a", "b")]
    with store._transaction() as conn:  # a third order squeezed past the stock
        conn.execute(
            "INSERT INTO orders (order_id, sku, user_id, quantity, status, created_at) VALUES ('x', ?, 'c', 1, 'confirmed', 0)", (SKU,)
        )
        conn.execute("INSERT INTO order_tickets (sku, ticket, order_id) VALUES (?, 3, 'x')", (SKU,))
    buyers.append(buyer("c", Answer(201, "confirmed", "x", 3)))
    result = verdict(store, buyers)
    assert result.oversold == 1 and result.duplicate_tickets == 1 and not result.ok


def test_a_buyer_over_the_limit_is_caught(store: SqliteStore) -> None:
    first = confirmed(store, "a")
    with store._transaction() as conn:
        conn.execute(
            "INSERT INTO orders (order_id, sku, user_id, quantity, status, created_at) VALUES ('y', ?, 'a', 1, 'confirmed', 0)", (SKU,)
        )
        conn.execute("INSERT INTO order_tickets (sku, ticket, order_id) VALUES (?, 2, 'y')", (SKU,))
    result = verdict(store, [buyer("a", first, Answer(201, "confirmed", "y", 2))])
    assert result.over_limit == 1 and not result.ok


def test_different_answers_for_one_key_are_caught(store: SqliteStore) -> None:
    answer = confirmed(store, "a")
    split = buyer("a", answer, Answer(409, "limit_reached"))
    split.finals = list(split.answers)
    result = verdict(store, [split], demand=False)
    assert result.inconsistent == 1 and not result.ok


def test_a_wrong_limit_reached_is_caught(store: SqliteStore) -> None:
    result = verdict(store, [buyer("a", Answer(409, "limit_reached"))], demand=False)
    assert result.wrong_refusals == 1 and not result.ok


def test_unsold_units_are_caught_when_demand_exceeded_supply(store: SqliteStore) -> None:
    buyers = [buyer("a", confirmed(store, "a")), buyer("b", SOLD_OUT), buyer("c", SOLD_OUT)]
    result = verdict(store, buyers)
    assert result.undersold == 1 and not result.ok
    assert verdict(store, buyers, demand=False).ok


def test_a_buyer_left_without_an_answer_is_caught(store: SqliteStore) -> None:
    result = verdict(store, [buyer("a", Answer(503, "unavailable"))], demand=False)
    assert result.gave_up == 1 and not result.ok


def test_a_500_is_caught(store: SqliteStore) -> None:
    result = verdict(store, [buyer("a", Answer(500, "internal"), confirmed(store, "a"))], demand=False)
    assert not result.ok and any("500" in p for p in result.problems)
