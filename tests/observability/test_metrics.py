"""/metrics through functions-framework: the pinned names, bounded labels, each hook counted."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import TestResponse

from ops.devstack import RedisServer
from ops.watch import Scrape
from shared import metrics
from shared.context import Context
from shared.errors import StoreError
from tests.clients import bearer, function_client
from tests.conftest import Mint

pytestmark = pytest.mark.integration
SKU = "obs-phone"


def scrape(function: str) -> Scrape:
    answer = function_client(function).get("/metrics")
    assert answer.status_code == 200
    assert answer.content_type.startswith("text/plain; version=0.0.4")
    return Scrape.parse(answer.get_data(as_text=True))


def counted(served_by: str, name: str, **labels: str) -> Callable[[], float]:
    """A reader of one figure, to compare before and after (the registry lives as long as the test process)."""
    return lambda: scrape(served_by).total(name, **labels)


def buy(client: FlaskClient, token: str, sku: str = SKU, quantity: int = 1, key: str | None = None) -> TestResponse:
    headers = bearer(token, **({"Idempotency-Key": key} if key else {}))
    body = json.dumps({"sku": sku, "quantity": quantity})
    return client.post("/orders", data=body, content_type="application/json", headers=headers)


def test_every_function_serves_the_pinned_names_in_prometheus_text(ctx: Context) -> None:
    for function in ("auth", "stock", "order", "events"):
        function_client(function).get("/healthz")
        text = function_client(function).get("/metrics").get_data(as_text=True)
        families = {family.name for family in text_string_to_metric_families(text)}
        exposed = {name.removesuffix("_total") for name in metrics.PINNED_NAMES}
        assert exposed <= families, f"{function} lacks {exposed - families}"


def test_latency_buckets_resolve_one_millisecond_to_thirty_seconds(ctx: Context) -> None:
    function_client("stock").get("/healthz")
    bounds = sorted(scrape("stock").buckets("flashsale_http_request_duration_seconds_bucket", function="stock", route="/healthz"))
    assert bounds[0] == 0.001 and bounds[-2] == 30.0 and bounds[-1] == float("inf")
    assert all(b / a <= 2.5 for a, b in zip(bounds, bounds[1:-1], strict=False)), bounds


def test_requests_are_counted_under_their_route_even_when_refused(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 1, 1, None)
    client = function_client("order")
    sold_out = counted("order", "flashsale_http_requests_total", function="order", route="/orders", status="409")
    created = counted("order", "flashsale_http_requests_total", function="order", route="/orders", status="201")
    before = sold_out(), created()
    assert buy(client, mint()[1]).status_code == 201
    assert buy(client, mint()[1]).status_code == 409
    assert (sold_out(), created()) == (before[0] + 1, before[1] + 1)


def test_a_client_cannot_create_a_series(ctx: Context) -> None:
    client = function_client("stock")
    before = {(s.name, tuple(sorted(s.labels.items()))) for s in scrape("stock").samples}
    for i in range(20):
        client.get(f"/made-up-{i}")
        client.get(f"/stock/made-up-sku-{i}")
    after = {(s.name, tuple(sorted(s.labels.items()))) for s in scrape("stock").samples}
    new_routes = {dict(labels).get("route") for _, labels in after - before}
    assert new_routes <= {"other", "/stock/<sku>", "/metrics", None}, new_routes
    assert not any("made-up" in value for _, labels in after for _, value in labels)


def test_order_outcomes_are_counted_by_sku(ctx: Context, mint: Mint) -> None:
    from datetime import UTC, datetime, timedelta

    ctx.store.create_sale(SKU, 2, 1, None)
    ctx.store.create_sale("obs-later", 5, 1, datetime.now(UTC) + timedelta(hours=1))
    client = function_client("order")
    outcome = {o: counted("order", "flashsale_orders_total", sku=SKU, outcome=o) for o in metrics.ORDER_OUTCOMES}
    before = {o: read() for o, read in outcome.items()}
    later_before = scrape("order").total("flashsale_orders_total", sku="obs-later", outcome="sale_not_started")
    _, token = mint()
    assert buy(client, token, key="k1").status_code == 201
    assert buy(client, token, key="k1").status_code == 201  # replay
    assert buy(client, token).status_code == 409  # limit
    assert buy(client, mint()[1]).status_code == 201
    assert buy(client, mint()[1]).status_code == 409  # sold out
    assert buy(client, mint()[1], sku="obs-later").status_code == 409
    assert buy(client, mint()[1], sku="obs-nothing").status_code == 404
    gained = {o: read() - before[o] for o, read in outcome.items()}
    assert gained == {
        "confirmed": 2,
        "idempotent_replay": 1,
        "limit_reached": 1,
        "sold_out": 1,
        "sale_not_started": 0,
        "unavailable": 0,
        "internal": 0,
    }
    page = scrape("order")
    assert page.total("flashsale_orders_total", sku="obs-later", outcome="sale_not_started") == later_before + 1
    assert page.total("flashsale_orders_total", sku="obs-nothing") == 0  # unknown skus are not counted
    assert page.total("flashsale_sale_units", sku=SKU) == 2


def test_sku_labels_are_capped() -> None:
    label = metrics.SkuLabels(cap=2)
    assert [label("a"), label("b"), label("c"), label("a")] == ["a", "b", "other", "a"]


def test_unexpected_values_become_other() -> None:
    before = metrics.REGISTRY.get_sample_value("flashsale_stock_reads_total", {"source": "other"}) or 0
    metrics.observe_stock_read("somewhere-new")
    assert metrics.REGISTRY.get_sample_value("flashsale_stock_reads_total", {"source": "other"}) == before + 1


def test_stock_reads_by_source(ctx: Context) -> None:
    ctx.store.create_sale(SKU, 3, 1, None)
    client = function_client("stock")
    reads = {s: counted("stock", "flashsale_stock_reads_total", source=s) for s in ("local", "redis", "database")}
    before = {s: read() for s, read in reads.items()}
    client.get(f"/stock/{SKU}")  # database, then cached
    client.get(f"/stock/{SKU}")  # in-process
    gained = {s: read() - before[s] for s, read in reads.items()}
    assert gained == {"database": 1, "local": 1, "redis": 0}


def test_logins_and_password_hashing(ctx: Context) -> None:
    client = function_client("auth")
    success = counted("auth", "flashsale_logins_total", outcome="success")
    invalid = counted("auth", "flashsale_logins_total", outcome="invalid_credentials")
    hashes = counted("auth", "flashsale_password_hash_seconds_count")
    before = success(), invalid(), hashes()
    creds = {"email": "obs@example.com", "password": "correct horse"}
    client.post("/register", data=json.dumps(creds), content_type="application/json")
    assert client.post("/login", data=json.dumps(creds), content_type="application/json").status_code == 200
    wrong = {**creds, "password": "wrong horse!"}
    assert client.post("/login", data=json.dumps(wrong), content_type="application/json").status_code == 401
    assert (success(), invalid(), hashes()) == (before[0] + 1, before[1] + 1, before[2] + 3)


@pytest.mark.parametrize(
    ("failure", "status", "outcome"), [(StoreError("database down"), 503, "unavailable"), (RuntimeError("a bug"), 500, "internal")]
)
def test_a_failed_login_is_counted_under_the_code_it_was_answered_with(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, failure: Exception, status: int, outcome: str
) -> None:
    assert outcome in metrics.LOGIN_OUTCOMES
    failed = counted("auth", "flashsale_logins_total", outcome=outcome)
    before = failed()

    def fail(_email: str) -> None:
        raise failure

    monkeypatch.setattr(ctx.store, "get_user_by_email", fail)
    creds = {"email": "obs@example.com", "password": "correct horse"}
    answer = function_client("auth").post("/login", data=json.dumps(creds), content_type="application/json")
    assert (answer.status_code, answer.get_json()["code"]) == (status, outcome)
    assert failed() == before + 1


def test_dependency_errors(ctx: Context, redis_server: RedisServer) -> None:
    ctx.store.create_sale(SKU, 3, 1, None)
    redis_errors = counted("stock", "flashsale_dependency_errors_total", dependency="redis")
    database_errors = counted("stock", "flashsale_dependency_errors_total", dependency="database")
    before = redis_errors(), database_errors()
    redis_server.stop()
    assert function_client("stock").get(f"/stock/{SKU}").status_code == 200  # the database answers instead
    assert redis_errors() == before[0] + 1
    ctx.store.close()
    ctx.store.stock_level = _failing
    ctx.stock._local.clear()
    ctx.redis._open_until = 0.0
    answer = function_client("stock").get(f"/stock/{SKU}")
    assert answer.status_code == 503
    assert database_errors() == before[1] + 1


def _failing(sku: str) -> None:
    from shared.errors import StoreError

    raise StoreError("the database is gone")


def test_the_api_spec_documents_metrics_on_every_function(ctx: Context) -> None:
    from tests import openapi

    path = openapi.spec()["paths"]["/metrics"]
    assert {server["url"][-4:] for server in path["servers"]} == {"8081", "8082", "8083"}
    assert "text/plain" in path["get"]["responses"]["200"]["content"]
    for function in ("auth", "stock", "order"):
        answer = function_client(function).get("/metrics")
        assert answer.status_code == 200 and answer.mimetype == "text/plain"
        assert function_client(function).post("/metrics").status_code == 405


def test_metrics_off_counts_nothing(ctx: Context, mint: Mint) -> None:
    """METRICS=false is for measuring what counting costs (make bench): the same requests, no counts."""
    from shared import context as context_module

    ctx.store.create_sale(SKU, 1, 1, None)
    requests = counted("order", "flashsale_http_requests_total", function="order", route="/orders")
    orders = counted("order", "flashsale_orders_total", sku=SKU)
    before = requests(), orders()
    quiet = context_module.reset(ctx.settings.replace(metrics=False))
    try:
        assert buy(function_client("order"), mint()[1]).status_code == 201
        assert buy(function_client("order"), mint()[1]).status_code == 409
    finally:
        quiet.store.close()
        context_module.reset(ctx.settings)
    assert (requests(), orders()) == before


@pytest.mark.parametrize("forwarded", [{"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}])
def test_metrics_are_not_served_to_a_request_that_came_through_a_proxy(ctx: Context, forwarded: dict[str, str]) -> None:
    # On Knative every request from outside the pod passes queue-proxy, which adds X-Forwarded-For;
    # Prometheus scrapes the pod's port directly and sends neither header.
    for function in ("auth", "stock", "order", "events"):
        client = function_client(function)
        hidden = client.get("/metrics", headers=forwarded)
        assert hidden.status_code == 404 and hidden.get_json()["code"] == "not_found"
        assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("failure", "status", "outcome"), [(StoreError("database down"), 503, "unavailable"), (RuntimeError("a bug"), 500, "internal")]
)
def test_a_failed_order_is_counted_under_the_code_it_was_answered_with(
    ctx: Context, mint: Mint, monkeypatch: pytest.MonkeyPatch, failure: Exception, status: int, outcome: str
) -> None:
    """A bug was counted "unavailable", as if the database had failed, while the buyer was answered 500 internal."""
    assert outcome in metrics.ORDER_OUTCOMES
    ctx.store.create_sale(SKU, 2, 1, None)
    failed = counted("order", "flashsale_orders_total", sku=SKU, outcome=outcome)
    before = failed()

    def fail(*_args: object, **_kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(ctx.store, "place_orders", fail)
    answer = buy(function_client("order"), mint()[1])
    assert (answer.status_code, answer.get_json()["code"]) == (status, outcome)
    assert failed() == before + 1


def test_sold_out_answers_read_the_sales_stock_at_most_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    # Bug caught: every loser's press reading the sale for a gauge that changes only when the sale does.
    reads: list[str] = []
    units = {"gauge-sku": 5}

    def units_of(sku: str) -> int:
        reads.append(sku)
        return units[sku]

    clock = [1000.0]
    monkeypatch.setattr("shared.metrics.time.monotonic", lambda: clock[0])
    observe = metrics.order_observer(units_of)
    observe("gauge-sku", "confirmed")
    observe("gauge-sku", "confirmed")
    assert len(reads) == 2  # a sale's winners: each reads (at most its stock of them)
    for _ in range(1000):
        observe("gauge-sku", "sold_out")
    assert len(reads) == 2  # read by the confirmed one just now
    assert metrics.REGISTRY.get_sample_value("flashsale_sale_units", {"sku": "gauge-sku"}) == 5
    units["gauge-sku"] = 7  # the sale's stock changed
    clock[0] += metrics.UNITS_READ_SECONDS
    for _ in range(1000):
        observe("gauge-sku", "sold_out")
    assert len(reads) == 3
    assert metrics.REGISTRY.get_sample_value("flashsale_sale_units", {"sku": "gauge-sku"}) == 7
    assert metrics.REGISTRY.get_sample_value("flashsale_orders_total", {"sku": "gauge-sku", "outcome": "sold_out"}) == 2000


def test_a_refusal_from_memory_reads_nothing_for_the_gauge(ctx: Context, mint: Mint, monkeypatch: pytest.MonkeyPatch) -> None:
    # Bug caught: a sold_out answered from memory read the sale from the database for flashsale_sale_units once
    # a second (its cached copy lapsed), a read on the worker's one database thread, queued behind batch writes.
    monkeypatch.setattr("shared.ordering.SALE_CACHE_SECONDS", 0.0)  # the worker's copy of the sale lapses as it is read
    ctx.store.create_sale(SKU, 1, 1, None)
    client = function_client("order")
    assert buy(client, mint()[1]).status_code == 201
    assert buy(client, mint()[1]).status_code == 409  # the worker now remembers the sale sold out
    monkeypatch.setattr("shared.metrics.UNITS_READ_SECONDS", 0.0)  # and the gauge would read at every answer
    reads: list[str] = []
    real = ctx.store.get_sale

    def counted_get_sale(sku: str) -> object:
        reads.append(sku)
        return real(sku)

    monkeypatch.setattr(ctx.store, "get_sale", counted_get_sale)
    losers = [mint()[1] for _ in range(5)]
    answers = [buy(client, token).status_code for token in losers]
    assert answers == [409] * 5
    assert reads == []
