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
- Probes time out only past twice the slowest answer the benchmark saw, so a pod
  that is busy is never taken for a broken one; timeoutSeconds covers the probes'
  timeouts and queue-proxy's 30 s drain (it is also the pod's termination grace).
- Only about ``stock`` buyers reach the database; every Buy pressed before the
  sale sells out reaches the Redis gate, one key on one Redis thread. Past what
  that key answers, the gate has to be split (see :func:`gate_split_advice`).
"""

from ops.plan.arithmetic import (
    findings_for,
    gate_split_advice,
    make_plan,
    panic_threshold_for,
    plan_auth,
    plan_database,
    plan_events,
    plan_gateway,
    plan_order,
    plan_redis,
    plan_stock,
    planned_timeout,
    pods_for,
    probes_for,
    scale_bounds,
)
from ops.plan.figures import (
    FIGURE_SPECS,
    LATEST_FIGURES,
    REFERENCE_FIGURES,
    ROOT,
    Figures,
    FiguresMissing,
    FigureSpec,
    default_figures,
    load_figures,
)
from ops.plan.model import (
    CPUS,
    DEPLOYED,
    ENVOY_CLUSTER_MAX_REQUESTS,
    GATE_HEADROOM,
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
from ops.plan.render import DESCRIPTION, add_arguments, add_plan_command, main, render_plan, run
from ops.plan.simulate import simulate_function

__all__ = [
    "ROOT",
    "REFERENCE_FIGURES",
    "LATEST_FIGURES",
    "FiguresMissing",
    "FigureSpec",
    "FIGURE_SPECS",
    "Figures",
    "default_figures",
    "load_figures",
    "CPUS",
    "WORKERS",
    "THREADS",
    "TIMEOUT_SECONDS",
    "METRIC",
    "MIN_PODS",
    "MAX_SCALE_HEADROOM",
    "PANIC_THRESHOLD_BOUNDS",
    "TARGET_BURST_CAPACITY",
    "READINESS_PERIOD_SECONDS",
    "LIVENESS_PERIOD_SECONDS",
    "PROBE_FAILURE_THRESHOLD",
    "PROBE_MARGIN",
    "QUEUE_PROXY_DRAIN_SECONDS",
    "QUEUE_PROXY_QUEUE_PER_SLOT",
    "DEPLOYED",
    "REDIS_POOL_PER_PROCESS",
    "REDIS_MAXCLIENTS",
    "MONGO_POOL_PER_PROCESS",
    "LOGIN_RATE_LIMIT_COMMANDS",
    "GATE_HEADROOM",
    "ENVOY_CLUSTER_MAX_REQUESTS",
    "Scenario",
    "Annotations",
    "Probe",
    "Probes",
    "FunctionPlan",
    "RedisPlan",
    "DatabasePlan",
    "EventsPlan",
    "GatewayCluster",
    "GatewayPlan",
    "Finding",
    "Plan",
    "pods_for",
    "scale_bounds",
    "panic_threshold_for",
    "probes_for",
    "planned_timeout",
    "plan_auth",
    "plan_order",
    "plan_stock",
    "plan_redis",
    "plan_database",
    "plan_events",
    "plan_gateway",
    "gate_split_advice",
    "findings_for",
    "make_plan",
    "simulate_function",
    "render_plan",
    "DESCRIPTION",
    "add_arguments",
    "run",
    "add_plan_command",
    "main",
]
