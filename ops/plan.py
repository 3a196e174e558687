"""``flashsale plan``: pods, Knative annotations, probes and store load for a crowd, from measured figures.

    python -m ops.plan --buyers 10000 --stock 1000 [--window-seconds 1] [--json] [--simulate]

The figures are per process (one gunicorn worker) as ``make bench`` measures them.
By default they come from the newer of two files: ``bench/reference/figures.json``
(the last full ``make bench`` published in the repository, dated, with its machine)
and ``bench/results/latest.json`` (what ``make bench`` wrote on this machine, kept
out of git). A flag overrides any one figure, and a figure neither gives is an
error, never a guess. Everything here is arithmetic on those figures and on
Knative Serving's own rules, shown line by line so a reader can check it
(docs/capacity.md cites the code each rule comes from):

- The KPA wants ceil(observed metric / (target x utilization)) pods
  (``pkg/autoscaler/scaling/autoscaler.go``), where ``observed`` is what it
  measures, never a goal. order and stock scale on ``rps``: the requests that
  arrive, against the rate a pod was measured to answer. auth scales on
  ``concurrency``: the logins in flight, each holding a CPU for one measured
  bcrypt verify.
- The crowd cannot wait for pods: a pod takes seconds to start and the sale's
  crowd lasts seconds, so ``min-scale`` and ``initial-scale`` carry the whole
  crowd; ``max-scale`` leaves room for a crowd twice the plan.
- Probes time out only past the slowest answer the benchmark saw, so a pod that
  is busy is never taken for a broken one.
- Only about ``stock`` buyers reach the database; every Buy pressed before the
  sale sells out reaches the Redis gate, one key on one Redis thread. Past what
  that key answers, the gate has to be split (see :func:`gate_split_advice`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ops.autoscale_sim import Autoscaler, Crowd, Pods, SimResult, render, simulate
from shared.ordering import SALE_CACHE_SECONDS
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_FIGURES = ROOT / "bench" / "reference" / "figures.json"  # in git: a fresh clone plans from it
LATEST_FIGURES = ROOT / "bench" / "results" / "latest.json"  # written by a full `make bench`, ignored by git

# Pod shapes as knative/*.yaml deploy them (a unit test keeps the two in step):
# auth hashes one password per CPU; stock and order run one gevent worker on one CPU.
CPUS = {"auth": 2, "stock": 1, "order": 1}
WORKERS = {"auth": 1, "stock": 1, "order": 1}
THREADS = {"auth": 2, "stock": 1, "order": 1}  # auth: one worker, two hashing threads (python -m bench.auth_layout)
TIMEOUT_SECONDS = {"auth": 30, "stock": 10, "order": 30}
# How each function scales, and why (docs/capacity.md): order and stock answer from memory and
# Redis in milliseconds, so the requests they hold at the planned load are a fraction of one per
# pod, too few to steer on; the requests that arrive are what they size by. A login holds a CPU
# for one bcrypt verify, a measured time, so its in-flight count is the load itself.
METRIC = {"auth": "concurrency", "stock": "rps", "order": "rps"}
# Never fewer: auth keeps one pod warm; stock and order two, so one restarting pod
# does not leave the sale on a single one.
MIN_PODS = {"auth": 1, "stock": 2, "order": 2}
MAX_SCALE_HEADROOM = 2.0  # max-scale leaves room for a crowd twice the planned one
# The KPA panics when the panic window's pods reach this share of the ready ones (200 % unless set;
# Knative accepts 110-1000). Scaling on rps, a backlog does not show, so the default would wait for
# arrivals twice what the ready pods are sized for; the plan panics as soon as the last 6 s brought
# more than the ready pods answer at their measured rate: 100 / utilization.
PANIC_THRESHOLD_BOUNDS = (110, 1000)
# The activator (pkg/activator/net/throttler.go) queues a request only when the revision has a
# containerConcurrency: with 0 it forwards at once to the better of two random pods. So it is kept
# in the path (-1) only for auth, whose limit of 2 it enforces by handing a login to a pod with a
# free hashing slot; order and stock (0) get their requests from the ingress straight to the pods.
TARGET_BURST_CAPACITY = {"auth": -1, "stock": 0, "order": 0}
# Probes: a new pod is probed every second, so it takes traffic within a second of answering
# /readyz (Knative's own 50 ms probing gives each try 100 ms, which a busy worker would fail);
# the kubelet's liveness probe keeps its default period. Three failures in a row, each slower
# than the benchmark's slowest answer, mark a pod unready or restart it.
READINESS_PERIOD_SECONDS = 1
LIVENESS_PERIOD_SECONDS = 10
PROBE_FAILURE_THRESHOLD = 3

# The settings the pods run with: the code's defaults, which knative/config.yaml keeps
# (a unit test checks): the Redis timeout past which a gate answer trips the breaker, the
# sold-out memo, the stock cache's lifetime and the token's.
DEPLOYED = Settings.from_env({})
REDIS_POOL_PER_PROCESS = 64  # shared/redisconn.py: BlockingConnectionPool(max_connections=64)
REDIS_MAXCLIENTS = 10_000  # redis-server's default maxclients
MONGO_POOL_PER_PROCESS = 100  # pymongo's default maxPoolSize
LOGIN_RATE_LIMIT_COMMANDS = 4  # INCR + EXPIRE for the account and the address, one round trip
GATE_HEADROOM = 0.7  # keep the gate's Redis thread at most 70 % busy, as the pods are kept at 70 %


class FiguresMissing(Exception):
    """A figure the plan needs is in neither the figures file nor the flags."""


@dataclass(frozen=True)
class FigureSpec:
    section: str
    key: str
    flag: str
    meaning: str
    required: bool = True  # make bench measures it; an optional one only adds a check

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def attribute(self) -> str:
        return f"{self.section}_{self.key}"


FIGURE_SPECS = (
    FigureSpec("order", "losers_rps_per_process", "--order-losers-rps", "409 sold_out answers per second, one order process"),
    FigureSpec("order", "crowd_rps_per_process", "--order-crowd-rps", "POST /orders per second in the crowd, one order process"),
    FigureSpec("order", "p99_ms", "--order-p99-ms", "p99 latency of POST /orders in the benchmark's crowd (ms)"),
    FigureSpec("order", "max_ms", "--order-max-ms", "slowest POST /orders answer in the benchmark (ms)"),
    FigureSpec("stock", "rps_per_process", "--stock-rps", "GET /stock per second, one stock process"),
    FigureSpec("stock", "p99_ms", "--stock-p99-ms", "p99 latency of GET /stock in the benchmark (ms)"),
    FigureSpec("stock", "max_ms", "--stock-max-ms", "slowest GET /stock answer in the benchmark (ms)"),
    FigureSpec("auth", "logins_per_s_per_cpu", "--auth-logins-per-cpu", "logins per second per CPU (bcrypt-bound)"),
    FigureSpec("auth", "bcrypt_verify_ms", "--bcrypt-verify-ms", "one bcrypt verify at the deployed cost (ms)"),
    FigureSpec("auth", "max_ms", "--auth-max-ms", "slowest POST /login answer in the benchmark (ms)"),
    FigureSpec("redis", "gate_admits_per_s", "--gate-admits-per-s", "gate Lua calls per second one Redis key answers"),
    FigureSpec("database", "orders_per_s", "--db-orders-per-s", "orders per second the database confirms"),
    FigureSpec("database", "key_lookups_per_s", "--db-key-lookups-per-s", "Idempotency-Key lookups per second the database answers", False),
)


@dataclass(frozen=True)
class Figures:
    order_losers_rps_per_process: float
    order_crowd_rps_per_process: float
    order_p99_ms: float
    order_max_ms: float
    stock_rps_per_process: float
    stock_p99_ms: float
    stock_max_ms: float
    auth_logins_per_s_per_cpu: float
    auth_bcrypt_verify_ms: float
    auth_max_ms: float
    redis_gate_admits_per_s: float
    database_orders_per_s: float
    database_key_lookups_per_s: float | None = None
    source: str = "flags"


def default_figures(reference: Path | None = None, latest: Path | None = None) -> Path:
    """The newer of the reference figures (in git) and the last ``make bench`` on this machine.

    Newer by the ``measured_at`` each file records; on a tie, or when ``latest``
    is missing or unreadable, the reference, which someone reviewed.
    """
    reference = reference or REFERENCE_FIGURES
    latest = latest or LATEST_FIGURES
    latest_at = _measured_at(latest)
    reference_at = _measured_at(reference)
    if latest_at is not None and (reference_at is None or latest_at > reference_at):
        return latest
    return reference


def _measured_at(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    when = data.get("measured_at") if isinstance(data, dict) else None
    # ISO 8601 in UTC, as make bench writes it, so the strings sort as the times do.
    return when if isinstance(when, str) else None


def load_figures(path: Path | None, overrides: dict[str, float]) -> Figures:
    """Figures from a benchmark figures file, each replaced by its flag when given.

    ``overrides`` maps a figure's dotted name (``order.p99_ms``) to its value.
    Raises FiguresMissing naming every figure neither source gives.
    """
    measured: dict[str, Any] = {}
    source = "flags"
    problem = ""
    if path is not None and path.exists():
        try:
            measured = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FiguresMissing(f"cannot read {path}: {exc}") from exc
        if not isinstance(measured, dict):
            raise FiguresMissing(f"{path} is not a JSON object")
        source = f"{_shown(path)} ({_provenance(measured)})"
    elif path is not None:
        problem = f"{path} does not exist (run `make bench`)"

    values: dict[str, Any] = {}
    missing: list[FigureSpec] = []
    for spec in FIGURE_SPECS:
        value: Any = overrides.get(spec.name)
        if value is None:
            section = measured.get(spec.section)
            value = section.get(spec.key) if isinstance(section, dict) else None
        if value is None:
            if spec.required:
                missing.append(spec)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise FiguresMissing(f"figure {spec.name} must be a positive number, got {value!r}")
        values[spec.attribute] = float(value)
    if missing:
        lines = [f"  {spec.name}: {spec.meaning} (or {spec.flag})" for spec in missing]
        head = (problem + "; no flag gives") if problem else f"{_shown(path) if path else 'the flags'} give no figure for"
        raise FiguresMissing(f"{head}:\n" + "\n".join(lines))
    if overrides and source != "flags":
        source += f", overridden by flags: {', '.join(sorted(overrides))}"
    return Figures(**values, source=source)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _provenance(measured: dict[str, Any]) -> str:
    machine = measured.get("machine")
    cpu_model = machine.get("cpu_model") if isinstance(machine, dict) else None
    cpu = f" ({cpu_model})" if cpu_model else ""
    return (
        f"measured {measured.get('measured_at', 'at an unknown time')} by `{measured.get('command', '?')}`"
        f" on {measured.get('cpus', '?')} CPUs{cpu}, bcrypt cost {measured.get('bcrypt_rounds', '?')}"
    )


@dataclass(frozen=True)
class Scenario:
    buyers: int
    stock: int
    window_seconds: float = 1.0  # the crowd presses Buy within this many seconds of the opening
    presses_per_buyer: float = 1.0
    login_window_seconds: float = 300.0  # buyers log in during the last minutes before the sale
    refresh_seconds: float = 5.0  # a waiting buyer reads the stock this often
    utilization_percent: int = 70
    idempotency_key_share: float = 1.0  # share of presses with an Idempotency-Key (one database read each)

    def validate(self) -> None:
        positive = {
            "buyers": self.buyers,
            "window_seconds": self.window_seconds,
            "presses_per_buyer": self.presses_per_buyer,
            "login_window_seconds": self.login_window_seconds,
            "refresh_seconds": self.refresh_seconds,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.stock < 1:
            raise ValueError(f"stock must be at least 1, got {self.stock}")
        if not 1 <= self.utilization_percent <= 100:
            raise ValueError(f"utilization must be within 1-100, got {self.utilization_percent}")
        if not 0 <= self.idempotency_key_share <= 1:
            raise ValueError(f"idempotency key share must be within 0-1, got {self.idempotency_key_share}")


@dataclass(frozen=True)
class Annotations:
    metric: str  # autoscaling.knative.dev/metric: rps or concurrency
    target: int  # requests per second a pod (rps) or requests in flight in a pod (concurrency)
    target_utilization_percentage: int
    min_scale: int
    initial_scale: int
    max_scale: int
    target_burst_capacity: int
    container_concurrency: int | None  # None: no hard limit (gevent holds waiting requests cheaply)
    panic_threshold_percentage: int | None = None  # None: Knative's default (200)


@dataclass(frozen=True)
class Probe:
    period_seconds: int
    timeout_seconds: int
    failure_threshold: int


@dataclass(frozen=True)
class Probes:
    readiness: Probe  # GET /readyz, run by queue-proxy; a failing pod gets no new requests
    liveness: Probe  # GET /healthz, run by the kubelet; a failing pod is restarted


@dataclass(frozen=True)
class FunctionPlan:
    function: str
    demand_per_s: float  # arrivals the function must answer, per second
    per_pod_per_s: float  # what one pod answers per second (measured)
    seconds_inside: float  # time a request that does not queue spends in a pod (measured, not a goal)
    in_flight: float  # demand x seconds_inside: what the pods hold at the planned load (Little)
    pods_exact: float  # the KPA's observed metric / (target x utilization), before its ceil
    pods: int
    annotations: Annotations
    probes: Probes
    arithmetic: tuple[str, ...]


@dataclass(frozen=True)
class RedisPlan:
    gate_peak_ops_per_s: float  # every Buy pressed before the sale sells out runs the gate script
    gate_capacity_per_s: float
    gate_busy_percent: float
    sell_out_seconds: float | None  # None: there is more stock than buyers
    gate_queue_seconds: float  # longest wait at the gate's Redis thread
    gate_after_sell_out_ops_per_s: float
    login_commands_per_s: float
    stock_cache_reads_per_s: float
    sub_gates: int  # 1: one key is enough
    connections_at_max_scale: int


@dataclass(frozen=True)
class DatabasePlan:
    orders: int
    orders_capacity_per_s: float
    key_lookups_capacity_per_s: float | None
    confirm_seconds: float  # how long the database takes to confirm every order of the sale
    idempotency_reads_per_s: float
    sale_reads_per_s: float
    connections_at_max_scale: int


@dataclass(frozen=True)
class Finding:
    code: str
    message: str


@dataclass(frozen=True)
class Plan:
    scenario: Scenario
    figures: Figures
    functions: dict[str, FunctionPlan]
    redis: RedisPlan
    database: DatabasePlan
    findings: tuple[Finding, ...] = field(default=())

    def finding(self, code: str) -> Finding | None:
        return next((f for f in self.findings if f.code == code), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the arithmetic ---------------------------------------------------------


def pods_for(observed: float, target: float, utilization: float) -> float:
    """Knative's rule before its ceil: desired pods = observed metric / (target x utilization).

    ``pkg/autoscaler/scaling/autoscaler.go``: ``dspc := math.Ceil(observedStableValue / spec.TargetValue)``,
    where ``TargetValue`` is the target times the utilization (``pkg/reconciler/autoscaling/resources/target.go``).
    """
    return observed / (target * utilization)


def scale_bounds(function: str, pods_exact: float) -> tuple[int, int, int, int]:
    """(pods, min-scale, initial-scale, max-scale): the crowd's pods are there before it arrives."""
    pods = max(MIN_PODS[function], math.ceil(pods_exact - 1e-9))
    return pods, pods, pods, max(pods + 1, math.ceil(pods * MAX_SCALE_HEADROOM))


