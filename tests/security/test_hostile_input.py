"""Hostile input the other suites do not already send: each a clear 4xx problem, never a crash, never a side effect.

tests/integration/test_errors.py covers order bodies and tokens and
test_auth_api.py bad registrations; this file fills the gaps: /login with the
same tricks, content types and broken JSON on auth, unicode look-alikes in
emails, validation anchors, JSON numbers, and bodies streamed without a length
through real gunicorn.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest
from werkzeug.test import TestResponse

from ops.devstack import Stack
from ops.loadusers import mint_buyers
from shared import validation
from shared.context import Context
from shared.errors import InvalidRequest
from shared.settings import Settings
from tests import openapi
from tests.clients import bearer, function_client
from tests.conftest import Mint

pytestmark = pytest.mark.integration
SKU = "iphone-17"
ADA = {"email": "ada@example.com", "password": "correct horse battery"}


def send(function: str, path: str, data: bytes, content_type: str | None = "application/json", **headers: str) -> TestResponse:
    client = function_client(function)
    response = client.post(path, data=data, headers={**({"Content-Type": content_type} if content_type else {}), **headers})
    openapi.check(path, "POST", response.status_code, response.content_type, response.data)
    assert "Traceback" not in response.get_data(as_text=True)
    return response


@pytest.fixture
def ada(ctx: Context) -> Context:
    assert send("auth", "/register", json.dumps(ADA).encode()).status_code == 201
    return ctx


@pytest.mark.parametrize(
    "body",
    [
        {"email": {"$gt": ""}, "password": "correct horse battery"},
        {"email": "ada@example.com", "password": {"$ne": None}},
        {"email": ["ada@example.com"], "password": "correct horse battery"},
        {"email": "ada@example.com", "password": "correct horse battery", "$where": "1"},
        {"email": "ada@example.com", "password": "x" * 73},
        {"email": "ada@example.com", "password": "é" * 37},  # 37 characters, 74 bytes
        {"email": "ada@example.com", "password": "correct horse\x00anything"},
        {"email": "ada@example.com", "password": ""},
    ],
)
def test_login_refuses_what_register_refuses(ada: Context, body: dict[str, object]) -> None:
    response = send("auth", "/login", json.dumps(body).encode())
    assert response.status_code == 400 and response.get_json()["code"] == "invalid_request", response.json


@pytest.mark.parametrize("path", ["/login", "/register"])
@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (json.dumps(ADA).encode(), "text/plain", 415),
        (json.dumps(ADA).encode(), None, 415),
        (json.dumps(ADA).encode(), "multipart/form-data; boundary=x", 415),
        (b"email=ada%40example.com&password=x", "application/x-www-form-urlencoded", 415),
        (b'{"email": "ada@example.com", "password": "correct horse battery"', "application/json", 400),
        (b"\xef\xbb\xbf" + json.dumps(ADA).encode(), "application/json", 400),  # a byte-order mark
        (json.dumps(ADA).encode() + b" trailing", "application/json", 400),
        (b'{"email": "ada@example.com", "password": NaN}', "application/json", 400),
        (b'{"email": "a@b.co", "email": {"$gt": ""}, "password": "correct horse battery"}', "application/json", 400),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400),
        (b"null", "application/json", 400),
        (b"", "application/json", 400),
        ('{"email": "ada@example.com", "password": "caf\u00e9 au lait"}'.encode("latin-1"), "application/json", 400),
        (json.dumps({**ADA, "password": "x" * 20_000}).encode(), "application/json", 413),
    ],
)
def test_auth_bodies(ada: Context, path: str, data: bytes, content_type: str | None, status: int) -> None:
    response = send("auth", path, data, content_type)
    assert response.status_code == status, response.json
    assert ada.store.get_user_by_email("a@b.co") is None


@pytest.mark.parametrize(
    "email",
    [
        "ada\uff20example.com",  # full-width commercial at
        "ada\u200b@example.com",  # zero-width space
        "\u202eada@example.com",  # right-to-left override
        "ada@exa\u0301mple.com",  # combining accent
        "ada@xn--exmple-cua.com\u0000",  # NUL after a punycode domain
        "\u0130da@example.com",  # dotted capital I: lower() makes it two characters
        "ada@example.com\nbcc: eve@example.com",  # header injection
        "ada@[127.0.0.1]",
        "a" * 65 + "@example.com",  # local part over 64
    ],
)
def test_unicode_and_injection_tricks_in_emails_are_refused(ctx: Context, email: str) -> None:
    response = send("auth", "/register", json.dumps({"email": email, "password": "correct horse battery"}).encode())
    assert response.status_code == 400 and response.get_json()["errors"][0]["field"] == "email", response.json


def test_a_kelvin_sign_folds_into_the_plain_ascii_account(ctx: Context) -> None:
    """str.lower() turns U+212A (Kelvin) into "k": it cannot make a look-alike second account, only the same one."""
    assert (
        send("auth", "/register", json.dumps({"email": "kate@example.com", "password": "correct horse battery"}).encode()).status_code
        == 201
    )
    twin = send("auth", "/register", json.dumps({"email": "\u212aate@example.com", "password": "another password"}).encode())
    assert twin.status_code == 409 and twin.get_json()["code"] == "email_taken"


@pytest.mark.parametrize("sku", ["iphone-17\n", "iphone-17\r\n", "\niphone-17"])
def test_a_line_break_does_not_slip_past_the_sku_pattern(ctx: Context, mint: Mint, sku: str) -> None:
    """Python's ``$`` also matches before a final newline; the spec's pattern (ECMA) does not."""
    ctx.store.create_sale(SKU, 5, 1, None)
    response = send("order", "/orders", json.dumps({"sku": sku}).encode(), **bearer(mint()[1]))
    assert response.status_code == 400 and response.get_json()["errors"][0]["field"] == "sku", response.json
    with pytest.raises(InvalidRequest):
        validation.sku(sku)


def test_a_path_with_a_line_break_is_a_problem(ctx: Context) -> None:
    """The route takes any segment; the sku's pattern then refuses it: 400, as the spec's Sku parameter says (not 404)."""
    response = function_client("stock").get("/stock/iphone-17%0A")
    assert response.status_code == 400 and response.content_type == "application/problem+json", response.data
    assert response.get_json()["errors"][0]["field"] == "sku"
    openapi.check("/stock/{sku}", "GET", response.status_code, response.content_type, response.data)


@pytest.mark.parametrize(("method", "path"), [("HEAD", "/stock/iphone-17%0A"), ("GET", "/stock/%C3%A9%0A"), ("HEAD", "/stock/%C3%A9%0A")])
def test_a_line_break_is_a_400_by_any_method_in_any_alphabet(ctx: Context, method: str, path: str) -> None:
    """HEAD and a non-ASCII path took functions-framework's own route, which matches no line break: 404 where the spec says 400."""
    response = function_client("stock").open(path, method=method)
    assert response.status_code == 400 and response.content_type == "application/problem+json", response.data
    assert response.data == b"" if method == "HEAD" else response.get_json()["errors"][0]["field"] == "sku"


