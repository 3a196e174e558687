"""Ratios, the crowd's rounds, targets and the per-process figures the capacity planner reads."""

from __future__ import annotations

import json

import pytest

from bench.measure import Measure, ratio, steady_rate
from bench.results import CrowdRound, Pair, Results, pick
from bench.targets import TARGETS, missed


def m(rps: float | None = None, p99: float | None = None, p95: float | None = None, label: str = "x") -> Measure:
    answered = int(rps * 10) if rps is not None else 0
    return Measure(label, requests=answered, answered=answered, rps=rps, p95_ms=p95, p99_ms=p99)


def crowd_round(number: int, baseline: tuple[float, float], real: tuple[float, float]) -> CrowdRound:
    checks = {"sold exactly 1,000 (database)": True}
    return CrowdRound(m(rps=baseline[0], p99=baseline[1]), m(rps=real[0], p99=real[1]), number=number, checks=checks)


def sample() -> Results:
    return Results(
        meta={"measured_at": "2026-11-25T08:00:00+00:00", "cpus": 2, "bcrypt_rounds": 12, "crowd_pick": "median"},
        workers={"order": 2, "stock": 2, "auth": 2, "auth_cpus": 2},
        crowd=[
            crowd_round(1, (1000, 1000), (900, 1100)),
            crowd_round(2, (1000, 1000), (700, 1500)),
            crowd_round(3, (1000, 1000), (800, 1300)),
        ],
        pairs={
            "losers": Pair(m(rps=1000, p99=100), m(rps=850, p99=150)),
            "stock-200": Pair(m(rps=2000, p99=50), m(rps=1900, p99=60)),
            "stock-1000": Pair(m(rps=2100, p99=400), m(rps=2200, p99=380)),
        },
        login=m(rps=7.0, p99=2000),
        bcrypt={"per_second": 8.0, "ms_per_call": 250.0},
        isolation={"split-alone": m(p95=10), "split-storm": m(p95=11), "monolith-alone": m(p95=10), "monolith-storm": m(p95=3000)},
        micro={
            "gate": {"per_second": 6000.0},
            "database": {"per_second": 1500.0},
            "database_batched": {"per_second": 18000.0, "batch": 64},
            "database_batcher": {"per_second": 6000.0, "threads": 64},
        },
    )


def test_ratio_is_none_without_both_values() -> None:
    assert ratio(2.0, 4.0) == 0.5
    assert ratio(None, 4.0) is None
    assert ratio(1.0, 0.0) is None


def test_a_sustained_rate_leaves_out_the_partial_first_second_and_the_stragglers() -> None:
    # 5 s run: second 0 is partial, seconds 1-4 are whole, 5-6 are requests k6 let finish
    assert steady_rate([3, 10, 10, 12, 8, 6, 2], 5) == 10.0
    assert steady_rate([3], 5) is None


def test_pick_median_or_best_in_the_right_direction() -> None:
    assert pick([1.1, 1.5, 1.3], "median", higher_is_better=False) == 1.3
    assert pick([1.1, 1.5, 1.3], "best", higher_is_better=False) == 1.1
    assert pick([0.7, 0.9, None], "best", higher_is_better=True) == 0.9
    assert pick([None], "median", higher_is_better=True) is None


def test_crowd_ratios_are_taken_per_round_then_picked() -> None:
    results = sample()
    assert results.crowd_p99_ratio == 1.3
    assert results.crowd_rps_ratio == 0.8
    results.meta["crowd_pick"] = "best"
    assert results.crowd_p99_ratio == 1.1
    assert results.crowd_rps_ratio == 0.9


