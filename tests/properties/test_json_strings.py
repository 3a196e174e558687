"""Every string a JSON parser accepts, in every text field of the API: never a 500,
and a 400 problem+json for the strings no text field takes.

JSON strings are any sequence of code points U+0000-U+10FFFF, lone surrogates
included: ``"\\ud800"`` is valid JSON that Python decodes to a ``str`` it cannot
encode as UTF-8 (bcrypt, the database and log lines would fail on it). The
classes every text field refuses, checked here against an oracle of the test's
own (not the one in shared/validation.py):

- NUL (U+0000),
- lone surrogates (U+D800-U+DFFF),
- non-characters (U+FDD0-U+FDEF and U+xFFFE/U+xFFFF in every plane).

The text fields are those of docs/openapi.yaml: email and password of
``/register`` and ``/login``, sku of ``POST /orders`` and of ``GET /stock/{sku}``,
and the field names of every JSON body (a client may send any key); and,
for the events function, the id and sku of an ``order.placed`` in structured
mode (a 500 there would have the broker redeliver it forever). The
``Idempotency-Key`` header is not here: a header cannot carry a JSON string
(WSGI gives it as latin-1 bytes) and its pattern is printable ASCII.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import context as context_module
from shared.context import Context
from shared.events import ORDER_PLACED
from tests import openapi
from tests.clients import bearer, function_client
from tests.conftest import Mint, make_settings

pytestmark = pytest.mark.integration
SKU = "iphone-17"
VALID = {
    "/register": {"email": "ada@example.com", "password": "correct horse battery"},
    "/login": {"email": "ada@example.com", "password": "correct horse battery"},
    "/orders": {"sku": SKU},
}
FUNCTION = {"/register": "auth", "/login": "auth", "/orders": "order"}
BODY_FIELDS = [(path, field) for path, body in VALID.items() for field in body]
EXAMPLES = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def not_text(value: str) -> bool:
    """The test's oracle: NUL, a lone surrogate or a non-character anywhere."""
    return any(code == 0 or 0xD800 <= code <= 0xDFFF or 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE for code in map(ord, value))


# The whole code space, surrogates included (hypothesis leaves category Cs out unless told).
ANY_CHARACTER = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
BAD_CHARACTER = st.one_of(
    st.just("\x00"),
    st.integers(0xD800, 0xDFFF).map(chr),
    st.integers(0xFDD0, 0xFDEF).map(chr),
    st.builds(lambda plane, last: chr(plane << 16 | 0xFFFE | last), st.integers(0, 16), st.integers(0, 1)),
)
# Arbitrary strings rarely hold a bad character, so half the examples splice one in.
JSON_STRINGS = st.one_of(
    st.text(ANY_CHARACTER, max_size=80),
    st.builds(
        lambda head, bad, tail: head + bad + tail, st.text(ANY_CHARACTER, max_size=40), BAD_CHARACTER, st.text(ANY_CHARACTER, max_size=40)
    ),
)


def encode(body: dict[str, Any], raw_utf8: bool) -> bytes:
    """As a client sends it: \\u escapes (the only way to send a lone surrogate), or raw UTF-8 where that can be."""
    if raw_utf8:
        try:
            return json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            pass
    return json.dumps(body).encode("ascii")


@pytest.fixture
def api(tmp_path: Path, redis_url: str, keys: tuple[Path, Path], mint: Mint) -> dict[str, Any]:
    """Clients for auth and order, a sale, a buyer's token, an account; no rate limits (examples come fast)."""
    no_limits = {"LOGIN_RATE_PER_ACCOUNT": "0", "LOGIN_RATE_PER_ADDRESS": "0", "REGISTER_RATE_PER_ADDRESS": "0"}
    ctx: Context = context_module.reset(make_settings(tmp_path, redis_url, keys, **no_limits))
    ctx.store.create_sale(SKU, 1000, 1000, None)
    _, token = mint()
    clients = {"auth": function_client("auth"), "order": function_client("order"), "stock": function_client("stock")}
    assert clients["auth"].post("/register", data=json.dumps(VALID["/register"]), content_type="application/json").status_code == 201
    return {"clients": clients, "token": token}


