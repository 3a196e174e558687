"""The deployment a plan sizes (pod shapes, Knative settings, store limits) and the plan's dataclasses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ops.plan.figures import Figures
from shared.settings import Settings

# Pod shapes as knative/*.yaml deploy them (a unit test keeps the two in step):
# auth hashes one password per CPU; stock and order run one gevent worker on one CPU.
CPUS = {"auth": 2, "stock": 1, "order": 1, "events": 0.5}
WORKERS = {"auth": 1, "stock": 1, "order": 1, "events": 1}
# auth: one worker, two hashing threads (python -m bench.auth_layout); events: one gthread worker, four threads
THREADS = {"auth": 2, "stock": 1, "order": 1, "events": 4}
# The longest an answer is still worth waiting for: a stock read older than 10 s is useless; an
# order or a login a buyer has waited 30 s for has been retried already. The plan raises a
# Service's timeoutSeconds above this where its probes or its drain need more (planned_timeout).
TIMEOUT_SECONDS = {"auth": 30, "stock": 10, "order": 30, "events": 60}
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
# A probe times out only after twice the slowest answer the benchmark saw: the same busy worker
# answers /healthz and /readyz behind the requests it holds, and a crowd a little past the
# measured one must not turn into a restart in the middle of the sale.
PROBE_MARGIN = 2
# queue-proxy, told to stop, keeps serving for 30 s so that the ingress and the activator learn the
# pod is gone (knative/serving pkg/queue/sharedmain/main.go, drainSleepDuration); the user container
# waits for it (its preStop hook). Knative sets the pod's terminationGracePeriodSeconds to the
# revision's timeoutSeconds (pkg/reconciler/revision/resources/deploy.go, BuildPodSpec) and refuses
# the field in a Service's template (pkg/apis/serving/fieldmask.go, PodSpecMask): timeoutSeconds
# is the only way to give a pod the grace its drain needs.
QUEUE_PROXY_DRAIN_SECONDS = 30
# queue-proxy with a containerConcurrency holds that many requests in flight and queues 10 times as
# many more; past them it answers 503 at once (knative/serving pkg/queue/sharedmain/main.go, buildBreaker).
QUEUE_PROXY_QUEUE_PER_SLOT = 10

# The settings the pods run with: the code's defaults, which knative/config.yaml keeps
# (a unit test checks): the Redis timeout past which a gate answer trips the breaker, the
# sold-out memo, the stock cache's lifetime and the token's.
DEPLOYED = Settings.from_env({})
REDIS_POOL_PER_PROCESS = 64  # shared/redisconn.py: BlockingConnectionPool(max_connections=64)
REDIS_MAXCLIENTS = 10_000  # redis-server's default maxclients
MONGO_POOL_PER_PROCESS = 100  # pymongo's default maxPoolSize
LOGIN_RATE_LIMIT_COMMANDS = 4  # INCR + EXPIRE for the account and the address, one round trip
GATE_HEADROOM = 0.7  # keep the gate's Redis thread at most 70 % busy, as the pods are kept at 70 %


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
    # spec.timeoutSeconds: how long a request may take, and the pod's termination grace (Knative sets
    # one from the other); at least every probe's timeout and queue-proxy's drain.
    timeout_seconds: int
    arithmetic: tuple[str, ...]


@dataclass(frozen=True)
class EventsPlan:
    """The order.placed consumer: one event per confirmed order, delivered by the broker as they come."""

    orders: int  # one order.placed each
    burst: int  # the events of the busiest second, which may reach the pods at once
    container_concurrency: int  # one per thread
    held_per_pod: int  # in flight + queue-proxy's queue; past it queue-proxy answers 503
    pods: int
    annotations: Annotations
    probes: Probes
    timeout_seconds: int
    arithmetic: tuple[str, ...]


# The ingress gateway, as net-kourier installs it (knative-extensions/net-kourier config/300-gateway.yaml):
# Envoy pods of 200m CPU requested, 1 CPU limit, scaled by a CPU HorizontalPodAutoscaler from 1 to 10
# replicas at 100 % of the request. Kourier sets no circuit breakers on the clusters it makes
# (pkg/envoy/api/cluster.go, NewCluster), so Envoy's defaults hold per cluster (one a revision) in each
# replica: 1,024 connections, 1,024 pending requests, 1,024 requests (envoy/config/cluster/v3/
# circuit_breaker.proto, Thresholds); past them Envoy answers 503 at once.
GATEWAY_CPU_REQUEST = 0.2
GATEWAY_CPU_LIMIT = 1.0
GATEWAY_HPA_MAX_REPLICAS = 10
ENVOY_CLUSTER_MAX_REQUESTS = 1024
GATEWAY_MIN_REPLICAS = 2  # one gateway replica restarting must not leave the sale on none


@dataclass(frozen=True)
class GatewayCluster:
    """One revision's cluster in the gateway: its requests in flight, in all replicas and in each."""

    function: str
    in_flight: float  # at the planned crowd
    in_flight_twice: float  # at twice it
    per_replica: float
    per_replica_twice: float


@dataclass(frozen=True)
class GatewayPlan:
    replicas: int  # to pre-scale to before the sale (the HPA's minReplicas)
    cpu_request: float  # all replicas together
    cpu_limit: float
    max_requests_per_cluster: int  # Envoy's default circuit breaker, per replica
    clusters: tuple[GatewayCluster, ...]
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
    events: EventsPlan
    gateway: GatewayPlan
    findings: tuple[Finding, ...] = field(default=())

    def finding(self, code: str) -> Finding | None:
        return next((f for f in self.findings if f.code == code), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