def panic_threshold_for(utilization_percent: int) -> int:
    """The panic threshold at which a panic-window load reaches what the ready pods answer (100 % of their rate)."""
    low, high = PANIC_THRESHOLD_BOUNDS
    return min(high, max(low, math.floor(100 * 100 / utilization_percent)))


def probes_for(worst_ms: float) -> Probes:
    """A probe answered as slowly as the slowest answer the benchmark saw still passes."""
    timeout = max(1, math.ceil(worst_ms / 1000 - 1e-9))
    return Probes(
        readiness=Probe(READINESS_PERIOD_SECONDS, timeout, PROBE_FAILURE_THRESHOLD),
        liveness=Probe(LIVENESS_PERIOD_SECONDS, timeout, PROBE_FAILURE_THRESHOLD),
    )


def plan_auth(scenario: Scenario, figures: Figures) -> FunctionPlan:
    u = scenario.utilization_percent / 100
    logins = scenario.buyers / scenario.login_window_seconds
    per_pod = figures.auth_logins_per_s_per_cpu * CPUS["auth"]
    verify = figures.auth_bcrypt_verify_ms / 1000
    concurrency = WORKERS["auth"] * THREADS["auth"]
    in_flight = logins * verify
    by_concurrency = pods_for(in_flight, concurrency, u)
    by_throughput = logins / (per_pod * u)
    exact = max(by_concurrency, by_throughput)
    pods, low, initial, high = scale_bounds("auth", exact)
    notes = Annotations(
        METRIC["auth"], concurrency, scenario.utilization_percent, low, initial, high, TARGET_BURST_CAPACITY["auth"], concurrency
    )
    probes = probes_for(figures.auth_max_ms)
    return FunctionPlan(
        function="auth",
        demand_per_s=logins,
        per_pod_per_s=per_pod,
        seconds_inside=verify,
        in_flight=in_flight,
        pods_exact=exact,
        pods=pods,
        annotations=notes,
        probes=probes,
        arithmetic=(
            f"logins: {scenario.buyers:,} buyers / {_n(scenario.login_window_seconds)} s login window = {logins:,.1f}/s",
            f"containerConcurrency = target = {WORKERS['auth']} worker x {THREADS['auth']} hashing threads = {concurrency}"
            " (one bcrypt hash per CPU; a third would only slow the other two)",
            f"metric concurrency: a login holds a CPU for one measured verify, so in flight (Little) = {logins:,.1f}/s"
            f" x {verify:.3f} s = {in_flight:,.2f}",
            f"KPA: pods = ceil(in flight / (target x utilization)) = ceil({in_flight:,.2f} / ({concurrency} x {u:.2f}))"
            f" = ceil({by_concurrency:,.2f})",
            f"check by throughput: {logins:,.1f}/s / ({CPUS['auth']} CPUs x {figures.auth_logins_per_s_per_cpu:g} logins/s per CPU"
            f" x {u:.2f}) = {by_throughput:,.2f}; the larger counts",
            *_bounds_lines("auth", exact, pods, high),
            *_probe_lines(figures.auth_max_ms, probes),
        ),
    )


