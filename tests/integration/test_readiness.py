"""Ready means able to serve: /readyz fails for the database and the keys, never for Redis.

With redis-server killed, every function keeps answering from the database and
stays ready; Redis shows as degraded in metrics (and, with the shared/http.py
change described in the report, in the /readyz body).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.demo import call
from ops.devstack import RedisServer, Stack, local_stack
from ops.watch import fetch
from shared import context
from shared.settings import Settings
from shared.store import open_store
from tests.clients import function_client
from tests.conftest import make_settings

pytestmark = pytest.mark.integration
FUNCTIONS = ("auth", "stock", "order", "events")
ENV = {
    "WORKERS": "1",
    "BCRYPT_ROUNDS": "4",
    "LOG_LEVEL": "WARNING",
    "REDIS_TIMEOUT_SECONDS": "0.2",
    "REDIS_RETRY_AFTER_SECONDS": "0.5",
}
# functions/events/main.py still builds its readiness by hand (owned elsewhere): see the report for its two lines.


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, RedisServer]]:
    with local_stack(tmp_path_factory.mktemp("readiness"), functions=FUNCTIONS, extra_env=ENV) as (stack, redis):
        assert redis is not None
        yield stack, redis


@pytest.fixture
def redis_killed(running: tuple[Stack, RedisServer]) -> Iterator[Stack]:
    stack, redis = running
    redis.stop()
    try:
        yield stack
    finally:
        redis.start()  # same port: the stack finds it again


def readyz(stack: Stack, function: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(stack.url(function) + "/readyz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def redis_degraded(stack: Stack, function: str) -> float:
    return fetch(stack.url(function), timeout=10).total("flashsale_dependency_degraded", dependency="redis")


def test_with_redis_killed_logins_stock_reads_and_orders_work_on_the_database(redis_killed: Stack) -> None:
    stack = redis_killed
    store = open_store(Settings.from_env(stack.env))
    sku = f"no-redis-{uuid.uuid4().hex[:6]}"
    store.create_sale(sku, 3, 1, None)
    credentials = {"email": f"{sku}@test.flashsale.dev", "password": "correct horse battery staple"}
    assert call("POST", stack.url("auth") + "/register", credentials)[0] == 201
    status, session = call("POST", stack.url("auth") + "/login", credentials)
    assert status == 200, session
    status, level = call("GET", stack.url("stock") + f"/stock/{sku}")
    assert (status, level["available"]) == (200, 3)
    status, order = call("POST", stack.url("order") + "/orders", {"sku": sku}, session["access_token"], "key-1")
    assert (status, order.get("status")) == (201, "confirmed"), order
    assert store.sale_stats(sku).sold == 1
    store.close()


@pytest.mark.parametrize("function", FUNCTIONS)
def test_with_redis_killed_every_function_stays_ready_and_says_redis_is_degraded(redis_killed: Stack, function: str) -> None:
    status, body = readyz(redis_killed, function)
    assert status == 200, body
    assert body["checks"]["database"] == "ok" and "redis" in body["checks"]
    assert redis_degraded(redis_killed, function) == 1  # the probe's finding, for dashboards and alerts


def test_redis_back_is_no_longer_degraded(running: tuple[Stack, RedisServer]) -> None:
    stack, redis = running
    redis.stop()
    try:
        assert readyz(stack, "stock")[0] == 200
        assert redis_degraded(stack, "stock") == 1
    finally:
        redis.start()
    assert readyz(stack, "stock")[0] == 200
    assert redis_degraded(stack, "stock") == 0


def test_the_readyz_body_says_redis_is_degraded(redis_killed: Stack) -> None:
    status, body = readyz(redis_killed, "order")
    assert status == 200 and body["status"] == "degraded" and body["checks"]["redis"].startswith("degraded")


# What does make a function unready (in process: no server needed) ----------------------------
@pytest.mark.parametrize("function", ["auth", "stock", "order"])
def test_a_database_that_does_not_answer_makes_a_function_unready(
    tmp_path: Path, redis_url: str, keys: tuple[Path, Path], function: str
) -> None:
    (tmp_path / "a-directory").mkdir()  # not a database file: opening it fails
    context.reset(make_settings(tmp_path, redis_url, keys, DATABASE_URL=f"sqlite:///{tmp_path / 'a-directory'}"))
    unready = function_client(function).get("/readyz")
    assert unready.status_code == 503 and unready.get_json()["checks"]["database"].startswith("error")


@pytest.mark.parametrize(("function", "key"), [("auth", "signing_key"), ("order", "public_key")])
def test_a_key_that_cannot_be_read_makes_its_function_unready(
    tmp_path: Path, redis_url: str, keys: tuple[Path, Path], function: str, key: str
) -> None:
    missing = str(tmp_path / "no-such-key.pem")
    ctx = context.reset(make_settings(tmp_path, redis_url, keys, JWT_PRIVATE_KEY_FILE=missing, JWT_PUBLIC_KEY_FILE=missing))
    unready = function_client(function).get("/readyz")
    assert unready.status_code == 503 and unready.get_json()["checks"][key].startswith("error")
    ctx.store.close()
