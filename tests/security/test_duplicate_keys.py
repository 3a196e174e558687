"""A request body that names a key twice, at any depth, is refused: 400 invalid_request on every function.

Parsers disagree on which of two equal keys wins: Python's json takes the last,
others the first or refuse. With the last winning, ``{"sku": "<unknown>",
"sku": "<real>"}`` placed a confirmed order, while a gateway or WAF that reads
the first value saw another request than the one flashsale acted on. The token
parser already refused duplicate keys; bodies now do too.

Through each function that reads a JSON body: auth (register, login) and order
(the press answered before the framework, and the framework's route, which a
chunked body reaches). stock answers only GET (no body), and events reads
CloudEvents from the broker through functions-framework, not a client's body.
"""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from shared.context import Context
from shared.http import ShortcutRequest, read_json
from tests import openapi
from tests.clients import bearer, function_client
from tests.conftest import Mint

pytestmark = pytest.mark.integration
SKU = "dup-phone"

# Each repeats a key: at the top, in a nested object, in an object inside a list, or under another spelling
# of the same key (a JSON escape decodes to the same name).
REPEATS = {
    "top level": '{"sku": "no-such-phone", "sku": "%s"}',
    "nested object": '{"sku": "%s", "quantity": 1, "extra": {"a": 1, "a": 2}}',
    "object in a list": '{"sku": "%s", "extra": [{"a": 1}, {"b": 1, "b": 1}]}',
    "escaped spelling": '{"sku": "no-such-phone", "\\u0073ku": "%s"}',
}


def refused(response: TestResponse, path: str) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["code"] == "invalid_request"
    assert "repeats a key" in response.get_json()["detail"]
    openapi.check(path, "POST", response.status_code, response.content_type, response.data)


@pytest.fixture
def order(ctx: Context) -> FlaskClient:
    ctx.store.create_sale(SKU, 5, 1, None)
    return function_client("order")


@pytest.mark.parametrize("shape", REPEATS)
def test_an_order_body_with_a_repeated_key_is_refused_and_sells_nothing(order: FlaskClient, ctx: Context, mint: Mint, shape: str) -> None:
    # Bug caught: the last "sku" won, and the order was placed for the real sale (201).
    _, token = mint()
    response = order.post("/orders", data=REPEATS[shape] % SKU, content_type="application/json", headers=bearer(token))
    refused(response, "/orders")
    assert ctx.store.sale_stats(SKU).sold == 0


def test_the_frameworks_order_route_refuses_it_too(order: FlaskClient, ctx: Context, mint: Mint) -> None:
    """A chunked body is left to functions-framework's route by the shortcut; the route reads it through the same parser."""
    _, token = mint()
    response = order.post(
        "/orders",
        data=REPEATS["top level"] % SKU,
        content_type="application/json",
        headers=bearer(token, **{"Transfer-Encoding": "chunked"}),
        environ_overrides={"wsgi.input_terminated": True},  # as gunicorn marks a chunked body it de-chunks
    )
    refused(response, "/orders")
    assert ctx.store.sale_stats(SKU).sold == 0


@pytest.mark.parametrize("route", ["/register", "/login"])
def test_an_auth_body_with_a_repeated_key_is_refused(ctx: Context, route: str) -> None:
    auth = function_client("auth")
    assert auth.post("/register", json={"email": "ada@example.com", "password": "correct horse"}).status_code == 201
    body = '{"email": "ada@example.com", "password": "wrong horse 1", "password": "correct horse"}'
    refused(auth.post(route, data=body, content_type="application/json"), route)


def test_a_body_without_repeats_is_still_read(order: FlaskClient, mint: Mint) -> None:
    """The other side: an ordinary press sells, and one key in two different objects is no repeat."""
    _, token = mint()
    body = json.dumps({"sku": SKU, "quantity": 1})
    assert order.post("/orders", data=body, content_type="application/json", headers=bearer(token)).status_code == 201
    nested = b'{"a": {"k": 1}, "b": [{"k": 2}, {"k": 3}]}'
    request = ShortcutRequest({"REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/json"}, nested)
    assert read_json(request, 1024) == {"a": {"k": 1}, "b": [{"k": 2}, {"k": 3}]}