def plan_order(scenario: Scenario, figures: Figures) -> FunctionPlan:
    presses = scenario.buyers * scenario.presses_per_buyer
    rate = presses / scenario.window_seconds
    per_process = figures.order_crowd_rps_per_process
    losers_per_pod = figures.order_losers_rps_per_process * WORKERS["order"]
    return _plan_by_rate(
        "order",
        scenario,
        rate,
        per_process,
        figures.order_max_ms,
        demand_line=f"crowd: {scenario.buyers:,} buyers x {_n(scenario.presses_per_buyer)} press / {_n(scenario.window_seconds)} s"
        f" = {rate:,.0f}/s",
        rate_line=f"{WORKERS['order']} worker x {per_process:,.0f}/s in the crowd ({losers_per_pod:,.0f}/s once it remembers sold out)",
        tail=f"the benchmark's crowd p99 was {figures.order_p99_ms:,.0f} ms",
    )


def plan_stock(scenario: Scenario, figures: Figures) -> FunctionPlan:
    rate = scenario.buyers / scenario.refresh_seconds
    per_process = figures.stock_rps_per_process
    return _plan_by_rate(
        "stock",
        scenario,
        rate,
        per_process,
        figures.stock_max_ms,
        demand_line=f"refreshers: {scenario.buyers:,} buyers / one read every {_n(scenario.refresh_seconds)} s = {rate:,.0f}/s",
        rate_line=f"{WORKERS['stock']} worker x {per_process:,.0f}/s",
        tail=f"the benchmark's p99 was {figures.stock_p99_ms:,.0f} ms",
    )


