"""``flashsale plan``: pods, Knative annotations and store load for a crowd, from measured figures.

    python -m shared.plan --buyers 10000 --stock 1000 [--window-seconds 1] [--json] [--simulate]

The figures are per process (one gunicorn worker) as ``make bench`` measures them and
writes them to ``bench/results/latest.json``; a flag overrides any one of them, and a
figure neither gives is an error, never a guess. Everything here is arithmetic on
those figures, shown line by line so a reader can check it (docs/capacity.md):

- Little's law: requests in flight = arrival rate x time each spends inside.
  Knative scales on in-flight requests, so a pod's ``target`` is what it holds
  when it answers its measured rate within the latency goal (rate x goal), and
  the pods a crowd needs are its in-flight requests / (target x utilization).
- The crowd cannot wait for pods: a pod takes seconds to start and the sale's
  crowd lasts seconds, so ``min-scale`` and ``initial-scale`` carry the whole
  crowd; ``max-scale`` leaves room for a crowd twice the plan.
- Only about ``stock`` buyers reach the database; every Buy pressed before the
  sale sells out reaches the Redis gate, one key on one Redis thread. Past what
  that key answers, the gate has to be split (see :func:`gate_split_advice`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared.autoscale_sim import Autoscaler, Crowd, Pods, SimResult, render, simulate
from shared.ordering import SALE_CACHE_SECONDS
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FIGURES = ROOT / "bench" / "results" / "latest.json"

# Pod shapes as knative/*.yaml deploy them (a unit test keeps the two in step):
# auth hashes one password per CPU; stock and order run one gevent worker on one CPU.
CPUS = {"auth": 2, "stock": 1, "order": 1}
WORKERS = {"auth": 2, "stock": 1, "order": 1}
THREADS = {"auth": 1, "stock": 1, "order": 1}
TIMEOUT_SECONDS = {"auth": 30, "stock": 10, "order": 30}
# Never fewer: auth keeps one pod warm; stock and order two, so one restarting pod
# does not leave the sale on a single one.
MIN_PODS = {"auth": 1, "stock": 2, "order": 2}
MAX_SCALE_HEADROOM = 2.0  # max-scale leaves room for a crowd twice the planned one
TARGET_BURST_CAPACITY = -1  # the activator always in the path (docs/deploy.md)

# The settings the pods run with: the code's defaults, which knative/config.yaml keeps
# (a unit test checks): the Redis timeout past which a gate answer trips the breaker, the
# sold-out memo, the stock cache's lifetime and the token's.
DEPLOYED = Settings.from_env({})
REDIS_POOL_PER_PROCESS = 64  # shared/redisconn.py: BlockingConnectionPool(max_connections=64)
REDIS_MAXCLIENTS = 10_000  # redis-server's default maxclients
MONGO_POOL_PER_PROCESS = 100  # pymongo's default maxPoolSize
LOGIN_RATE_LIMIT_COMMANDS = 4  # INCR + EXPIRE for the account and the address, one round trip
GATE_HEADROOM = 0.7  # keep the gate's Redis thread at most 70 % busy, as the pods are kept at 70 %


FIGURES_BLOCK = re.compile(r"<!-- figures:start -->\s*```json\n(.*?)```\s*<!-- figures:end -->", re.S)


class FiguresMissing(Exception):
    """A figure the plan needs is in neither the results file nor the flags."""


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
    FigureSpec("order", "p99_ms", "--order-p99-ms", "p99 latency of POST /orders in the benchmark (ms)"),
    FigureSpec("stock", "rps_per_process", "--stock-rps", "GET /stock per second, one stock process"),
    FigureSpec("stock", "p99_ms", "--stock-p99-ms", "p99 latency of GET /stock in the benchmark (ms)"),
    FigureSpec("auth", "logins_per_s_per_cpu", "--auth-logins-per-cpu", "logins per second per CPU (bcrypt-bound)"),
    FigureSpec("auth", "bcrypt_verify_ms", "--bcrypt-verify-ms", "one bcrypt verify at the deployed cost (ms)"),
    FigureSpec("redis", "gate_admits_per_s", "--gate-admits-per-s", "gate Lua calls per second one Redis key answers"),
    FigureSpec("database", "orders_per_s", "--db-orders-per-s", "orders per second the database confirms"),
    FigureSpec("database", "key_lookups_per_s", "--db-key-lookups-per-s", "Idempotency-Key lookups per second the database answers", False),
)


@dataclass(frozen=True)
class Figures:
    order_losers_rps_per_process: float
    order_crowd_rps_per_process: float
    order_p99_ms: float
    stock_rps_per_process: float
    stock_p99_ms: float
    auth_logins_per_s_per_cpu: float
    auth_bcrypt_verify_ms: float
    redis_gate_admits_per_s: float
    database_orders_per_s: float
    database_key_lookups_per_s: float | None = None
    source: str = "flags"


def _figures_text(path: Path) -> str:
    """The results file's JSON; from a Markdown file, its ``figures`` block (docs/capacity.md keeps one)."""
    text = path.read_text()
    if path.suffix != ".md":
        return text
    block = FIGURES_BLOCK.search(text)
    if block is None:
        raise ValueError("no <!-- figures:start --> ```json ... ``` <!-- figures:end --> block")
    return block.group(1)


