"""Prometheus metrics: the names dashboards and alerts are written against.

Under gunicorn, :mod:`shared.serving` points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh directory for the function's process group. prometheus_client then keeps
each worker's values in a memory-mapped file there, and ``/metrics`` adds the
files up, so a scrape sees the whole group's totals whichever worker answers
it. Without that directory (tests, one process) the values live in the process.

Label values are bounded, so a client can never create a new series: routes are
the router's own patterns (``other`` for anything else), skus are only those of
real sales, at most :data:`MAX_SKUS` of them per process, and outcomes and
sources outside their documented sets become ``other``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from flask import Request, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from shared import metric_files
from shared.errors import NotFound, StoreError
from shared.http import Router
from shared.settings import Settings

OTHER = "other"
# A handful of skus is on sale at once; past this many, new ones share "other".
MAX_SKUS = 100

ORDER_OUTCOMES = frozenset({"confirmed", "idempotent_replay", "sold_out", "limit_reached", "sale_not_started", "unavailable", "internal"})
STOCK_SOURCES = frozenset({"local", "redis", "database"})
# success, or the code of the problem answered (unavailable: the database failed; internal: a bug, answered 500).
LOGIN_OUTCOMES = frozenset({"success", "invalid_credentials", "rate_limited", "unavailable", "internal"})
DEPENDENCIES = frozenset({"redis", "database", "sink"})

# 1 ms to 30 s: a sold-out answer from memory takes about a millisecond; the
# function's timeout is 30 s.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
# How often a sold-out answer looks at the worker's copy of the sale for flashsale_sale_units (never a database read).
UNITS_READ_SECONDS = 1.0
# bcrypt: about 1 ms at cost 4, a quarter second at cost 12, a second at cost 14.
HASH_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)

# Before any metric is made: with PROMETHEUS_MULTIPROC_DIR, counts go to the files in batches.
metric_files.install()

REGISTRY = CollectorRegistry()

HTTP_REQUESTS = Counter(
    "flashsale_http_requests_total",
    "HTTP requests answered, by function, route pattern and status code.",
    ["function", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "flashsale_http_request_duration_seconds",
    "Time from a request reaching the function to its answer, by function and route pattern.",
    ["function", "route"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
ORDERS = Counter(
    "flashsale_orders_total",
    "Order attempts on a sale, by sku and outcome "
    "(confirmed, idempotent_replay, sold_out, limit_reached, sale_not_started, unavailable, internal).",
    ["sku", "outcome"],
    registry=REGISTRY,
)
SALE_UNITS = Gauge(
    "flashsale_sale_units",
    "Units a sale offers (its stock), as the order function last read it.",
    ["sku"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
STOCK_READS = Counter(
    "flashsale_stock_reads_total",
    "Stock answers, by where they came from (local, redis, database).",
    ["source"],
    registry=REGISTRY,
)
DEPENDENCY_ERRORS = Counter(
    "flashsale_dependency_errors_total",
    "Failed calls to a dependency (redis, database, sink).",
    ["dependency"],
    registry=REGISTRY,
)
LOGINS = Counter(
    "flashsale_logins_total",
    "Login attempts, by outcome: success, or the problem code answered (invalid_credentials, rate_limited, unavailable, internal).",
    ["outcome"],
    registry=REGISTRY,
)
CLIENT_ADDRESS_UNKNOWN = Counter(
    "flashsale_client_address_unknown_total",
    "Requests to auth whose X-Forwarded-For had fewer entries than TRUSTED_PROXIES: no client address, so no per-address limit.",
    registry=REGISTRY,
)
PASSWORD_HASH = Histogram(
    "flashsale_password_hash_seconds",
    "Seconds per bcrypt call (hashing at registration, checking at login).",
    buckets=HASH_BUCKETS,
    registry=REGISTRY,
)

DEPENDENCY_DEGRADED = Gauge(
    "flashsale_dependency_degraded",
    "1 while a dependency the function serves without (redis) fails its readiness check: still ready, slower; 0 once it answers.",
    ["dependency"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",  # the latest probe's finding, whichever worker answered it
)
GATE_HEALS = Counter(
    "flashsale_gate_heals_total",
    "Sold-out admission gates rebuilt by the healing loop because the database still had units (admissions whose orders never landed).",
    registry=REGISTRY,
)

PINNED_NAMES = frozenset(
    {
        "flashsale_http_requests_total",
        "flashsale_http_request_duration_seconds",
        "flashsale_orders_total",
        "flashsale_sale_units",
        "flashsale_stock_reads_total",
        "flashsale_dependency_errors_total",
        "flashsale_logins_total",
        "flashsale_client_address_unknown_total",
        "flashsale_password_hash_seconds",
        "flashsale_dependency_degraded",
        "flashsale_gate_heals_total",
    }
)


def exposition(multiproc_dir: str) -> bytes:
    """The Prometheus text format: the process group's totals when ``multiproc_dir`` is set."""
    if not multiproc_dir:
        return generate_latest(REGISTRY)
    metric_files.flush()  # this worker's counts are exact at once; the others' at most METRICS_FLUSH_SECONDS late
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def response(multiproc_dir: str) -> Response:
    """The classic text format (0.0.4): every Prometheus version parses it; our names need no UTF-8 escaping."""
    return Response(exposition(multiproc_dir), status=200, content_type=CONTENT_TYPE_PLAIN_0_0_4, headers={"Cache-Control": "no-store"})