def _plan_by_rate(
    function: str, scenario: Scenario, rate: float, per_process: float, worst_ms: float, *, demand_line: str, rate_line: str, tail: str
) -> FunctionPlan:
    """A function the KPA scales on requests per second: target = what one pod was measured to answer."""
    u = scenario.utilization_percent / 100
    per_pod = per_process * WORKERS[function]
    target = max(1, math.floor(per_pod))
    exact = pods_for(rate, target, u)
    pods, low, initial, high = scale_bounds(function, exact)
    # A worker answers per_process a second, so each answer takes 1/per_process of its time: about what
    # a request that does not queue spends inside, and so, by Little's law, what a pod holds per request/s.
    service = 1 / per_process
    in_flight = rate * service
    panic = panic_threshold_for(scenario.utilization_percent)
    notes = Annotations(
        METRIC[function], target, scenario.utilization_percent, low, initial, high, TARGET_BURST_CAPACITY[function], None, panic
    )
    probes = probes_for(worst_ms)
    return FunctionPlan(
        function=function,
        demand_per_s=rate,
        per_pod_per_s=per_pod,
        seconds_inside=service,
        in_flight=in_flight,
        pods_exact=exact,
        pods=pods,
        annotations=notes,
        probes=probes,
        arithmetic=(
            demand_line,
            f"metric rps, target = what one pod answers: {rate_line} = {per_pod:,.1f} -> {target:,}",
            f"KPA: pods = ceil(requests/s / (target x utilization)) = ceil({rate:,.0f} / ({target:,} x {u:.2f})) = ceil({exact:,.2f})",
            *_bounds_lines(function, exact, pods, high),
            f"panic-threshold-percentage {panic} = 100 / {u:.2f}, floored: the KPA panics once the last 6 s brought more than"
            f" the ready pods answer; Knative's default 200 waits for {2 * u:g} times that",
            f"{pods:,} pods answer {pods * per_pod:,.0f}/s: the crowd keeps them {rate / (pods * per_pod):.0%} busy",
            f"in flight at this load (Little): {rate:,.0f}/s x {service * 1000:,.1f} ms a request takes its worker"
            f" = {in_flight:,.1f}, {in_flight / pods:,.2f} a pod: too few to steer on, so not concurrency",
            f"no containerConcurrency, target-burst-capacity {TARGET_BURST_CAPACITY[function]}: the ingress sends"
            " straight to the pods (the activator would forward at once anyway)",
            *_probe_lines(worst_ms, probes),
            tail,
        ),
    )