def load_figures(path: Path | None, overrides: dict[str, float]) -> Figures:
    """Figures from the benchmark's results file (or docs/capacity.md), each replaced by its flag when given.

    ``overrides`` maps a figure's dotted name (``order.p99_ms``) to its value.
    Raises FiguresMissing naming every figure neither source gives.
    """
    measured: dict[str, Any] = {}
    source = "flags"
    problem = ""
    if path is not None and path.exists():
        try:
            measured = json.loads(_figures_text(path))
        except (OSError, ValueError) as exc:
            raise FiguresMissing(f"cannot read {path}: {exc}") from exc
        if not isinstance(measured, dict):
            raise FiguresMissing(f"{path} is not a JSON object")
        when = measured.get("measured_at", "an unknown time")
        source = f"{path} (measured {when} on {measured.get('cpus', '?')} CPUs, bcrypt cost {measured.get('bcrypt_rounds', '?')})"
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
        head = (problem + "; no flag gives") if problem else "no figure for"
        raise FiguresMissing(f"{head}:\n" + "\n".join(lines))
    if overrides and source != "flags":
        source += f", overridden by flags: {', '.join(sorted(overrides))}"
    return Figures(**values, source=source)


@dataclass(frozen=True)
class Scenario:
    buyers: int
    stock: int
    window_seconds: float = 1.0  # the crowd presses Buy within this many seconds of the opening
    presses_per_buyer: float = 1.0
    login_window_seconds: float = 300.0  # buyers log in during the last minutes before the sale
    refresh_seconds: float = 5.0  # a waiting buyer reads the stock this often
    order_latency_ms: float = 100.0  # what a buyer should wait for a 201 or 409 at target
    stock_latency_ms: float = 100.0
    utilization_percent: int = 70
    idempotency_key_share: float = 1.0  # share of presses with an Idempotency-Key (one database read each)

    def validate(self) -> None:
        positive = {
            "buyers": self.buyers,
            "window_seconds": self.window_seconds,
            "presses_per_buyer": self.presses_per_buyer,
            "login_window_seconds": self.login_window_seconds,
            "refresh_seconds": self.refresh_seconds,
            "order_latency_ms": self.order_latency_ms,
            "stock_latency_ms": self.stock_latency_ms,
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
    target: int
    target_utilization_percentage: int
    min_scale: int
    initial_scale: int
    max_scale: int
    target_burst_capacity: int
    container_concurrency: int | None  # None: no hard limit (gevent holds waiting requests cheaply)


@dataclass(frozen=True)
class FunctionPlan:
    function: str
    demand_per_s: float  # arrivals the function must answer, per second
    per_pod_per_s: float  # what one pod answers per second
    seconds_inside: float  # time one request spends in a pod at target (Little's law)
    in_flight: float  # demand x seconds_inside
    pods_exact: float
    pods: int
    annotations: Annotations
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


def pods_for(in_flight: float, target: float, utilization: float) -> float:
    """Knative's own rule: desired pods = in-flight requests / (target x utilization)."""
    return in_flight / (target * utilization)


def scale_bounds(function: str, pods_exact: float) -> tuple[int, int, int, int]:
    """(pods, min-scale, initial-scale, max-scale): the crowd's pods are there before it arrives."""
    pods = max(MIN_PODS[function], math.ceil(pods_exact - 1e-9))
    return pods, pods, pods, max(pods + 1, math.ceil(pods * MAX_SCALE_HEADROOM))


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
    return FunctionPlan(
        function="auth",
        demand_per_s=logins,
        per_pod_per_s=per_pod,
        seconds_inside=verify,
        in_flight=in_flight,
        pods_exact=exact,
        pods=pods,
        annotations=Annotations(concurrency, scenario.utilization_percent, low, initial, high, TARGET_BURST_CAPACITY, concurrency),
        arithmetic=(
            f"logins: {scenario.buyers:,} buyers / {_n(scenario.login_window_seconds)} s login window = {logins:,.1f}/s",
            f"containerConcurrency = target = {WORKERS['auth']} workers x {THREADS['auth']} thread = {concurrency}"
            " (one bcrypt hash per CPU; a third would only slow the other two)",
            f"in flight (Little): {logins:,.1f}/s x {verify:.3f} s per verify = {in_flight:,.1f}",
            f"pods by concurrency: {in_flight:,.1f} / ({concurrency} x {u:.2f}) = {by_concurrency:,.2f}",
            f"pods by throughput: {logins:,.1f}/s / ({CPUS['auth']} CPUs x {figures.auth_logins_per_s_per_cpu:g} logins/s per CPU"
            f" x {u:.2f}) = {by_throughput:,.2f}",
            *_bounds_lines("auth", exact, pods, high),
        ),
    )


def plan_order(scenario: Scenario, figures: Figures) -> FunctionPlan:
    u = scenario.utilization_percent / 100
    presses = scenario.buyers * scenario.presses_per_buyer
    rate = presses / scenario.window_seconds
    per_pod = figures.order_crowd_rps_per_process * WORKERS["order"]
    goal = scenario.order_latency_ms / 1000
    target = max(1, math.floor(per_pod * goal))
    in_flight = rate * goal
    exact = pods_for(in_flight, target, u)
    pods, low, initial, high = scale_bounds("order", exact)
    losers_per_pod = figures.order_losers_rps_per_process * WORKERS["order"]
    busy = rate / (pods * per_pod)
    return FunctionPlan(
        function="order",
        demand_per_s=rate,
        per_pod_per_s=per_pod,
        seconds_inside=goal,
        in_flight=in_flight,
        pods_exact=exact,
        pods=pods,
        annotations=Annotations(target, scenario.utilization_percent, low, initial, high, TARGET_BURST_CAPACITY, None),
        arithmetic=(
            f"crowd: {scenario.buyers:,} buyers x {_n(scenario.presses_per_buyer)} press / {_n(scenario.window_seconds)} s = {rate:,.0f}/s",
            f"per pod: {WORKERS['order']} worker x {figures.order_crowd_rps_per_process:,.0f}/s in the crowd = {per_pod:,.0f}/s"
            f" ({losers_per_pod:,.0f}/s once it remembers sold out)",
            f"target (Little, one pod): {per_pod:,.0f}/s x {goal:.3f} s latency goal = {per_pod * goal:,.1f} -> {target}",
            f"in flight (Little): {rate:,.0f}/s x {goal:.3f} s = {in_flight:,.0f}",
            f"pods: {in_flight:,.0f} / ({target} x {u:.2f}) = {exact:,.2f}",
            *_bounds_lines("order", exact, pods, high),
            f"{pods:,} pods answer {pods * per_pod:,.0f}/s: the crowd keeps them {busy:.0%} busy;"
            f" the benchmark's p99 was {figures.order_p99_ms:,.0f} ms",
        ),
    )


def plan_stock(scenario: Scenario, figures: Figures) -> FunctionPlan:
    u = scenario.utilization_percent / 100
    rate = scenario.buyers / scenario.refresh_seconds
    per_pod = figures.stock_rps_per_process * WORKERS["stock"]
    goal = scenario.stock_latency_ms / 1000
    target = max(1, math.floor(per_pod * goal))
    in_flight = rate * goal
    exact = pods_for(in_flight, target, u)
    pods, low, initial, high = scale_bounds("stock", exact)
    return FunctionPlan(
        function="stock",
        demand_per_s=rate,
        per_pod_per_s=per_pod,
        seconds_inside=goal,
        in_flight=in_flight,
        pods_exact=exact,
        pods=pods,
        annotations=Annotations(target, scenario.utilization_percent, low, initial, high, TARGET_BURST_CAPACITY, None),
        arithmetic=(
            f"refreshers: {scenario.buyers:,} buyers / one read every {_n(scenario.refresh_seconds)} s = {rate:,.0f}/s",
            f"target (Little, one pod): {per_pod:,.0f}/s x {goal:.3f} s latency goal = {per_pod * goal:,.1f} -> {target}",
            f"in flight (Little): {rate:,.0f}/s x {goal:.3f} s = {in_flight:,.0f}",
            f"pods: {in_flight:,.0f} / ({target} x {u:.2f}) = {exact:,.2f}",
            *_bounds_lines("stock", exact, pods, high),
            f"the benchmark's p99 was {figures.stock_p99_ms:,.0f} ms",
        ),
    )


def _bounds_lines(function: str, exact: float, pods: int, high: int) -> tuple[str, ...]:
    floor_note = f" (at least {MIN_PODS[function]})" if pods == MIN_PODS[function] and exact < MIN_PODS[function] else ""
    return (
        f"min-scale = initial-scale = {pods:,}{floor_note}: the pods are there before the crowd",
        f"max-scale = {MAX_SCALE_HEADROOM:g} x {pods:,} = {high:,}: room for a crowd twice the plan",
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
    through_activator = sum(f.demand_per_s for f in functions.values())
    found.append(
        Finding(
            "activator",
            f"with target-burst-capacity -1 every request passes the activator: {through_activator:,.0f} req/s at the opening;"
            " check that knative-serving's activator has the replicas for it (`kubectl -n knative-serving get hpa activator`);"
            " if it cannot, set target-burst-capacity 0 on order and stock: min-scale already carries the crowd",
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
) -> SimResult:
    """The KPA under this plan's crowd for one function, with the plan's annotations (min-scale overridable)."""
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
    )
    pods = Pods(
        capacity_rps=fn.per_pod_per_s,
        request_seconds=fn.seconds_inside,
        start_seconds=start_seconds,
        timeout_seconds=TIMEOUT_SECONDS[function],
    )
    duration = seconds if seconds is not None else min(window, 60.0) + 20.0
    return simulate(Crowd(rate=fn.demand_per_s, seconds=window), pods, scaler, seconds=duration)


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
        lines.append("")
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
    lines += [f"  [{f.code}] {f.message}" for f in plan.findings]
    return "\n".join(lines)


def _annotation_text(notes: Annotations) -> str:
    parts = [
        f"target {notes.target}",
        f"target-utilization-percentage {notes.target_utilization_percentage}",
        f"min-scale {notes.min_scale}",
        f"initial-scale {notes.initial_scale}",
        f"max-scale {notes.max_scale}",
        f"target-burst-capacity {notes.target_burst_capacity}",
    ]
    if notes.container_concurrency is not None:
        parts.append(f"containerConcurrency {notes.container_concurrency}")
    return ", ".join(parts)


def _n(value: float) -> str:
    return f"{value:g}"


# --- command line -------------------------------------------------------------

DESCRIPTION = "Pods, Knative annotations and Redis and database load for a crowd, from measured figures (docs/capacity.md)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--buyers", type=int, required=True, help="buyers in the crowd")
    parser.add_argument("--stock", type=int, required=True, help="units on sale")
    parser.add_argument("--window-seconds", type=float, default=1.0, help="the crowd presses Buy within this many seconds (1)")
    parser.add_argument("--presses-per-buyer", type=float, default=1.0, help="Buy presses per buyer (1)")
    parser.add_argument("--login-window-seconds", type=float, default=300.0, help="buyers log in during this long before the sale (300)")
    parser.add_argument("--refresh-seconds", type=float, default=5.0, help="a waiting buyer reads the stock this often (5)")
    parser.add_argument("--order-latency-ms", type=float, default=100.0, help="latency goal for POST /orders at target (100)")
    parser.add_argument("--stock-latency-ms", type=float, default=100.0, help="latency goal for GET /stock at target (100)")
    parser.add_argument("--utilization", type=int, default=70, help="target-utilization-percentage (70)")
    parser.add_argument("--idempotency-key-share", type=float, default=1.0, help="share of presses sending an Idempotency-Key, 0-1 (1)")
    parser.add_argument("--figures", type=Path, default=DEFAULT_FIGURES, help="the benchmark's results (bench/results/latest.json)")
    measured = parser.add_argument_group("figures (each overrides the results file)")
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
        order_latency_ms=args.order_latency_ms,
        stock_latency_ms=args.stock_latency_ms,
        utilization_percent=args.utilization,
        idempotency_key_share=args.idempotency_key_share,
    )
    try:
        figures = load_figures(args.figures, overrides)
        plan = make_plan(scenario, figures)
    except (FiguresMissing, ValueError) as exc:
        print(f"flashsale plan: {exc}", file=sys.stderr)
        return 2
    sim: SimResult | None = None
    if args.simulate:
        fastest, slowest = args.pod_start_seconds
        sim = simulate_function(
            plan, args.simulate, min_scale=args.sim_min_scale, start_seconds=(fastest, slowest), seconds=args.sim_seconds
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
    """``flashsale plan``: called by shared.cli's parser."""
    command = subcommands.add_parser("plan", help=DESCRIPTION, description=DESCRIPTION)
    add_arguments(command)
    command.set_defaults(run=lambda args, _settings: run(args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashsale plan", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
