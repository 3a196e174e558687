"""The output and the command line: the plan as text or JSON, ``flashsale plan`` and ``python -m ops.plan``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from ops.autoscale_sim import SimResult, render
from ops.plan.arithmetic import _n, make_plan
from ops.plan.figures import FIGURE_SPECS, REFERENCE_FIGURES, ROOT, Figures, FiguresMissing, default_figures, load_figures
from ops.plan.model import DEPLOYED, MONGO_POOL_PER_PROCESS, REDIS_MAXCLIENTS, Annotations, Plan, Probes, Scenario
from ops.plan.simulate import simulate_function


def _service_lines(title: str, pods: int, arithmetic: tuple[str, ...], annotations: Annotations, probes: Probes, timeout: int) -> list[str]:
    """One Knative Service of the plan, as text: its pods, how they were worked out, and what its manifest carries."""
    return [
        f"{title}: {pods:,} pods",
        *(f"  {line}" for line in arithmetic),
        f"  annotations: {_annotation_text(annotations)}",
        f"  probes: {_probe_text(probes)}",
        f"  timeoutSeconds: {timeout} (also the pod's termination grace)",
        "",
    ]


def render_plan(plan: Plan) -> str:
    s = plan.scenario
    lines = [
        f"flashsale plan: {s.buyers:,} buyers, {s.stock:,} units, Buy pressed within {_n(s.window_seconds)} s",
        f"figures: {plan.figures.source}",
        "",
    ]
    titles = {
        "auth": "auth, the login wave before the sale",
        "stock": "stock, the refreshers",
        "order": "order, the crowd",
    }
    for name in ("auth", "stock", "order"):
        fn = plan.functions[name]
        lines += _service_lines(titles[name], fn.pods, fn.arithmetic, fn.annotations, fn.probes, fn.timeout_seconds)
    events = plan.events
    lines += _service_lines(
        "events, the order.placed burst", events.pods, events.arithmetic, events.annotations, events.probes, events.timeout_seconds
    )
    gateway = plan.gateway
    lines.append(f"ingress gateway: {gateway.replicas} replicas")
    lines += [f"  {line}" for line in gateway.arithmetic]
    lines.append("")
    auth = plan.functions["auth"]
    lines += [
        f"activator: in the path for auth only (target-burst-capacity -1), holding the logins past its pods'"
        f" {auth.annotations.container_concurrency} slots each; {auth.in_flight:,.1f} logins in flight at the planned load",
        "",
    ]
    r, d = plan.redis, plan.database
    sell_out = f"sells out {r.sell_out_seconds:,.3f} s after the opening" if r.sell_out_seconds is not None else "never sells out"
    lines += [
        "redis",
        f"  gate: {r.gate_peak_ops_per_s:,.0f} calls/s until the sale {sell_out}"
        f" = {r.gate_busy_percent:,.0f} % of one key's {r.gate_capacity_per_s:,.0f}/s",
        f"  gate queue before sell-out: {r.gate_queue_seconds:,.3f} s (Redis timeout {DEPLOYED.redis_timeout_seconds:g} s)",
        f"  after sell-out: {r.gate_after_sell_out_ops_per_s:,.0f} gate calls/s (one per order worker per"
        f" {DEPLOYED.sold_out_memo_seconds:g} s sold-out memo)",
        f"  login rate limits: {r.login_commands_per_s:,.0f} commands/s; stock cache: {r.stock_cache_reads_per_s:,.0f} reads/s",
        f"  sub-gates needed: {r.sub_gates}",
        f"  connections at max-scale: up to {r.connections_at_max_scale:,} (maxclients {REDIS_MAXCLIENTS:,})",
        "",
        "database",
        f"  orders: {d.orders:,} (only about the stock gets past the gate)"
        f" / {d.orders_capacity_per_s:,.0f} orders/s = {d.confirm_seconds:,.2f} s to confirm them all",
        f"  reads: {d.idempotency_reads_per_s:,.0f} Idempotency-Key lookups/s during the crowd"
        + (
            f" ({d.idempotency_reads_per_s / d.key_lookups_capacity_per_s:.0%} of {d.key_lookups_capacity_per_s:,.0f}/s)"
            if d.key_lookups_capacity_per_s
            else " (lookup rate not measured)"
        )
        + f", {d.sale_reads_per_s:,.0f} sale reads/s",
        f"  connections at max-scale: up to {d.connections_at_max_scale:,} (pymongo's pool of {MONGO_POOL_PER_PROCESS} per process)",
        "",
        "where it runs out",
    ]
    lines += [f"  [{f.code}] {f.message}" for f in plan.findings] or ["  nothing, at this crowd"]
    return "\n".join(lines)


def _annotation_text(notes: Annotations) -> str:
    parts = [
        f"metric {notes.metric}",
        f"target {notes.target}",
        f"target-utilization-percentage {notes.target_utilization_percentage}",
        f"min-scale {notes.min_scale}",
        f"initial-scale {notes.initial_scale}",
        f"max-scale {notes.max_scale}",
        f"target-burst-capacity {notes.target_burst_capacity}",
    ]
    if notes.panic_threshold_percentage is not None:
        parts.append(f"panic-threshold-percentage {notes.panic_threshold_percentage}")
    if notes.container_concurrency is not None:
        parts.append(f"containerConcurrency {notes.container_concurrency}")
    return ", ".join(parts)


def _probe_text(probes: Probes) -> str:
    return ", ".join(
        f"{name} period {probe.period_seconds} s timeout {probe.timeout_seconds} s failures {probe.failure_threshold}"
        for name, probe in (("readiness", probes.readiness), ("liveness", probes.liveness))
    )


# --- command line -------------------------------------------------------------

DESCRIPTION = "Pods, Knative annotations, probes and Redis and database load for a crowd, from measured figures (docs/capacity.md)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--buyers", type=int, required=True, help="buyers in the crowd")
    parser.add_argument("--stock", type=int, required=True, help="units on sale")
    parser.add_argument("--window-seconds", type=float, default=1.0, help="the crowd presses Buy within this many seconds (1)")
    parser.add_argument("--presses-per-buyer", type=float, default=1.0, help="Buy presses per buyer (1)")
    parser.add_argument("--login-window-seconds", type=float, default=300.0, help="buyers log in during this long before the sale (300)")
    parser.add_argument("--refresh-seconds", type=float, default=5.0, help="a waiting buyer reads the stock this often (5)")
    parser.add_argument("--utilization", type=int, default=70, help="target-utilization-percentage (70)")
    parser.add_argument("--idempotency-key-share", type=float, default=1.0, help="share of presses sending an Idempotency-Key, 0-1 (1)")
    parser.add_argument(
        "--figures",
        type=Path,
        help="a benchmark figures file (default: the newer of bench/results/latest.json, which make bench writes,"
        " and bench/reference/figures.json, which the repository keeps)",
    )
    measured = parser.add_argument_group("figures (each overrides the figures file)")
    for spec in FIGURE_SPECS:
        measured.add_argument(spec.flag, type=float, dest=spec.attribute, metavar="N", help=f"{spec.name}: {spec.meaning}")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument(
        "--simulate",
        nargs="?",
        const="order",
        choices=("order", "stock", "auth"),
        help="also run the autoscaler simulation for a function (order)",
    )
    parser.add_argument("--sim-min-scale", type=int, help="simulate with this min-scale instead of the plan's")
    parser.add_argument("--sim-crowd-factor", type=float, default=1.0, help="simulate a crowd this many times the planned one (1)")
    parser.add_argument(
        "--pod-start-seconds",
        type=float,
        nargs=2,
        default=(5.0, 15.0),
        metavar=("FASTEST", "SLOWEST"),
        help="a new pod is ready after (5 15)",
    )
    parser.add_argument("--sim-seconds", type=float, help="how long to simulate (window + 20 s)")


def run(args: argparse.Namespace) -> int:
    overrides = {spec.name: getattr(args, spec.attribute) for spec in FIGURE_SPECS if getattr(args, spec.attribute) is not None}
    scenario = Scenario(
        buyers=args.buyers,
        stock=args.stock,
        window_seconds=args.window_seconds,
        presses_per_buyer=args.presses_per_buyer,
        login_window_seconds=args.login_window_seconds,
        refresh_seconds=args.refresh_seconds,
        utilization_percent=args.utilization,
        idempotency_key_share=args.idempotency_key_share,
    )
    try:
        figures = load_figures(args.figures or default_figures(), overrides)
        plan = make_plan(scenario, figures)
    except (FiguresMissing, ValueError) as exc:
        print(f"flashsale plan: {exc}", file=sys.stderr)
        return 2
    # Which figures decided the plan, on stderr whatever the output: knative/*.yaml are planned from
    # bench/reference/figures.json, and a newer make bench on this machine gives another plan.
    print(f"flashsale plan: {figures_note(figures)}", file=sys.stderr)
    sim: SimResult | None = None
    if args.simulate:
        fastest, slowest = args.pod_start_seconds
        sim = simulate_function(
            plan,
            args.simulate,
            min_scale=args.sim_min_scale,
            start_seconds=(fastest, slowest),
            seconds=args.sim_seconds,
            crowd_factor=args.sim_crowd_factor,
        )
    if args.json:
        report = plan.to_dict()
        if sim is not None:
            report["simulation"] = {"function": args.simulate, **asdict(sim), "pods_in_time": sim.pods_in_time}
        print(json.dumps(report, indent=2))
    else:
        print(render_plan(plan))
        if sim is not None:
            low = plan.functions[args.simulate].annotations.min_scale if args.sim_min_scale is None else args.sim_min_scale
            print(f"\nautoscaler simulation: {args.simulate}, min-scale {low}, pods ready {_n(args.pod_start_seconds[0])}"
                  f"-{_n(args.pod_start_seconds[1])} s after they are asked for")  # fmt: skip
            print(render(sim))
    return 0


def figures_note(figures: Figures) -> str:
    if figures.path is None:
        return "figures from flags alone"
    note = f"figures from {figures.path}, measured {figures.measured_at or 'at an unknown time'}"
    if (ROOT / figures.path).resolve() != REFERENCE_FIGURES.resolve():
        note += f" (knative/*.yaml are planned from {REFERENCE_FIGURES.relative_to(ROOT)}; scripts/plan_manifests.py --check compares)"
    return note


def add_plan_command(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``flashsale plan``: called by ops.cli's parser."""
    command = subcommands.add_parser("plan", help=DESCRIPTION, description=DESCRIPTION)
    add_arguments(command)
    command.set_defaults(run=lambda args, _settings: run(args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashsale plan", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))