def _bounds_lines(function: str, exact: float, pods: int, high: int) -> tuple[str, ...]:
    floor_note = f" (at least {MIN_PODS[function]})" if pods == MIN_PODS[function] and exact < MIN_PODS[function] else ""
    return (
        f"min-scale = initial-scale = {pods:,}{floor_note}: the pods are there before the crowd",
        f"max-scale = {MAX_SCALE_HEADROOM:g} x {pods:,} = {high:,}: room for a crowd twice the plan",
    )


def _probe_lines(worst_ms: float, probes: Probes) -> tuple[str, ...]:
    r, live = probes.readiness, probes.liveness
    return (
        f"probes: timeout {r.timeout_seconds} s = the slowest answer in the benchmark ({worst_ms:,.0f} ms), rounded up;"
        f" readiness every {r.period_seconds} s, liveness every {live.period_seconds} s, {r.failure_threshold} failures in a row",
    )


def plan_redis(scenario: Scenario, figures: Figures, functions: dict[str, FunctionPlan]) -> RedisPlan:
    order, stock, auth = functions["order"], functions["stock"], functions["auth"]
    rate = order.demand_per_s
    capacity = figures.redis_gate_admits_per_s
    admitted_per_s = min(rate, capacity)
    sell_out = scenario.stock / admitted_per_s if scenario.stock < scenario.buyers else None
    # While stock lasts, presses arrive faster than the gate answers: the excess queues.
    saturated = min(scenario.window_seconds, sell_out if sell_out is not None else scenario.window_seconds)
    queue_seconds = (rate - capacity) * saturated / capacity if rate > capacity else 0.0
    processes = sum(functions[f].annotations.max_scale * WORKERS[f] for f in functions)
    return RedisPlan(
        gate_peak_ops_per_s=rate,
        gate_capacity_per_s=capacity,
        gate_busy_percent=100 * rate / capacity,
        sell_out_seconds=sell_out,
        gate_queue_seconds=queue_seconds,
        gate_after_sell_out_ops_per_s=order.pods * WORKERS["order"] / DEPLOYED.sold_out_memo_seconds,
        login_commands_per_s=auth.demand_per_s * LOGIN_RATE_LIMIT_COMMANDS,
        stock_cache_reads_per_s=stock.pods * WORKERS["stock"] / DEPLOYED.stock_cache_ttl_seconds,
        sub_gates=max(1, math.ceil(rate / (capacity * GATE_HEADROOM) - 1e-9)),
        connections_at_max_scale=processes * REDIS_POOL_PER_PROCESS,
    )


