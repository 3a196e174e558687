"""The arithmetic: each function's pods, annotations and probes, the Redis and database load, what runs out."""

from __future__ import annotations

import math

from ops.plan.figures import Figures
from ops.plan.model import (
    CPUS,
    DEPLOYED,
    ENVOY_CLUSTER_MAX_REQUESTS,
    GATE_HEADROOM,
    GATEWAY_CPU_LIMIT,
    GATEWAY_CPU_REQUEST,
    GATEWAY_HPA_MAX_REPLICAS,
    GATEWAY_MIN_REPLICAS,
    LIVENESS_PERIOD_SECONDS,
    LOGIN_RATE_LIMIT_COMMANDS,
    MAX_SCALE_HEADROOM,
    METRIC,
    MIN_PODS,
    MONGO_POOL_PER_PROCESS,
    PANIC_THRESHOLD_BOUNDS,
    PROBE_FAILURE_THRESHOLD,
    PROBE_MARGIN,
    QUEUE_PROXY_DRAIN_SECONDS,
    QUEUE_PROXY_QUEUE_PER_SLOT,
    READINESS_PERIOD_SECONDS,
    REDIS_MAXCLIENTS,
    REDIS_POOL_PER_PROCESS,
    TARGET_BURST_CAPACITY,
    THREADS,
    TIMEOUT_SECONDS,
    WORKERS,
    Annotations,
    DatabasePlan,
    EventsPlan,
    Finding,
    FunctionPlan,
    GatewayCluster,
    GatewayPlan,
    Plan,
    Probe,
    Probes,
    RedisPlan,
    Scenario,
)
from shared.ordering import SALE_CACHE_SECONDS


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
    """A probe answered twice as slowly as the slowest answer the benchmark saw still passes."""
    timeout = max(1, math.ceil(PROBE_MARGIN * worst_ms / 1000 - 1e-9))
    return Probes(
        readiness=Probe(READINESS_PERIOD_SECONDS, timeout, PROBE_FAILURE_THRESHOLD),
        liveness=Probe(LIVENESS_PERIOD_SECONDS, timeout, PROBE_FAILURE_THRESHOLD),
    )


def planned_timeout(function: str, probes: Probes) -> int:
    """timeoutSeconds: the function's own limit, raised to its probes' timeouts and to queue-proxy's drain.

    A probe that waits longer than a request may take would call a pod healthy while its answers
    time out; a termination grace (Knative's = timeoutSeconds) shorter than the drain kills the
    pod while queue-proxy still hands it requests.
    """
    return max(TIMEOUT_SECONDS[function], probes.readiness.timeout_seconds, probes.liveness.timeout_seconds, QUEUE_PROXY_DRAIN_SECONDS)


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
    timeout = planned_timeout("auth", probes)
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
        timeout_seconds=timeout,
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
            *_probe_lines("auth", figures.auth_max_ms, probes, timeout),
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
    timeout = planned_timeout(function, probes)
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
        timeout_seconds=timeout,
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
            *_probe_lines(function, worst_ms, probes, timeout),
            tail,
        ),
    )


def _bounds_lines(function: str, exact: float, pods: int, high: int) -> tuple[str, ...]:
    floor_note = f" (at least {MIN_PODS[function]})" if pods == MIN_PODS[function] and exact < MIN_PODS[function] else ""
    return (
        f"min-scale = initial-scale = {pods:,}{floor_note}: the pods are there before the crowd",
        f"max-scale = {MAX_SCALE_HEADROOM:g} x {pods:,} = {high:,}: room for a crowd twice the plan",
    )


