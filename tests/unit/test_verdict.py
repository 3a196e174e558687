"""One fairness verdict for the demo, `make loadtest` and `make bench`: each check fails on the fault it names."""

from __future__ import annotations

from dataclasses import replace

from ops.verdict import crowd_checks
from shared.models import SaleStats

FAIR = SaleStats(
    "phone", total=100, per_user_limit=1, sold=100, orders=100, buyers=100, max_units_per_buyer=1, issued=100, free=0,
    duplicate_tickets=0, tickets_out_of_range=0, tickets_without_order=0,
)  # fmt: skip


def failed(stats: SaleStats, *, buyers: int = 1000, confirmed: int = 100, other_answers: int = 0) -> list[str]:
    return [name for name, ok in crowd_checks(stats, buyers=buyers, confirmed=confirmed, other_answers=other_answers).items() if not ok]


def test_a_fair_crowd_passes_every_check() -> None:
    assert failed(FAIR) == []
    assert failed(replace(FAIR, sold=40, orders=40, buyers=40, issued=40), buyers=40, confirmed=40) == []  # fewer buyers than units


def test_each_fault_fails_its_own_check() -> None:
    oversold = ["sold exactly 100 (database)", "tickets 1..100, each once", "201s match the database", "database invariants hold"]
    assert failed(replace(FAIR, sold=101)) == oversold
    assert failed(replace(FAIR, sold=99), confirmed=99) == ["sold exactly 100 (database)", "tickets 1..100, each once"]
    assert failed(FAIR, confirmed=101) == ["201s match the database"]
    assert failed(replace(FAIR, max_units_per_buyer=2)) == ["no buyer over the limit", "database invariants hold"]
    assert failed(FAIR, other_answers=3) == ["every answer was 201 or 409"]
    assert "tickets 1..100, each once" in failed(replace(FAIR, duplicate_tickets=1))
    assert "database invariants hold" in failed(replace(FAIR, problems=("a ticket without an order",)))