def plan_database(scenario: Scenario, figures: Figures, functions: dict[str, FunctionPlan]) -> DatabasePlan:
    orders = min(scenario.stock, scenario.buyers)
    order = functions["order"]
    processes = sum(functions[f].annotations.max_scale * WORKERS[f] for f in functions)
    return DatabasePlan(
        orders=orders,
        orders_capacity_per_s=figures.database_orders_per_s,
        key_lookups_capacity_per_s=figures.database_key_lookups_per_s,
        confirm_seconds=orders / figures.database_orders_per_s,
        # Only a buyer the gate counts units for (a winner pressing again) is looked up:
        # the gate refuses everyone else with no database read.
        idempotency_reads_per_s=order.demand_per_s * scenario.idempotency_key_share * orders / max(1, scenario.buyers),
        sale_reads_per_s=order.pods * WORKERS["order"] / SALE_CACHE_SECONDS,
        connections_at_max_scale=processes * MONGO_POOL_PER_PROCESS,
    )


def gate_split_advice(scenario: Scenario, redis: RedisPlan) -> str:
    n = redis.sub_gates
    each, extra = divmod(scenario.stock, n)
    # Each sub-gate sells out when its share of the presses reaches its share of the units; the
    # counts scatter by about sqrt(units per sub-gate), so the sell-out instants by sqrt(stock x n) / rate.
    inverted = math.sqrt(scenario.stock * n)
    return (
        f"one Redis key answers the gate on one Redis thread: {redis.gate_peak_ops_per_s:,.0f} presses/s is"
        f" {redis.gate_busy_percent:,.0f} % of its {redis.gate_capacity_per_s:,.0f}/s. Split it into {n} sub-gates"
        f" (ceil({redis.gate_peak_ops_per_s:,.0f} / ({redis.gate_capacity_per_s:,.0f} x {GATE_HEADROOM:g}))):"
        f" fs:{{sku#0}}:gate .. fs:{{sku#{n - 1}}}:gate holding {each:,} units each"
        f"{f' (+1 for the first {extra})' if extra else ''}, on {n} Redis primaries (different hash tags, different slots);"
        f" a buyer always goes to sub-gate hash(user id) mod {n}, so the per-user limit stays exact."
        f" Fairness cost: first come first served holds within a sub-gate only; about {inverted:,.0f} presses, those within"
        f" {inverted / redis.gate_peak_ops_per_s * 1000:,.1f} ms of the sell-out, can lose to a later one (docs/capacity.md)"
    )