def _probe_lines(function: str, worst_ms: float, probes: Probes, timeout: int) -> tuple[str, ...]:
    r, live = probes.readiness, probes.liveness
    return (
        f"probes: timeout {r.timeout_seconds} s = {PROBE_MARGIN} x the slowest answer in the benchmark ({worst_ms:,.0f} ms),"
        f" rounded up; readiness every {r.period_seconds} s, liveness every {live.period_seconds} s,"
        f" {r.failure_threshold} failures in a row",
        f"timeoutSeconds {timeout} = the largest of its own limit ({TIMEOUT_SECONDS[function]} s), the probes' timeout"
        f" ({r.timeout_seconds} s) and queue-proxy's drain ({QUEUE_PROXY_DRAIN_SECONDS} s): Knative makes it the pod's"
        " termination grace too",
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
    order_timeout = functions["order"].timeout_seconds
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


def plan_events(scenario: Scenario, figures: Figures, database: DatabasePlan) -> EventsPlan:
    """Pods that hold the busiest second's order.placed events without a 503 from queue-proxy.

    The benchmark does not measure the consumer, so the plan sizes what it can count: every
    confirmed order posts one event, the database confirms them within its confirm time, and
    each pod holds containerConcurrency events in flight plus 10 x that in queue-proxy's queue.
    """
    orders = database.orders
    spread = max(1.0, scenario.window_seconds, database.confirm_seconds)
    burst = math.ceil(orders / spread - 1e-9)
    concurrency = WORKERS["events"] * THREADS["events"]
    held = concurrency * (1 + QUEUE_PROXY_QUEUE_PER_SLOT)
    pods = max(1, math.ceil(burst / held - 1e-9))
    high = max(pods + 1, math.ceil(pods * MAX_SCALE_HEADROOM))
    notes = Annotations("concurrency", concurrency, scenario.utilization_percent, pods, pods, high, 0, concurrency)
    probes = probes_for(figures.order_max_ms)  # not measured: an event does less than an order against the same stores
    timeout = planned_timeout("events", probes)
    return EventsPlan(
        orders=orders,
        burst=burst,
        container_concurrency=concurrency,
        held_per_pod=held,
        pods=pods,
        annotations=notes,
        probes=probes,
        timeout_seconds=timeout,
        arithmetic=(
            f"order.placed: one per confirmed order, {orders:,}, within max(1 s, the {_n(scenario.window_seconds)} s window,"
            f" the database's {database.confirm_seconds:,.2f} s to confirm them) = {_n(spread)} s: {burst:,} at once",
            f"containerConcurrency = target = {WORKERS['events']} worker x {THREADS['events']} threads = {concurrency}",
            f"a pod holds {concurrency} in flight + queue-proxy's queue of {QUEUE_PROXY_QUEUE_PER_SLOT} x {concurrency}"
            f" = {held}; past that queue-proxy answers 503 and the event waits for the broker's backoff",
            f"pods = ceil({burst:,} / {held}) = {pods:,}: min-scale = initial-scale = {pods:,}, max-scale {high:,}"
            f" ({pods * CPUS['events']:g} CPUs at {CPUS['events']:g} each; lower min-scale after the sale)",
            *_probe_lines("events", figures.order_max_ms, probes, timeout),
        ),
    )


def in_flight_at_the_gateway(fn: FunctionPlan, scenario: Scenario, crowd_factor: float) -> float:
    """Requests the gateway holds for one function's cluster at the end of the crowd's window.

    Each request holds its upstream connection until the pod answers. While the pods answer the
    arrivals as they come, that is arrivals x the time one takes inside (Little); past what the
    pods answer, the window's excess waits in them too, every request still open at the gateway.
    """
    rate = fn.demand_per_s * crowd_factor
    answered = fn.pods * fn.per_pod_per_s
    window = scenario.window_seconds if fn.function == "order" else max(scenario.window_seconds, 1.0)
    backlog = max(0.0, (rate - answered) * window)
    return rate * fn.seconds_inside + backlog


def plan_gateway(scenario: Scenario, functions: dict[str, FunctionPlan]) -> GatewayPlan:
    """Gateway replicas so that no cluster passes Envoy's 1,024 requests in any replica, at twice the crowd."""
    clusters = []
    peak_twice = 0.0
    for name in ("order", "stock"):  # target-burst-capacity 0: the gateway sends straight to their pods
        fn = functions[name]
        planned, twice = in_flight_at_the_gateway(fn, scenario, 1.0), in_flight_at_the_gateway(fn, scenario, 2.0)
        peak_twice = max(peak_twice, twice)
        clusters.append((name, planned, twice))
    limit = ENVOY_CLUSTER_MAX_REQUESTS
    replicas = max(GATEWAY_MIN_REPLICAS, math.ceil(peak_twice / (limit * GATE_HEADROOM) - 1e-9))
    per_cluster = tuple(GatewayCluster(name, planned, twice, planned / replicas, twice / replicas) for name, planned, twice in clusters)
    lines = [
        f"{c.function}: {c.in_flight:,.0f} requests in flight at the planned crowd, {c.in_flight_twice:,.0f} at twice it"
        f" = {c.per_replica:,.0f} and {c.per_replica_twice:,.0f} per replica, against Envoy's {limit:,} a cluster"
        for c in per_cluster
    ]
    return GatewayPlan(
        replicas=replicas,
        cpu_request=replicas * GATEWAY_CPU_REQUEST,
        cpu_limit=replicas * GATEWAY_CPU_LIMIT,
        max_requests_per_cluster=limit,
        clusters=per_cluster,
        arithmetic=(
            "target-burst-capacity 0: the gateway (Kourier's Envoy) sends every press straight to the pods; Kourier sets no"
            f" circuit breakers, so each replica allows {limit:,} requests, {limit:,} pending and {limit:,} connections a cluster",
            *lines,
            f"replicas = max({GATEWAY_MIN_REPLICAS}, ceil({peak_twice:,.0f} / ({limit:,} x {GATE_HEADROOM:g}))) = {replicas}:"
            f" pre-scale to them before the sale; its CPU autoscaler ({GATEWAY_HPA_MAX_REPLICAS} at most) decides every 15 s",
            f"CPU: {replicas} x {GATEWAY_CPU_REQUEST:g} requested = {replicas * GATEWAY_CPU_REQUEST:g},"
            f" up to {replicas * GATEWAY_CPU_LIMIT:g} (its limit of {GATEWAY_CPU_LIMIT:g} each)",
        ),
    )


def make_plan(scenario: Scenario, figures: Figures) -> Plan:
    scenario.validate()
    functions = {
        "auth": plan_auth(scenario, figures),
        "stock": plan_stock(scenario, figures),
        "order": plan_order(scenario, figures),
    }
    redis = plan_redis(scenario, figures, functions)
    database = plan_database(scenario, figures, functions)
    events = plan_events(scenario, figures, database)
    gateway = plan_gateway(scenario, functions)
    findings = findings_for(scenario, functions, redis, database)
    if gateway.replicas > GATEWAY_HPA_MAX_REPLICAS:
        findings += (
            Finding(
                "gateway_replicas",
                f"the gateway needs {gateway.replicas} replicas for twice the crowd, past its autoscaler's maxReplicas of"
                f" {GATEWAY_HPA_MAX_REPLICAS}: raise maxReplicas with minReplicas (docs/deploy.md, the gateway before the sale)",
            ),
        )
    return Plan(scenario, figures, functions, redis, database, events, gateway, findings)


def _n(value: float) -> str:
    return f"{value:g}"
