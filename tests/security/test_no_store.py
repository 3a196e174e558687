"""``Cache-Control: no-store`` on every answer auth gives, errors included.

Auth answers carry tokens, account data or whether an email exists; a shared
cache or the browser's back button must keep none of them. The one exception,
on purpose, is the public key set, which is public and may be cached.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from ops.devstack import Stack
from shared import context
from shared.context import Context
from tests.clients import function_client
from tests.conftest import make_settings

pytestmark = pytest.mark.integration
CREDENTIALS = {"email": "ada@example.com", "password": "correct horse battery"}


def post(client: FlaskClient, path: str, body: object, content_type: str = "application/json") -> TestResponse:
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post(path, data=data, content_type=content_type)


ANSWERS: dict[str, Callable[[FlaskClient], TestResponse]] = {
    "register 201": lambda c: post(c, "/register", {"email": "new@example.com", "password": "correct horse battery"}),
    "register 400": lambda c: post(c, "/register", {"email": "not-an-email", "password": "correct horse battery"}),
    "register 409": lambda c: post(c, "/register", CREDENTIALS),
    "register 413": lambda c: post(c, "/register", {"email": "ada@example.com", "password": "x" * 20_000}),
    "register 415": lambda c: post(c, "/register", b"email=ada", "application/x-www-form-urlencoded"),
    "login 200": lambda c: post(c, "/login", CREDENTIALS),
    "login 400": lambda c: post(c, "/login", b"{broken", "application/json"),
    "login 401": lambda c: post(c, "/login", {"email": "ada@example.com", "password": "wrong horse battery"}),
    "login 405": lambda c: c.put("/login", json=CREDENTIALS),
    "unknown path 404": lambda c: c.get("/admin"),
    "healthz 200": lambda c: c.get("/healthz"),
    "readyz 200": lambda c: c.get("/readyz"),
}


@pytest.fixture
def auth(ctx: Context) -> FlaskClient:
    client = function_client("auth")
    assert post(client, "/register", CREDENTIALS).status_code == 201
    return client


@pytest.mark.parametrize("answer", sorted(ANSWERS))
def test_every_auth_answer_is_no_store(auth: FlaskClient, answer: str) -> None:
    response = ANSWERS[answer](auth)
    assert response.status_code == int(answer.rsplit(" ", 1)[1]), response.get_data(as_text=True)
    assert response.headers.get("Cache-Control") == "no-store"


def test_rate_limited_login_is_no_store(tmp_path: Path, redis_url: str, keys: tuple[Path, Path]) -> None:
    context.reset(make_settings(tmp_path, redis_url, keys, LOGIN_RATE_PER_ACCOUNT="1"))
    client = function_client("auth")
    post(client, "/login", CREDENTIALS)
    limited = post(client, "/login", CREDENTIALS)
    assert limited.status_code == 429 and limited.headers["Retry-After"]
    assert limited.headers.get("Cache-Control") == "no-store"


def test_unready_and_internal_errors_are_no_store(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    from ops.devstack import free_port

    # Unready because auth cannot read its signing key (Redis down alone leaves it ready: it serves from the database).
    missing_key = str(tmp_path / "no-signing-key.pem")
    ctx = context.reset(
        make_settings(tmp_path, f"redis://127.0.0.1:{free_port()}/0", keys, REDIS_TIMEOUT_SECONDS="0.2", JWT_PRIVATE_KEY_FILE=missing_key)
    )
    client = function_client("auth")
    unready = client.get("/readyz")
    assert unready.status_code == 503 and unready.headers.get("Cache-Control") == "no-store"

    def explode(*args: object, **kwargs: object) -> NoReturn:
        raise RuntimeError("boom")

    ctx.accounts.login = explode
    broken = post(client, "/login", CREDENTIALS)
    assert broken.status_code == 500 and broken.headers.get("Cache-Control") == "no-store"


def test_the_public_key_set_is_the_one_cacheable_answer(auth: FlaskClient) -> None:
    jwks = auth.get("/.well-known/jwks.json")
    assert jwks.status_code == 200 and jwks.headers["Cache-Control"].startswith("public")
    assert set(jwks.get_json()) == {"keys"} and all(set(k) == {"kty", "crv", "x", "kid", "alg", "use"} for k in jwks.get_json()["keys"])


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/login", {"email": "nobody@example.com", "password": "wrong horse battery"}, 401),
        ("POST", "/register", {"email": "x"}, 400),
        ("GET", "/nothing", None, 404),
        ("DELETE", "/login", None, 405),
    ],
)
def test_no_store_survives_real_gunicorn(stack: Stack, method: str, path: str, body: object, status: int) -> None:
    """Nothing between the function and the client (gunicorn, functions-framework) drops the header."""
    parts = urlsplit(stack.url("auth"))
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == status
    assert response.getheader("Cache-Control") == "no-store"
