"""The capacity planner: Little's law, Knative's annotations, the Redis and database load, and where it runs out."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import plan as planner
from shared.plan import Figures, FiguresMissing, Scenario, load_figures, make_plan, pods_for, simulate_function

REPO = Path(__file__).resolve().parents[2]

# Round figures, so every expected number below can be worked out by hand.
FIGURES = Figures(
    order_losers_rps_per_process=2000,
    order_crowd_rps_per_process=1000,
    order_p99_ms=100,
    stock_rps_per_process=2000,
    stock_p99_ms=50,
    auth_logins_per_s_per_cpu=4,
    auth_bcrypt_verify_ms=250,
    redis_gate_admits_per_s=20_000,
    database_orders_per_s=2000,
)
RESULTS = {
    "measured_at": "2026-01-01T00:00:00Z",
    "command": "make bench",
    "cpus": 2,
    "bcrypt_rounds": 12,
    "order": {"losers_rps_per_process": 2000, "crowd_rps_per_process": 1000, "p99_ms": 100},
    "stock": {"rps_per_process": 2000, "p99_ms": 50},
    "auth": {"logins_per_s_per_cpu": 4, "bcrypt_verify_ms": 250},
    "redis": {"gate_admits_per_s": 20_000},
    "database": {"orders_per_s": 2000},
}


# --- Little's law and the pods ----------------------------------------------------


def test_pods_are_in_flight_requests_over_target_times_utilization() -> None:
    assert pods_for(1000, 100, 0.7) == pytest.approx(1000 / 70)
    assert pods_for(8.0, 2, 0.5) == pytest.approx(8.0)


def test_order_pods_for_ten_thousand_buyers_in_one_second() -> None:
    order = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES).functions["order"]

    assert order.demand_per_s == 10_000  # 10,000 presses in 1 s
    assert order.annotations.target == 100  # 1,000/s per pod x 0.1 s latency goal
    assert order.in_flight == pytest.approx(1000)  # 10,000/s x 0.1 s
    assert order.pods_exact == pytest.approx(1000 / 70)  # 14.29
    assert order.pods == 15
    notes = order.annotations
    assert (notes.min_scale, notes.initial_scale, notes.max_scale) == (15, 15, 30)
    assert notes.target_utilization_percentage == 70
    assert notes.target_burst_capacity == -1
    assert notes.container_concurrency is None


def test_a_longer_window_spreads_the_crowd() -> None:
    order = make_plan(Scenario(buyers=100_000, stock=1000, window_seconds=10), FIGURES).functions["order"]
    assert order.demand_per_s == 10_000
    assert order.pods == 15


def test_a_lower_latency_goal_lowers_the_target_not_the_pods() -> None:
    order = make_plan(Scenario(buyers=10_000, stock=1000, order_latency_ms=50), FIGURES).functions["order"]
    assert order.annotations.target == 50  # 1,000/s x 0.05 s
    assert order.in_flight == pytest.approx(500)
    assert order.pods == 15  # 500 / (50 x 0.7) = 14.29


def test_stock_pods_for_the_refreshers() -> None:
    small = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES).functions["stock"]
    assert small.demand_per_s == 2000  # 10,000 buyers, one read every 5 s
    assert small.annotations.target == 200  # 2,000/s x 0.1 s
    assert small.pods_exact == pytest.approx(200 / 140)  # 1.43
    assert small.pods == 2  # never fewer than 2

    large = make_plan(Scenario(buyers=100_000, stock=1000), FIGURES).functions["stock"]
    assert large.demand_per_s == 20_000
    assert large.pods_exact == pytest.approx(2000 / 140)  # 14.29
    assert large.pods == 15


def test_auth_pods_for_the_login_wave() -> None:
    auth = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES).functions["auth"]

    assert auth.demand_per_s == pytest.approx(10_000 / 300)  # 33.3 logins/s
    assert auth.per_pod_per_s == 8  # 2 CPUs x 4 logins/s
    assert auth.in_flight == pytest.approx(10_000 / 300 * 0.25)  # 8.33
    assert auth.pods_exact == pytest.approx(8.3333 / 1.4, rel=1e-4)  # 5.95
    assert auth.pods == 6
    notes = auth.annotations
    assert notes.container_concurrency == 2  # 2 workers x 1 thread
    assert notes.target == 2
    assert (notes.min_scale, notes.initial_scale, notes.max_scale) == (6, 6, 12)


def test_auth_takes_the_larger_of_concurrency_and_throughput() -> None:
    # 2 logins/s per CPU but 250 ms per verify: the other half of each login is not bcrypt.
    slow = Figures(**{**vars(FIGURES), "auth_logins_per_s_per_cpu": 2})
    auth = make_plan(Scenario(buyers=10_000, stock=1000), slow).functions["auth"]
    assert auth.pods_exact == pytest.approx((10_000 / 300) / (2 * 2 * 0.7))  # 11.9
    assert auth.pods == 12


def test_the_arithmetic_is_shown() -> None:
    order = make_plan(Scenario(buyers=10_000, stock=1000), FIGURES).functions["order"]
    text = "\n".join(order.arithmetic)
    assert "10,000/s x 0.100 s = 1,000" in text
    assert "1,000 / (100 x 0.70) = 14.29" in text


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
        # The pods carry the crowd at target x utilization.
        assert fn.pods * notes.target * utilization / 100 >= fn.in_flight - 1e-6
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
    assert figures.database_orders_per_s == 2000
    assert "2026-01-01" in figures.source


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


def test_figures_can_come_from_a_markdown_block(tmp_path: Path) -> None:
    doc = tmp_path / "capacity.md"
    doc.write_text("# figures\n\n<!-- figures:start -->\n```json\n" + json.dumps(RESULTS) + "\n```\n<!-- figures:end -->\n")
    assert load_figures(doc, {}).order_losers_rps_per_process == 2000
    doc.write_text("# no figures here\n")
    with pytest.raises(FiguresMissing, match="figures:start"):
        load_figures(doc, {})


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


# --- command line ------------------------------------------------------------------------


def test_main_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(RESULTS))
    code = planner.main(["--buyers", "10000", "--stock", "1000", "--figures", str(results), "--json", "--simulate"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scenario"]["buyers"] == 10_000
    assert report["functions"]["order"]["annotations"]["min_scale"] == 15
    assert report["functions"]["auth"]["annotations"]["container_concurrency"] == 2
    assert report["redis"]["sub_gates"] == 1
    assert report["simulation"]["pods_in_time"] is True


def test_main_prints_the_arithmetic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(RESULTS))
    assert planner.main(["--buyers", "100000", "--stock", "10000", "--figures", str(results)]) == 0
    out = capsys.readouterr().out
    assert "order, the crowd: 143 pods" in out  # 100,000/s x 0.1 s / (100 x 0.7) = 142.9
    assert "[gate_split]" in out


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
    assert spec["timeoutSeconds"] == planner.TIMEOUT_SECONDS[function]


@pytest.mark.parametrize("function", ["auth", "stock", "order"])
def test_manifests_carry_the_plan_for_ten_thousand_buyers(function: str) -> None:
    # The figures docs/capacity.md records: measured on the development machine until `make bench`
    # replaces them; then re-plan, and update the manifests and that block together.
    plan = make_plan(Scenario(buyers=10_000, stock=1000), load_figures(REPO / "docs" / "capacity.md", {}))
    notes = plan.functions[function].annotations
    template = knative_service(function)["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    prefix = "autoscaling.knative.dev/"
    assert int(annotations[prefix + "target"]) == notes.target
    assert int(annotations[prefix + "target-utilization-percentage"]) == notes.target_utilization_percentage
    assert int(annotations[prefix + "min-scale"]) == notes.min_scale
    assert int(annotations[prefix + "initial-scale"]) == notes.initial_scale
    assert int(annotations[prefix + "max-scale"]) == notes.max_scale
    assert int(annotations[prefix + "target-burst-capacity"]) == notes.target_burst_capacity
    assert template["spec"].get("containerConcurrency") == notes.container_concurrency


def test_the_plan_command_plugs_into_a_flashsale_parser(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # What shared/cli.py does with it: one subcommand among the others, run as args.run(args, settings).
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
