"""The capacity planner: Knative's own arithmetic, the annotations and probes, the Redis and database load, and where it runs out."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ops import plan as planner
from ops.plan import Figures, FiguresMissing, Scenario, load_figures, make_plan, pods_for, simulate_function

REPO = Path(__file__).resolve().parents[2]

# Round figures, so every expected number below can be worked out by hand.
FIGURES = Figures(
    order_losers_rps_per_process=2000,
    order_crowd_rps_per_process=1000,
    order_p99_ms=100,
    order_max_ms=2500,
    stock_rps_per_process=2000,
    stock_p99_ms=50,
    stock_max_ms=800,
    auth_logins_per_s_per_cpu=4,
    auth_bcrypt_verify_ms=250,
    auth_max_ms=1200,
    redis_gate_admits_per_s=20_000,
    database_orders_per_s=2000,
)
RESULTS = {
    "measured_at": "2026-01-01T00:00:00+00:00",
    "command": "make bench",
    "cpus": 2,
    "bcrypt_rounds": 12,
    "machine": {"cpu_model": "Test CPU"},
    "order": {"losers_rps_per_process": 2000, "crowd_rps_per_process": 1000, "p99_ms": 100, "max_ms": 2500},
    "stock": {"rps_per_process": 2000, "p99_ms": 50, "max_ms": 800},
    "auth": {"logins_per_s_per_cpu": 4, "bcrypt_verify_ms": 250, "max_ms": 1200},
    "redis": {"gate_admits_per_s": 20_000},
    "database": {"orders_per_s": 2000},
}


# --- Knative's arithmetic and the pods --------------------------------------------
#
# Knative Serving's pkg/reconciler/autoscaling/resources/target.go: the autoscaler aims at
# TargetValue = target x utilization per pod; pkg/autoscaler/scaling/autoscaler.go: desired
# pods = ceil(observed / TargetValue), observed being what it measures (requests that
# arrive for rps, requests in flight for concurrency).


def test_pods_are_the_observed_metric_over_target_times_utilization() -> None:
    assert pods_for(1000, 100, 0.7) == pytest.approx(1000 / 70)
    assert pods_for(8.0, 2, 0.5) == pytest.approx(8.0)


def test_order_scales_on_requests_per_second_against_what_a_pod_answers() -> None:
    order = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES).functions["order"]

    notes = order.annotations
    assert notes.metric == "rps"
    assert notes.target == 1000  # 1 worker x 1,000/s measured in the crowd
    assert order.demand_per_s == 10_000  # 10,000 presses in 1 s
    assert order.pods_exact == pytest.approx(10_000 / 700)  # TargetValue = 1,000 x 0.70 = 700
    assert order.pods == 15  # ceil(14.29)
    assert (notes.min_scale, notes.initial_scale, notes.max_scale) == (15, 15, 30)
    assert notes.target_utilization_percentage == 70
    assert notes.target_burst_capacity == 0  # no activator: it would forward at once anyway
    assert notes.container_concurrency is None
    # The time a request really spends inside, not a goal: 1 ms of its worker at 1,000/s.
    assert order.seconds_inside == pytest.approx(0.001)
    assert order.in_flight == pytest.approx(10)  # 10,000/s x 1 ms: under one per pod


def test_the_planned_pods_run_at_the_utilization_knative_aims_at() -> None:
    order = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES).functions["order"]
    busy = order.demand_per_s / (order.pods * order.per_pod_per_s)
    assert busy <= 0.70  # 10,000 / 15,000 = 67 %: the 30 % headroom exists


def test_a_longer_window_spreads_the_crowd() -> None:
    order = make_plan(Scenario(buyers=100_000, stock=1000, window_seconds=10), FIGURES).functions["order"]
    assert order.demand_per_s == 10_000
    assert order.pods == 15


def test_stock_scales_on_requests_per_second_for_the_refreshers() -> None:
    small = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES).functions["stock"]
    assert small.annotations.metric == "rps"
    assert small.demand_per_s == 2000  # 10,000 buyers, one read every 5 s
    assert small.annotations.target == 2000
    assert small.pods_exact == pytest.approx(2000 / 1400)  # 1.43
    assert small.pods == 2  # never fewer than 2
    assert small.annotations.target_burst_capacity == 0

    large = make_plan(Scenario(buyers=100_000, stock=1000), FIGURES).functions["stock"]
    assert large.demand_per_s == 20_000
    assert large.pods_exact == pytest.approx(20_000 / 1400)  # 14.29
    assert large.pods == 15


def test_auth_scales_on_the_logins_in_flight_behind_a_hard_limit() -> None:
    auth = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES).functions["auth"]

    notes = auth.annotations
    assert notes.metric == "concurrency"
    assert notes.container_concurrency == 2  # 1 worker x 2 hashing threads
    assert notes.target == 2
    assert notes.target_burst_capacity == -1  # the activator queues logins for a free slot
    assert auth.demand_per_s == pytest.approx(10_000 / 300)  # 33.3 logins/s
    assert auth.per_pod_per_s == 8  # 2 CPUs x 4 logins/s
    assert auth.seconds_inside == pytest.approx(0.25)  # one measured verify
    assert auth.in_flight == pytest.approx(10_000 / 300 * 0.25)  # 8.33
    assert auth.pods_exact == pytest.approx(8.3333 / 1.4, rel=1e-4)  # TargetValue = 2 x 0.70
    assert auth.pods == 6
    assert (notes.min_scale, notes.initial_scale, notes.max_scale) == (6, 6, 12)


def test_auth_takes_the_larger_of_concurrency_and_throughput() -> None:
    # 2 logins/s per CPU but 250 ms per verify: the other half of each login is not bcrypt.
    slow = Figures(**{**vars(FIGURES), "auth_logins_per_s_per_cpu": 2})
    auth = make_plan(Scenario(buyers=10_000, stock=1000), slow).functions["auth"]
    assert auth.pods_exact == pytest.approx((10_000 / 300) / (2 * 2 * 0.7))  # 11.9
    assert auth.pods == 12


def test_rps_functions_panic_as_soon_as_arrivals_pass_what_the_ready_pods_answer() -> None:
    # isOverPanicThreshold := dppc/readyPodsCount >= PanicThreshold (autoscaler.go): with a target of
    # the measured rate at 70 %, arrivals reach the pods' rate at 1 / 0.70 = 142.9 % of the target pods.
    plan = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES)
    assert plan.functions["order"].annotations.panic_threshold_percentage == 142
    assert plan.functions["stock"].annotations.panic_threshold_percentage == 142
    assert plan.functions["auth"].annotations.panic_threshold_percentage is None  # concurrency: a backlog shows
    assert planner.panic_threshold_for(95) == 110  # Knative's lowest (pkg/apis/autoscaling/register.go)
    assert planner.panic_threshold_for(5) == 1000  # and highest


def test_a_sustained_crowd_twice_the_plan_makes_the_kpa_panic_for_more_pods() -> None:
    # 20,000/s for a minute on pods planned for 10,000/s: the 6 s window wants ceil(20,000 / 700) = 29
    # pods against 15 ready, 193 %: over 142, not over Knative's default 200.
    plan = make_plan(Scenario(buyers=600_000, stock=1000, window_seconds=60), FIGURES)
    result = simulate_function(plan, "order", crowd_factor=2.0, seconds=40)
    assert result.panicked
    assert max(row.desired for row in result.timeline) == 29
    order = plan.functions["order"]
    at_default = replace(order, annotations=replace(order.annotations, panic_threshold_percentage=None))  # Knative's 200
    unpanicked = replace(plan, functions={**plan.functions, "order": at_default})
    assert not simulate_function(unpanicked, "order", crowd_factor=2.0, seconds=40).panicked


def test_probes_time_out_past_twice_the_slowest_answer_the_benchmark_saw() -> None:
    plan = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES)
    timeouts = {name: (fn.probes.readiness.timeout_seconds, fn.probes.liveness.timeout_seconds) for name, fn in plan.functions.items()}
    assert timeouts == {"order": (5, 5), "stock": (2, 2), "auth": (3, 3)}  # 2 x 2,500, 800 and 1,200 ms, rounded up
    for fn in plan.functions.values():
        assert fn.probes.readiness.period_seconds == 1
        assert fn.probes.liveness.period_seconds == 10
        assert fn.probes.readiness.failure_threshold == fn.probes.liveness.failure_threshold == 3


def test_timeout_covers_the_probes_and_queue_proxys_drain() -> None:
    # timeoutSeconds is also the pod's termination grace (serving's BuildPodSpec): at least the
    # 30 s queue-proxy drains, and never shorter than a probe waits.
    plan = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES)
    assert {name: fn.timeout_seconds for name, fn in plan.functions.items()} == {"auth": 30, "stock": 30, "order": 30}
    slow = make_plan(Scenario(buyers=10_000, stock=1000), Figures(**{**vars(FIGURES), "order_max_ms": 19_934}))
    order = slow.functions["order"]
    assert order.probes.liveness.timeout_seconds == 40  # 2 x 19.934 s, rounded up
    assert order.timeout_seconds == 40  # raised from 30 so that the probe fits in a request's time
    assert "timeoutSeconds 40" in "\n".join(order.arithmetic)


def test_the_arithmetic_is_shown() -> None:
    order = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES).functions["order"]
    text = "\n".join(order.arithmetic)
    assert "ceil(10,000 / (1,000 x 0.70)) = ceil(14.29)" in text
    assert "timeout 5 s" in text


# --- the ingress gateway --------------------------------------------------------------
#
# net-kourier sets no circuit breakers on its clusters (pkg/envoy/api/cluster.go), so Envoy's defaults
# hold per cluster in each gateway replica: 1,024 requests (circuit_breaker.proto, Thresholds).


def test_the_gateway_is_sized_for_twice_the_crowd_against_envoys_limits() -> None:
    gateway = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES).gateway
    order = next(c for c in gateway.clusters if c.function == "order")
    assert order.in_flight == pytest.approx(10)  # 10,000/s x 1 ms inside: the 15 pods answer 15,000/s
    assert order.in_flight_twice == pytest.approx(20 + 5_000)  # 20,000/s: 5,000 more than they answer wait in the window
    assert gateway.max_requests_per_cluster == 1024
    assert gateway.replicas == 8  # ceil(5,020 / (1,024 x 0.7)) = ceil(7.003)
    assert order.per_replica_twice == pytest.approx(5_020 / 8)
    assert all(c.per_replica_twice <= 1024 * 0.7 for c in gateway.clusters)
    assert gateway.cpu_request == pytest.approx(1.6)
    assert gateway.cpu_limit == pytest.approx(8.0)
    assert make_plan(Scenario(buyers=100, stock=10), FIGURES).gateway.replicas == 2  # never fewer
    assert make_plan(Scenario(buyers=10_000, stock=1000), FIGURES).finding("gateway_replicas") is None


def test_a_gateway_past_its_autoscalers_ceiling_is_flagged() -> None:
    plan = make_plan(Scenario(buyers=100_000, stock=1000), FIGURES)
    assert plan.gateway.replicas > 10
    finding = plan.finding("gateway_replicas")
    assert finding is not None and "maxReplicas" in finding.message


def test_the_gateway_is_in_the_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(RESULTS))
    assert planner.main(["--buyers", "10000", "--stock", "1000", "--figures", str(results), "--json"]) == 0
    gateway = json.loads(capsys.readouterr().out)["gateway"]
    assert gateway["replicas"] == 8
    assert {c["function"] for c in gateway["clusters"]} == {"order", "stock"}


# --- Redis and the database ---------------------------------------------------------


def test_redis_load_for_the_mission() -> None:
    plan = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES)
    redis = plan.redis
    assert redis.gate_peak_ops_per_s == 10_000
    assert redis.gate_busy_percent == pytest.approx(50)
    assert redis.sell_out_seconds == pytest.approx(0.1)  # 1,000 units at 10,000 admits/s
    assert redis.gate_queue_seconds == 0
    assert redis.sub_gates == 1
    assert redis.gate_after_sell_out_ops_per_s == 15  # one per order worker per second
    assert plan.finding("gate_split") is None


def test_the_sharding_warning_appears_past_the_gate_limit() -> None:
    # 20,000/s per key at 70 %: 14,000 presses/s is the most one key takes.
    at_limit = make_plan(Scenario(buyers=14_000, stock=1000), FIGURES)
    past_limit = make_plan(Scenario(buyers=14_001, stock=1000), FIGURES)

    assert at_limit.redis.sub_gates == 1
    assert at_limit.finding("gate_split") is None
    assert past_limit.redis.sub_gates == 2
    warning = past_limit.finding("gate_split")
    assert warning is not None
    assert "2 sub-gates" in warning.message
    assert "hash(user id)" in warning.message
    assert "500 units each" in warning.message
    assert "fs:{sku#1}:gate" in warning.message


def test_a_hundred_thousand_buyers_need_eight_sub_gates_and_queue_at_the_gate() -> None:
    plan = make_plan(Scenario(buyers=100_000, stock=10_000), FIGURES)
    assert plan.redis.sub_gates == math.ceil(100_000 / 14_000)  # 8
    # 10,000 units at 20,000/s: 0.5 s of 100,000 presses/s against 20,000/s answered.
    assert plan.redis.sell_out_seconds == pytest.approx(0.5)
    assert plan.redis.gate_queue_seconds == pytest.approx((100_000 - 20_000) * 0.5 / 20_000)  # 2 s
    assert plan.finding("gate_queue") is not None


def test_only_the_stock_reaches_the_database() -> None:
    plan = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES)
    assert plan.database.orders == 1000
    assert plan.database.confirm_seconds == pytest.approx(0.5)
    assert plan.finding("database_writes") is None

    big = make_plan(Scenario(buyers=1_000_000, stock=100_000), FIGURES)
    assert big.database.confirm_seconds == pytest.approx(50)
    assert big.finding("database_writes") is not None


def test_idempotency_lookups_are_checked_when_their_rate_is_known() -> None:
    unknown = make_plan(Scenario(buyers=1_000_000, stock=1000), FIGURES)
    assert unknown.database.idempotency_reads_per_s == 1_000  # only the 1,000 holders' presses: the gate refuses the rest
    assert unknown.finding("idempotency_reads") is None

    measured = Figures(**{**vars(FIGURES), "database_key_lookups_per_s": 100_000})
    assert make_plan(Scenario(buyers=70_000, stock=70_000), measured).finding("idempotency_reads") is None
    assert make_plan(Scenario(buyers=70_001, stock=70_001), measured).finding("idempotency_reads") is not None
    assert make_plan(Scenario(buyers=1_000_000, stock=1000), measured).finding("idempotency_reads") is None
    assert make_plan(Scenario(buyers=70_001, stock=70_001, idempotency_key_share=0), measured).finding("idempotency_reads") is None


def test_more_stock_than_buyers_never_sells_out() -> None:
    plan = make_plan(Scenario(buyers=500, stock=1000), FIGURES)
    assert plan.redis.sell_out_seconds is None
    assert plan.database.orders == 500


def test_redis_connections_at_max_scale_are_counted() -> None:
    plan = make_plan(Scenario(buyers=1_000_000, stock=1000), FIGURES)
    processes = sum(fn.annotations.max_scale * planner.WORKERS[name] for name, fn in plan.functions.items())
    assert plan.redis.connections_at_max_scale == processes * 64
    assert plan.finding("redis_connections") is not None


# --- annotation values ----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    buyers=st.integers(1, 5_000_000),
    stock=st.integers(1, 1_000_000),
    window=st.floats(0.1, 600),
    utilization=st.integers(1, 100),
)
def test_annotations_are_always_consistent(buyers: int, stock: int, window: float, utilization: int) -> None:
    plan = make_plan(Scenario(buyers=buyers, stock=stock, window_seconds=window, utilization_percent=utilization), FIGURES)
    for name, fn in plan.functions.items():
        notes = fn.annotations
        assert 1 <= notes.target_utilization_percentage <= 100
        assert notes.target >= 1
        assert 1 <= notes.min_scale <= notes.initial_scale <= notes.max_scale
        assert notes.min_scale >= planner.MIN_PODS[name]
        # The pods carry the crowd at target x utilization, in the metric the KPA reads.
        observed = fn.demand_per_s if notes.metric == "rps" else fn.in_flight
        assert fn.pods * notes.target * utilization / 100 >= observed - 1e-6
        if notes.container_concurrency is not None:
            assert notes.target <= notes.container_concurrency


def test_nonsense_scenarios_are_refused() -> None:
    for bad in (Scenario(buyers=0, stock=1), Scenario(buyers=1, stock=0), Scenario(buyers=1, stock=1, utilization_percent=101)):
        with pytest.raises(ValueError):
            make_plan(bad, FIGURES)


# --- figures -------------------------------------------------------------------------------


def test_figures_come_from_the_results_file(tmp_path: Path) -> None:
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(RESULTS))
    figures = load_figures(results, {})
    assert figures.order_crowd_rps_per_process == 1000
    assert figures.order_max_ms == 2500
    assert figures.database_orders_per_s == 2000
    assert "2026-01-01" in figures.source and "Test CPU" in figures.source


def test_a_flag_overrides_one_figure(tmp_path: Path) -> None:
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(RESULTS))
    figures = load_figures(results, {"redis.gate_admits_per_s": 50_000})
    assert figures.redis_gate_admits_per_s == 50_000
    assert figures.stock_rps_per_process == 2000
    assert "overridden" in figures.source


def test_flags_alone_are_enough(tmp_path: Path) -> None:
    flags = {spec.name: float(RESULTS[spec.section][spec.key]) for spec in planner.FIGURE_SPECS if spec.required}  # type: ignore[index]
    figures = load_figures(tmp_path / "absent.json", flags)
    assert figures.auth_bcrypt_verify_ms == 250
    assert figures.source == "flags"


def test_a_missing_figure_is_an_error_naming_it_and_its_flag(tmp_path: Path) -> None:
    partial: dict[str, Any] = json.loads(json.dumps(RESULTS))
    del partial["redis"]
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(partial))
    with pytest.raises(FiguresMissing) as error:
        load_figures(results, {})
    assert "redis.gate_admits_per_s" in str(error.value)
    assert "--gate-admits-per-s" in str(error.value)
    assert "order." not in str(error.value)


def test_the_reference_figures_are_the_default_until_make_bench_writes_newer_ones(tmp_path: Path) -> None:
    reference, latest = tmp_path / "reference.json", tmp_path / "latest.json"
    reference.write_text(json.dumps(RESULTS))
    assert planner.default_figures(reference, latest) == reference  # a fresh clone: no latest.json
    latest.write_text(json.dumps({**RESULTS, "measured_at": "2026-02-01T00:00:00+00:00"}))
    assert planner.default_figures(reference, latest) == latest  # make bench ran since
    latest.write_text(json.dumps({**RESULTS, "measured_at": "2025-12-01T00:00:00+00:00"}))
    assert planner.default_figures(reference, latest) == reference  # an older local run
    latest.write_text(json.dumps(RESULTS))
    assert planner.default_figures(reference, latest) == reference  # the same run: the reviewed copy
    latest.write_text("{not json")
    assert planner.default_figures(reference, latest) == reference


def test_the_repository_has_reference_figures_with_every_figure_dated_and_the_machine_described() -> None:
    reference = json.loads(planner.REFERENCE_FIGURES.read_text())
    assert planner.REFERENCE_FIGURES.relative_to(REPO).parts[:2] == ("bench", "reference")
    assert reference["command"] == "make bench"  # a full run, not --quick or --only
    assert reference["measured_at"] and reference["cpus"] and reference["machine"]["cpu_model"]
    figures = load_figures(planner.REFERENCE_FIGURES, {})  # FiguresMissing if a required one is absent
    assert figures.source.startswith("bench/reference/figures.json")


def test_no_results_file_and_no_flags_says_run_make_bench(tmp_path: Path) -> None:
    with pytest.raises(FiguresMissing, match="make bench"):
        load_figures(tmp_path / "absent.json", {})


@pytest.mark.parametrize("value", [0, -1, "fast", True, None])
def test_a_figure_must_be_a_positive_number(tmp_path: Path, value: object) -> None:
    broken: dict[str, Any] = json.loads(json.dumps(RESULTS))
    broken["stock"]["rps_per_process"] = value
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(broken))
    with pytest.raises(FiguresMissing, match="stock.rps_per_process"):
        load_figures(results, {})


# --- the simulation through the plan ------------------------------------------------


def test_the_planned_min_scale_has_the_pods_in_time() -> None:
    plan = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES)
    assert simulate_function(plan, "order").pods_in_time
    low = simulate_function(plan, "order", min_scale=2)
    assert not low.pods_in_time
    assert low.shortfall_pod_seconds > 0


def test_the_kpa_leaves_the_planned_pods_alone_under_the_planned_crowd() -> None:
    # A crowd the planned size for a whole minute: Knative's rule wants exactly min-scale, no panic.
    plan = make_plan(Scenario(buyers=600_000, stock=1000, window_seconds=60), FIGURES)
    for function in ("order", "stock"):
        result = simulate_function(plan, function)
        assert {row.desired for row in result.timeline} == {plan.functions[function].annotations.min_scale}, function
        assert not result.panicked and result.pods_in_time, function


# --- command line ------------------------------------------------------------------------


def test_main_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(RESULTS))
    code = planner.main(["--buyers", "10000", "--stock", "1000", "--figures", str(results), "--json", "--simulate"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scenario"]["buyers"] == 10_000
    assert report["functions"]["order"]["annotations"]["min_scale"] == 15
    assert report["functions"]["order"]["annotations"]["metric"] == "rps"
    assert report["functions"]["order"]["probes"]["liveness"]["timeout_seconds"] == 5
    assert report["functions"]["auth"]["annotations"]["container_concurrency"] == 2
    assert report["redis"]["sub_gates"] == 1
    assert report["simulation"]["pods_in_time"] is True


def test_the_plan_says_which_figures_it_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(RESULTS))
    assert planner.main(["--buyers", "10000", "--stock", "1000", "--figures", str(results), "--json"]) == 0
    out, err = capsys.readouterr()
    figures = json.loads(out)["figures"]
    assert figures["path"] == str(results)
    assert figures["measured_at"] == "2026-01-01T00:00:00+00:00"
    assert f"figures from {results}, measured 2026-01-01T00:00:00+00:00" in err
    assert "knative/*.yaml are planned from bench/reference/figures.json" in err  # another file than the manifests'

    assert planner.main(["--buyers", "10000", "--stock", "1000", "--figures", str(planner.REFERENCE_FIGURES)]) == 0
    out, err = capsys.readouterr()
    reference = json.loads(planner.REFERENCE_FIGURES.read_text())["measured_at"]
    assert err.strip() == f"flashsale plan: figures from bench/reference/figures.json, measured {reference}"


def test_main_prints_the_arithmetic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(RESULTS))
    assert planner.main(["--buyers", "100000", "--stock", "10000", "--figures", str(results)]) == 0
    out = capsys.readouterr().out
    assert "order, the crowd: 143 pods" in out  # ceil(100,000/s / (1,000 x 0.7)) = ceil(142.9)
    assert "[gate_split]" in out


def test_plan_runs_on_a_fresh_clone(tmp_path: Path) -> None:
    # What git gives: shared/ and bench/reference/, no bench/results/ (ignored). No flags.
    clone = tmp_path / "clone"
    for package in ("shared", "ops"):
        shutil.copytree(REPO / package, clone / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "bench" / "reference", clone / "bench" / "reference")
    env = {"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "ops.plan", "--buyers", "1000000", "--stock", "1000"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "figures: bench/reference/figures.json (measured " in result.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import ops.plan; print(ops.plan.__file__)"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(clone)), "the plan ran from the clone, not from this checkout"


def test_main_without_figures_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert planner.main(["--buyers", "10", "--stock", "1", "--figures", str(tmp_path / "absent.json")]) == 2
    err = capsys.readouterr().err
    assert "make bench" in err
    assert "--order-crowd-rps" in err


# --- the manifests and docs/capacity.md -------------------------------------------------


def knative_service(function: str) -> dict[str, Any]:
    with (REPO / "knative" / f"{function}.yaml").open() as f:
        service: dict[str, Any] = yaml.safe_load(f)
    return service


@pytest.mark.parametrize("function", ["auth", "stock", "order"])
def test_pod_shapes_match_the_manifests(function: str) -> None:
    spec = knative_service(function)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert float(container["resources"]["limits"]["cpu"]) == planner.CPUS[function]
    assert int(env["WORKERS"]) == planner.WORKERS[function]
    assert int(env.get("THREADS") or 1) == planner.THREADS[function]


@pytest.mark.parametrize("function", ["auth", "stock", "order"])
def test_manifests_carry_the_plan_for_ten_thousand_buyers(function: str) -> None:
    # `flashsale plan --buyers 10000 --stock 1000` on the reference figures, as a fresh clone runs it.
    # When new figures or a planner change move it: .venv/bin/python scripts/plan_manifests.py
    plan = make_plan(Scenario(buyers=10_000, stock=1000), load_figures(planner.REFERENCE_FIGURES, {}))
    fn = plan.functions[function]
    notes = fn.annotations
    template = knative_service(function)["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    prefix = "autoscaling.knative.dev/"
    assert annotations[prefix + "metric"] == notes.metric
    assert int(annotations[prefix + "target"]) == notes.target
    assert int(annotations[prefix + "target-utilization-percentage"]) == notes.target_utilization_percentage
    assert int(annotations[prefix + "min-scale"]) == notes.min_scale
    assert int(annotations[prefix + "initial-scale"]) == notes.initial_scale
    assert int(annotations[prefix + "max-scale"]) == notes.max_scale
    assert int(annotations[prefix + "target-burst-capacity"]) == notes.target_burst_capacity
    panic = annotations.get(prefix + "panic-threshold-percentage")
    assert (None if panic is None else int(panic)) == notes.panic_threshold_percentage
    assert template["spec"].get("containerConcurrency") == notes.container_concurrency
    assert template["spec"]["timeoutSeconds"] == fn.timeout_seconds
    (container,) = template["spec"]["containers"]
    for name, probe in (("readinessProbe", fn.probes.readiness), ("livenessProbe", fn.probes.liveness)):
        timing = {k: container[name].get(k) for k in ("periodSeconds", "timeoutSeconds", "failureThreshold")}
        assert timing == {
            "periodSeconds": probe.period_seconds,
            "timeoutSeconds": probe.timeout_seconds,
            "failureThreshold": probe.failure_threshold,
        }, f"{function} {name}"


def test_the_plan_command_plugs_into_a_flashsale_parser(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # What ops/cli.py does with it: one subcommand among the others, run as args.run(args, settings).
    top = argparse.ArgumentParser(prog="flashsale")
    planner.add_plan_command(top.add_subparsers(dest="command", required=True))
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(RESULTS))
    args = top.parse_args(["plan", "--buyers", "10000", "--stock", "1000", "--figures", str(results), "--json"])
    assert args.run(args, None) == 0
    assert json.loads(capsys.readouterr().out)["functions"]["order"]["pods"] == 15


def test_the_cluster_runs_the_settings_the_plan_assumes() -> None:
    with (REPO / "knative" / "config.yaml").open() as f:
        config = yaml.safe_load(f)["data"]
    deployed = planner.DEPLOYED
    assert float(config["REDIS_TIMEOUT_SECONDS"]) == deployed.redis_timeout_seconds
    assert float(config["SOLD_OUT_MEMO_SECONDS"]) == deployed.sold_out_memo_seconds
    assert float(config["STOCK_CACHE_TTL_SECONDS"]) == deployed.stock_cache_ttl_seconds
    assert int(config["TOKEN_TTL_SECONDS"]) == deployed.token_ttl_seconds


def test_a_login_window_longer_than_a_token_lives_is_flagged() -> None:
    assert make_plan(Scenario(buyers=10_000, stock=1000, login_window_seconds=900), FIGURES).finding("token_ttl") is None
    assert make_plan(Scenario(buyers=10_000, stock=1000, login_window_seconds=901), FIGURES).finding("token_ttl") is not None