def post(api: dict[str, Any], path: str, data: bytes) -> Any:
    client: FlaskClient = api["clients"][FUNCTION[path]]
    headers = bearer(api["token"]) if path == "/orders" else {}
    response = client.post(path, data=data, content_type="application/json", headers=headers)
    openapi.check(path, "POST", response.status_code, response.content_type, response.data)  # documented, problem+json if >= 400
    return response


def assert_refused(response: Any, field: str) -> None:
    assert response.status_code == 400, (response.status_code, response.data)
    assert response.content_type.startswith("application/problem+json")
    problem = response.json
    assert problem["code"] == "invalid_request", problem
    assert problem["errors"][0]["field"] == field, problem


@pytest.mark.parametrize(("path", "field"), BODY_FIELDS)
@EXAMPLES
@given(value=JSON_STRINGS, raw_utf8=st.booleans())
def test_every_json_string_in_a_text_field(api: dict[str, Any], path: str, field: str, value: str, raw_utf8: bool) -> None:
    response = post(api, path, encode({**VALID[path], field: value}, raw_utf8))
    assert response.status_code != 500, response.data
    if not_text(value):
        assert_refused(response, field)


@pytest.mark.parametrize("path", list(VALID))
@EXAMPLES
@given(name=JSON_STRINGS, raw_utf8=st.booleans())
def test_every_json_string_as_a_field_name(api: dict[str, Any], path: str, name: str, raw_utf8: bool) -> None:
    response = post(api, path, encode({**VALID[path], name: "x"}, raw_utf8))
    assert response.status_code != 500, response.data
    if not_text(name):
        assert_refused(response, "body")
        assert name not in response.get_data(as_text=True)  # not echoed back


@EXAMPLES
@given(value=JSON_STRINGS)
def test_every_string_as_the_sku_in_the_stock_path(api: dict[str, Any], value: str) -> None:
    # A URL carries bytes: a lone surrogate arrives as the invalid UTF-8 it would be encoded to.
    path = "/stock/" + quote(value.encode("utf-8", "surrogatepass"), safe="")
    response = api["clients"]["stock"].get(path)
    assert response.status_code != 500, response.data
    if response.status_code >= 400:
        assert response.content_type.startswith("application/problem+json"), response.content_type
    if not_text(value) and "/" not in value:
        assert_refused(response, "sku")  # ASCII or not, a line break or not: the read shortcut validates it


@pytest.mark.parametrize(("path", "field"), BODY_FIELDS)
@pytest.mark.parametrize("bad", ["\ud800", "\udfff", "\ud83d", "\x00", "\ufdd0", "\ufffe", "\U0010ffff"])
def test_each_class_of_bad_string_is_a_400(api: dict[str, Any], path: str, field: str, bad: str) -> None:
    """The named cases, always run: the issue's ``"\\ud800"`` password answered 500 on /register and /login."""
    response = post(api, path, encode({**VALID[path], field: f"correct{bad}horse"}, raw_utf8=False))
    assert_refused(response, field)


@pytest.mark.parametrize("where", ["id", "sku"])
@pytest.mark.parametrize("bad", ["\ud800", "\x00", "\uffff"])
def test_an_event_that_is_not_text_is_acknowledged_and_counts_nothing(api: dict[str, Any], where: str, bad: str) -> None:
    """order.placed in structured mode is JSON too: a 500 would have the broker redeliver it forever."""
    event = {"specversion": "1.0", "type": ORDER_PLACED, "source": "/flashsale/order", "id": "evt-1"}
    data = {"sku": SKU, "quantity": 1}
    if where == "id":
        event["id"] = f"evt{bad}"
    else:
        data["sku"] = f"{SKU}{bad}"
    response = function_client("events").post(
        "/", data=json.dumps({**event, "data": data}), headers={"Content-Type": "application/cloudevents+json"}
    )
    assert response.status_code == 200, response.data
    assert context_module.context().sales_feed.counts(SKU) == {}