class SkuLabels:
    """At most ``cap`` distinct sku label values per process; the rest are ``other``."""

    def __init__(self, cap: int = MAX_SKUS) -> None:
        self.cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, sku: str) -> str:
        if sku in self._seen:
            return sku
        with self._lock:
            if len(self._seen) >= self.cap:
                return OTHER
            self._seen.add(sku)
        return sku


def _bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


# observers, attached to the hooks in shared.context and the routers -----
def http_observer(function: str) -> Callable[[str, str, int, float], None]:
    # A labelled child is looked up once per (route, status), not once per request: routes are the router's patterns.
    children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def observe(method: str, route: str, status: int, elapsed: float) -> None:
        pair = children.get((route, status))
        if pair is None:
            pair = children[(route, status)] = (HTTP_REQUESTS.labels(function, route, str(status)), HTTP_DURATION.labels(function, route))
        pair[0].inc()
        pair[1].observe(elapsed)

    return observe


def order_observer(units_of: Callable[[str], int | None], skus: SkuLabels | None = None) -> Callable[[str, str], None]:
    """Counts each order decision. ``units_of(sku)`` gives the sale's stock from memory (None: not known), never by I/O.

    ``unknown_sku`` is not counted: there is no sale to put it under, and the
    404 already shows in ``flashsale_http_requests_total``.
    """
    label = skus or SkuLabels()
    counters: dict[tuple[str, str], Counter] = {}
    units_set: dict[str, int] = {}
    units_read_at: dict[str, float] = {}

    def observe(sku: str, outcome: str) -> None:
        if outcome == "unknown_sku":
            return
        sku_label = label(sku)
        counter = counters.get((sku_label, outcome))
        if counter is None:
            counter = counters[(sku_label, outcome)] = ORDERS.labels(sku_label, _bounded(outcome, ORDER_OUTCOMES))
        counter.inc()
        if outcome not in {"confirmed", "sold_out"} or sku_label == OTHER:
            return
        now = time.monotonic()
        # After a sell-out every loser's press is a "sold_out": the gauge is looked at once a
        # UNITS_READ_SECONDS then, as often as the worker's copy of the sale can change.
        if outcome == "sold_out" and now - units_read_at.get(sku_label, -UNITS_READ_SECONDS) < UNITS_READ_SECONDS:
            return
        units_read_at[sku_label] = now
        # The answer is already decided: a failed read for a gauge must not change it.
        with contextlib.suppress(Exception):
            units = units_of(sku)
            if units is not None and units_set.get(sku_label) != units:  # a sale's stock rarely changes: set it when it does
                SALE_UNITS.labels(sku_label).set(units)
                units_set[sku_label] = units

    return observe


def observe_stock_read(source: str) -> None:
    STOCK_READS.labels(_bounded(source, STOCK_SOURCES)).inc()


def observe_login(outcome: str) -> None:
    LOGINS.labels(_bounded(outcome, LOGIN_OUTCOMES)).inc()


def observe_client_address_unknown() -> None:
    CLIENT_ADDRESS_UNKNOWN.inc()


def observe_password_hash(seconds: float) -> None:
    PASSWORD_HASH.observe(seconds)


def dependency_error(dependency: str) -> Callable[[Exception], None]:
    child = DEPENDENCY_ERRORS.labels(_bounded(dependency, DEPENDENCIES))

    def observe(_error: Exception) -> None:
        child.inc()

    return observe


def observe_degraded(dependency: str, degraded: bool) -> None:
    DEPENDENCY_DEGRADED.labels(_bounded(dependency, DEPENDENCIES)).set(1 if degraded else 0)


def observe_gate_heal() -> None:
    GATE_HEALS.inc()


def observe_request_error(error: Exception) -> None:
    """An error that reached a router: a database failure there counts against the database."""
    if isinstance(error, StoreError):
        DEPENDENCY_ERRORS.labels("database").inc()


def instrument(router: Router, settings: Callable[[], Settings]) -> None:
    """Count the router's requests and errors (unless ``METRICS`` is off), and serve them at ``GET /metrics``."""
    count_request = http_observer(router.function)

    def observe(method: str, route: str, status: int, elapsed: float) -> None:
        if settings().metrics:
            count_request(method, route, status, elapsed)

    def observe_error(error: Exception) -> None:
        if settings().metrics:
            observe_request_error(error)

    router.observers.append(observe)
    router.on_error.append(observe_error)

    @router.route("GET", "/metrics")
    def prometheus_metrics(request: Request) -> Response:
        # Prometheus scrapes the pod's port directly (knative/observability/podmonitor.yaml); a request
        # from outside came through queue-proxy, whose reverse proxy adds X-Forwarded-For (docs/deploy.md).
        if request.headers.get("X-Forwarded-For") or request.headers.get("Forwarded"):
            raise NotFound("no route for GET /metrics")
        return response(settings().prometheus_multiproc_dir)
