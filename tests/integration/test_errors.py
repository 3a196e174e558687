"""Whatever a client sends, the answer is a documented problem+json, never a 500 or a stack trace."""

from __future__ import annotations

from typing import NoReturn

import pytest

from shared.context import Context
from tests import openapi
from tests.clients import bearer, function_client
from tests.conftest import Mint

pytestmark = pytest.mark.integration
SKU = "iphone-17"


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b'{"sku": "iphone-17"', "application/json", 400, "invalid_request"),
        (b"[1, 2]", "application/json", 400, "invalid_request"),
        (b'"iphone-17"', "application/json", 400, "invalid_request"),
        (b'{"sku": "iphone-17", "quantity": NaN}', "application/json", 400, "invalid_request"),
        (b'{"sku": "iphone-17", "quantity": 1e999}', "application/json", 400, "invalid_request"),
        (b'{"sku": "iphone-17", "quantity": ' + b"9" * 5000 + b"}", "application/json", 400, "invalid_request"),
        (b'{"sku": "iphone-17", "quantity": 0}', "application/json", 400, "invalid_request"),
        (b'{"sku": "iphone-17", "quantity": -1}', "application/json", 400, "invalid_request"),
        (b'{"sku": "iphone-17", "quantity": 1.5}', "application/json", 400, "invalid_request"),
        (b'{"sku": "iphone-17", "quantity": true}', "application/json", 400, "invalid_request"),
        (b'{"sku": "iphone-17", "quantity": "1"}', "application/json", 400, "invalid_request"),
        (b'{"sku": {"$ne": null}}', "application/json", 400, "invalid_request"),
        (b'{"sku": "../../etc/passwd"}', "application/json", 400, "invalid_request"),
        (b'{"sku": "iphone-17", "price": 0}', "application/json", 400, "invalid_request"),
        (b"\xff\xfe{}", "application/json", 400, "invalid_request"),
        (b"[" * 100000 + b"]" * 100000, "application/json", 413, "payload_too_large"),
        (b"sku=iphone-17", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"sku": "iphone-17"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"sku": "' + b"a" * 20000 + b'"}', "application/json", 413, "payload_too_large"),
    ],
)
def test_bad_order_bodies(ctx: Context, mint: Mint, data: bytes, content_type: str, status: int, code: str) -> None:
    ctx.store.create_sale(SKU, 5, 1, None)
    response = function_client("order").post("/orders", data=data, content_type=content_type, headers=bearer(mint()[1]))
    assert (response.status_code, response.get_json()["code"]) == (status, code), response.json
    openapi.check("/orders", "POST", response.status_code, response.content_type, response.data)
    assert "Traceback" not in response.get_data(as_text=True)
    assert ctx.store.sale_stats(SKU).sold == 0


def test_deeply_nested_json_within_the_size_limit(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 5, 1, None)
    data = b"[" * 5000 + b"]" * 5000
    response = function_client("order").post("/orders", data=data, content_type="application/json", headers=bearer(mint()[1]))
    assert response.status_code == 400 and response.get_json()["code"] == "invalid_request"


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not.a.token", "Bearer " + "a" * 5000, "bearer x.y.z"],
)
def test_missing_or_malformed_tokens(ctx: Context, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = function_client("order").post("/orders", json={"sku": SKU}, headers=headers)
    assert response.status_code == 401 and response.get_json()["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    openapi.check("/orders", "POST", response.status_code, response.content_type, response.data)


def test_bad_idempotency_key(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 5, 1, None)
    headers = bearer(mint()[1], **{"Idempotency-Key": "x" * 300})
    response = function_client("order").post("/orders", json={"sku": SKU}, headers=headers)
    assert response.status_code == 400 and response.get_json()["errors"][0]["field"] == "Idempotency-Key"


@pytest.mark.parametrize("function", ["auth", "stock", "order"])
def test_unknown_routes_and_methods(ctx: Context, function: str) -> None:
    client = function_client(function)
    missing = client.get("/nothing/here")
    assert missing.status_code == 404 and missing.get_json()["code"] == "not_found"
    assert missing.content_type == "application/problem+json"
    wrong = client.delete("/healthz")
    assert wrong.status_code == 405 and wrong.get_json()["code"] == "method_not_allowed" and wrong.headers["Allow"] == "GET, HEAD"
    assert wrong.content_type == "application/problem+json"


@pytest.mark.parametrize(("function", "path"), [("auth", "/register"), ("auth", "/login"), ("order", "/orders")])
def test_wrong_method_on_a_known_route(ctx: Context, function: str, path: str) -> None:
    response = function_client(function).put(path, json={})
    assert response.status_code == 405 and response.get_json()["code"] == "method_not_allowed" and response.headers["Allow"]


@pytest.mark.parametrize("function", ["auth", "stock", "order"])
def test_health_and_readiness(ctx: Context, function: str) -> None:
    client = function_client(function)
    health = client.get("/healthz")
    openapi.check("/healthz", "GET", health.status_code, health.content_type, health.data)
    assert health.json == {"status": "ok"}
    ready = client.get("/readyz")
    openapi.check("/readyz", "GET", ready.status_code, ready.content_type, ready.data)
    assert ready.status_code == 200 and set(ready.get_json()["checks"]) >= {"database", "redis"}


def test_request_id_is_kept_or_made(ctx: Context) -> None:
    client = function_client("stock")
    assert client.get("/healthz", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"] == "abc-123"
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert client.get("/healthz", headers={"traceparent": trace}).headers["X-Request-Id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    made = client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"}).headers["X-Request-Id"]
    assert made and " " not in made


def test_an_unexpected_error_is_a_problem_without_internals(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 5, 1, None)

    def explode(*args: object, **kwargs: object) -> NoReturn:
        raise RuntimeError("secret internal detail")

    ctx.orders.place = explode
    response = function_client("order").post("/orders", json={"sku": SKU}, headers=bearer(mint()[1]))
    assert response.status_code == 500 and response.get_json()["code"] == "internal"
    assert "secret internal detail" not in response.get_data(as_text=True)