def test_targets_say_met_missed_or_not_measured() -> None:
    results = sample()
    verdicts = {t.key: t.met(results) for t in TARGETS}
    assert verdicts == {
        "crowd-p99": False,  # 1.3 > 1.2
        "crowd-rps": True,  # 0.8 >= 0.8
        "crowd-lost": True,  # none lost on either side: (0 + 1) / (0 + 1)
        "losers": False,  # 0.85 < 0.9
        "losers-p99": False,  # 150 / 100 = 1.5 > 1.2
        "losers-stretch": False,  # 0.85 < 1.0
        "stock-200": True,
        "stock-1000": True,
        "login": False,  # 7 of 8 = 0.875
        "isolation": True,  # 1.1
        "observability": None,  # not in the sample: not measured
        "observability-p99": None,
        "store-batching": True,  # 18,000 / 1,500 = 12 >= 10
    }
    assert [t.key for t in missed(results)] == ["crowd-p99", "losers", "losers-p99", "losers-stretch", "login"]
    assert results.storm_ratio("monolith") == 300.0
    assert all(t.met(Results()) is None for t in TARGETS)


def test_lost_connections_are_summed_over_the_crowds_and_held_to_the_baselines() -> None:
    # Bugs caught: a median over crowds (one crowd losing thousands reads as none), and 0 / 0 or n / 0 read as not measured.
    results = sample()
    assert results.crowd_lost_ratio == 1.0
    results.crowd[1].real.statuses["connection"] = 3_473
    assert results.crowd_lost_ratio == 3_474.0
    results.crowd[0].baseline.statuses["connection"] = 5_000
    assert results.crowd_lost_ratio == round(3_474 / 5_001, 3)
    assert next(t for t in TARGETS if t.key == "crowd-lost").met(results) is True
    assert Results().crowd_lost_ratio is None


def test_batching_is_compared_with_one_order_a_transaction_of_the_same_run() -> None:
    results = sample()
    assert (results.batching_ratio, results.batcher_ratio) == (12.0, 4.0)
    assert Results(micro={"database_batched": {"per_second": 10.0}}).batching_ratio is None  # no single-order figure: not measured


def test_figures_have_the_planners_shape_and_are_per_process() -> None:
    figures = sample().figures()
    assert figures == {
        "measured_at": "2026-11-25T08:00:00+00:00",
        "command": "make bench",
        "cpus": 2,
        "bcrypt_rounds": 12,
        "machine": None,
        "order": {"losers_rps_per_process": 425.0, "crowd_rps_per_process": 400.0, "p99_ms": 1300.0, "max_ms": None},
        "stock": {"rps_per_process": 1100.0, "p99_ms": 380.0, "max_ms": None},
        "auth": {"logins_per_s_per_cpu": 3.5, "bcrypt_verify_ms": 250.0, "max_ms": None},
        "redis": {"gate_admits_per_s": 6000.0},
        "database": {"orders_per_s": 1500.0},
    }
    json.dumps(figures)  # plain JSON


def test_figures_take_each_functions_slowest_answer_and_the_machine() -> None:
    # The planner sizes the probes' timeouts from these: the slowest answer of any run of the function.
    results = sample()
    results.crowd[1].real.max_ms = 9000.0
    results.pairs["losers"].real.max_ms = 12000.0
    results.pairs["losers"].baseline.max_ms = 50000.0  # the empty function's, not flashsale's
    results.pairs["stock-200"].real.max_ms = 700.0
    results.pairs["stock-1000"].real.max_ms = 900.0
    assert results.login is not None
    results.login.max_ms = 2000.0
    results.storm_logins = {"split": Measure("storm", max_ms=2500.0), "monolith": Measure("storm", max_ms=9999.0)}  # monolith: not deployed
    results.meta["machine"] = {"cpu_model": "Test CPU"}
    figures = results.figures()
    assert (figures["order"]["max_ms"], figures["stock"]["max_ms"], figures["auth"]["max_ms"]) == (12000.0, 900.0, 2500.0)
    assert figures["machine"] == {"cpu_model": "Test CPU"}


def test_figures_of_an_empty_run_keep_the_shape() -> None:
    figures = Results().figures()
    assert set(figures) == {"measured_at", "command", "cpus", "bcrypt_rounds", "machine", "order", "stock", "auth", "redis", "database"}
    assert figures["order"] == {"losers_rps_per_process": None, "crowd_rps_per_process": None, "p99_ms": None, "max_ms": None}


@pytest.mark.parametrize("results", [sample(), Results()])
def test_results_survive_a_round_trip_through_json(results: Results) -> None:
    again = Results.from_json(json.loads(json.dumps(results.to_json())))
    assert again.to_json() == results.to_json()