def findings_for(scenario: Scenario, functions: dict[str, FunctionPlan], redis: RedisPlan, database: DatabasePlan) -> tuple[Finding, ...]:
    found: list[Finding] = []
    if redis.sub_gates > 1:
        found.append(Finding("gate_split", gate_split_advice(scenario, redis)))
    if redis.gate_queue_seconds > DEPLOYED.redis_timeout_seconds:
        found.append(
            Finding(
                "gate_queue",
                f"presses queue {redis.gate_queue_seconds:,.2f} s at the gate before the sale sells out, past the"
                f" {DEPLOYED.redis_timeout_seconds:g} s Redis timeout: workers trip their breaker and send the crowd to the database",
            )
        )
    if redis.connections_at_max_scale > REDIS_MAXCLIENTS:
        found.append(
            Finding(
                "redis_connections",
                f"at max-scale the pods may open {redis.connections_at_max_scale:,} Redis connections"
                f" ({REDIS_POOL_PER_PROCESS} per process) against redis-server's default maxclients {REDIS_MAXCLIENTS:,}:"
                " raise maxclients (and the file limit), shrink the pool, or split the gate across Redis instances",
            )
        )
    order_timeout = TIMEOUT_SECONDS["order"]
    if database.confirm_seconds > order_timeout:
        found.append(
            Finding(
                "database_writes",
                f"the database confirms {database.orders:,} orders in {database.confirm_seconds:,.1f} s at"
                f" {database.orders_capacity_per_s:,.0f}/s, past the order timeout of {order_timeout} s: the last winners"
                " time out before their order commits (it stays correct; they see 5xx and retry with their Idempotency-Key)",
            )
        )
    lookups = database.key_lookups_capacity_per_s
    if lookups is not None and database.idempotency_reads_per_s > lookups * GATE_HEADROOM:
        found.append(
            Finding(
                "idempotency_reads",
                f"{database.idempotency_reads_per_s:,.0f} Idempotency-Key lookups/s reach the database (one per keyed press by a"
                f" buyer who holds units), past {GATE_HEADROOM:.0%} of the {lookups:,.0f}/s it answers: winners pressing again then"
                " wait on the database; cache replayable keys in Redis",
            )
        )
    if scenario.login_window_seconds > DEPLOYED.token_ttl_seconds:
        found.append(
            Finding(
                "token_ttl",
                f"a {scenario.login_window_seconds:g} s login window is longer than the {DEPLOYED.token_ttl_seconds} s token lifetime:"
                " the first buyers' tokens expire before the sale opens",
            )
        )
    return tuple(found)