def test_a_path_ending_in_a_line_break_is_not_the_route(ctx: Context, mint: Mint) -> None:
    """Python's ``$`` matches before a final line break: "/orders\n" must not place an order."""
    ctx.store.create_sale(SKU, 5, 1, None)
    headers = {"Content-Type": "application/json", **bearer(mint()[1])}
    response = function_client("order").post("/orders%0A", data=json.dumps({"sku": SKU}).encode(), headers=headers)
    assert response.status_code == 404 and response.get_json()["code"] == "not_found", response.data
    assert ctx.store.buyer_units(SKU) == {}


@pytest.mark.parametrize(
    ("quantity", "status"),
    [
        (b"1.0", 201),
        (b"1e0", 201),
        (b"1.5", 400),
        (b"1001", 400),
        (b"100000000000000000000", 400),
        (b"-9223372036854775808", 400),
        (b"1e308", 400),
    ],
)
def test_json_numbers(ctx: Context, mint: Mint, quantity: bytes, status: int) -> None:
    """JSON has one number type: 1.0 is the integer 1 (as the spec's "integer" says), anything else out of 1..1000 is refused."""
    ctx.store.create_sale(SKU, 5, 5, None)
    user_id, token = mint()
    response = send("order", "/orders", b'{"sku": "iphone-17", "quantity": ' + quantity + b"}", **bearer(token))
    assert response.status_code == status, response.json
    if status == 201:
        assert response.get_json()["quantity"] == 1 and ctx.store.sale_stats(SKU).sold == 1
    else:
        assert ctx.store.list_orders(user_id) == []


@pytest.mark.parametrize(("function", "path"), [("auth", "/register"), ("order", "/orders")])
def test_a_body_without_a_length_is_still_capped(stack: Stack, stack_settings: Settings, function: str, path: str) -> None:
    """Chunked transfer carries no Content-Length: the limit must hold on what is read, not on what is announced."""
    token = mint_buyers(stack_settings, 1, prefix="chunked-").tokens[0]
    parts = urlsplit(stack.url(function))
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    chunks = (b'{"pad": "' + b"x" * 4096 if i == 0 else b"x" * 4096 for i in range(8))  # 32 KiB, twice the limit
    try:
        connection.request("POST", path, body=chunks, headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                           encode_chunked=True)  # fmt: skip
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 413, body
    assert response.getheader("Content-Type", "").startswith("application/problem+json")
    assert json.loads(body)["code"] == "payload_too_large"