def make_plan(scenario: Scenario, figures: Figures) -> Plan:
    scenario.validate()
    functions = {
        "auth": plan_auth(scenario, figures),
        "stock": plan_stock(scenario, figures),
        "order": plan_order(scenario, figures),
    }
    redis = plan_redis(scenario, figures, functions)
    database = plan_database(scenario, figures, functions)
    return Plan(scenario, figures, functions, redis, database, findings_for(scenario, functions, redis, database))


# --- the autoscaler under the crowd -----------------------------------------


def simulate_function(
    plan: Plan,
    function: str,
    *,
    min_scale: int | None = None,
    start_seconds: tuple[float, float] = (5.0, 15.0),
    seconds: float | None = None,
    crowd_factor: float = 1.0,
) -> SimResult:
    """The KPA under this plan's crowd (times ``crowd_factor``) for one function, with the plan's annotations.

    The simulated autoscaler reads the metric the plan chose, and the pods hold a
    request for the time one really spends inside (``seconds_inside``), so the
    concurrency it sees is the one Knative would measure.
    """
    fn = plan.functions[function]
    notes = fn.annotations
    low = notes.min_scale if min_scale is None else min_scale
    window = plan.scenario.login_window_seconds if function == "auth" else plan.scenario.window_seconds
    if function == "stock":
        window = max(window, 60.0)  # refreshers keep coming for the minutes around the opening
    scaler = Autoscaler(
        target=notes.target,
        utilization=notes.target_utilization_percentage / 100,
        min_scale=low,
        max_scale=max(low, notes.max_scale),
        metric=notes.metric,
        panic_threshold=(notes.panic_threshold_percentage or 200) / 100,
    )
    pods = Pods(
        capacity_rps=fn.per_pod_per_s,
        service_seconds=fn.seconds_inside,
        start_seconds=start_seconds,
        timeout_seconds=TIMEOUT_SECONDS[function],
    )
    duration = seconds if seconds is not None else min(window, 60.0) + 20.0
    return simulate(Crowd(rate=fn.demand_per_s * crowd_factor, seconds=window), pods, scaler, seconds=duration)


# --- output -------------------------------------------------------------------


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
        lines.append(f"{titles[name]}: {fn.pods:,} pods")
        lines += [f"  {line}" for line in fn.arithmetic]
        lines.append(f"  annotations: {_annotation_text(fn.annotations)}")
        lines.append(f"  probes: {_probe_text(fn.probes)}")
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


def _n(value: float) -> str:
    return f"{value:g}"


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


def add_plan_command(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``flashsale plan``: called by ops.cli's parser."""
    command = subcommands.add_parser("plan", help=DESCRIPTION, description=DESCRIPTION)
    add_arguments(command)
    command.set_defaults(run=lambda args, _settings: run(args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashsale plan", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
