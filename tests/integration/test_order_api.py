"""place-order and stock-check through functions-framework, on a real SQLite file and a real redis-server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis as redis_lib
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from shared import context as context_module
from shared.context import Context
from shared.gate import gate_key
from shared.store import open_store
from tests import openapi
from tests.clients import bearer, function_client
from tests.conftest import Mint

pytestmark = pytest.mark.integration
SKU = "iphone-17"


def buy(client: FlaskClient, token: str, body: dict[str, object] | None = None, key: str | None = None) -> TestResponse:
    headers = bearer(token, **({"Idempotency-Key": key} if key else {}))
    response = client.post("/orders", data=json.dumps(body or {"sku": SKU}), content_type="application/json", headers=headers)
    openapi.check("/orders", "POST", response.status_code, response.content_type, response.data)
    return response


def stock(client: FlaskClient, sku: str = SKU) -> TestResponse:
    response = client.get(f"/stock/{sku}")
    openapi.check("/stock/{sku}", "GET", response.status_code, response.content_type, response.data)
    return response


def test_a_sale_sells_exactly_its_stock_first_come_first_served(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 3, 1, None)
    client = function_client("order")
    answers = [buy(client, mint()[1]) for _ in range(5)]
    assert [a.status_code for a in answers] == [201, 201, 201, 409, 409]
    assert [a.get_json()["ticket"] for a in answers[:3]] == [1, 2, 3]
    assert all(a.get_json()["status"] == "confirmed" and a.get_json()["quantity"] == 1 for a in answers[:3])
    assert [a.get_json()["code"] for a in answers[3:]] == ["sold_out", "sold_out"]
    stats = ctx.store.sale_stats(SKU)
    assert stats.sold == 3 and stats.invariants_hold


def test_losers_after_sell_out_are_answered_without_redis_or_database(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 1, 1, None)
    client = function_client("order")
    assert buy(client, mint()[1]).status_code == 201
    assert buy(client, mint()[1]).get_json()["code"] == "sold_out"  # learned from the gate
    ctx.store.close()
    ctx.redis.client.connection_pool.disconnect()
    calls: list[str] = []

    def tripwire(what: str) -> Callable[..., NoReturn]:
        def asked(*args: object, **kwargs: object) -> NoReturn:
            calls.append(what)
            raise AssertionError(f"a loser's refusal asked {what}")

        return asked

    ctx.orders.gate.admit = tripwire("redis")
    ctx.store.place_orders = tripwire("db")
    answer = buy(client, mint()[1])
    assert answer.get_json()["code"] == "sold_out" and calls == []


def test_per_user_limit_and_quantity(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 10, 2, None)
    client = function_client("order")
    _, token = mint()
    assert buy(client, token, {"sku": SKU, "quantity": 2}).status_code == 201
    again = buy(client, token)
    assert again.status_code == 409 and again.get_json()["code"] == "limit_reached"
    too_many = buy(client, mint()[1], {"sku": SKU, "quantity": 3})
    assert too_many.status_code == 409 and too_many.get_json()["code"] == "limit_reached"
    assert ctx.store.sale_stats(SKU).sold == 2


def test_sale_not_started(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 10, 1, datetime.now(UTC) + timedelta(hours=1))
    answer = buy(function_client("order"), mint()[1])
    assert answer.status_code == 409 and answer.get_json()["code"] == "sale_not_started"
    assert ctx.store.sale_stats(SKU).sold == 0


def test_unknown_sku(ctx: Context, mint: Mint) -> None:
    answer = buy(function_client("order"), mint()[1], {"sku": "nothing-here"})
    assert answer.status_code == 404 and answer.get_json()["code"] == "unknown_sku"
    assert stock(function_client("stock"), "nothing-here").get_json()["code"] == "unknown_sku"


def test_idempotency_key_returns_the_same_answer_and_one_order(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 1, 1, None)
    client = function_client("order")
    user_id, token = mint()
    first = buy(client, token, key="retry-1")
    assert buy(client, mint()[1]).get_json()["code"] == "sold_out"
    replay = buy(client, token, key="retry-1")
    assert replay.status_code == 201 and replay.json == first.json
    assert replay.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    conflict = buy(client, token, {"sku": SKU, "quantity": 2}, key="retry-1")
    assert conflict.status_code == 422 and conflict.get_json()["code"] == "idempotency_key_reused"
    assert len(ctx.store.list_orders(user_id)) == 1


def test_list_orders_is_the_callers_only(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 5, 1, None)
    client = function_client("order")
    _, mine = mint()
    _, theirs = mint()
    order = buy(client, mine).json
    buy(client, theirs)
    listed = client.get("/orders", headers=bearer(mine))
    openapi.check("/orders", "GET", listed.status_code, listed.content_type, listed.data)
    assert listed.json == {"orders": [order]}


def test_stock_reflects_sales_within_the_cache_lifetime(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 2, 1, None)
    stock_client, order_client = function_client("stock"), function_client("order")
    first = stock(stock_client)
    assert first.json == {"sku": SKU, "total": 2, "available": 2, "sold_out": False}
    max_age = int(first.headers["Cache-Control"].split("max-age=")[1])
    assert max_age <= ctx.settings.stock_cache_ttl_seconds
    buy(order_client, mint()[1])
    buy(order_client, mint()[1])
    deadline = time.monotonic() + ctx.settings.stock_cache_ttl_seconds + 0.2
    while stock(stock_client).get_json()["available"] != 0:
        assert time.monotonic() < deadline, "stock-check still showed units after one cache lifetime"
        time.sleep(0.05)
    assert stock(stock_client).get_json()["sold_out"] is True


def test_sell_out_shows_on_stock_check_at_once(ctx: Context, mint: Mint) -> None:
    """The order path marks the cache sold out when it learns it; no waiting for the TTL."""
    ctx.store.create_sale(SKU, 1, 1, None)
    stock_client, order_client = function_client("stock"), function_client("order")
    redis = redis_lib.Redis.from_url(ctx.settings.redis_url)
    assert stock(stock_client).get_json()["available"] == 1
    buy(order_client, mint()[1])
    buy(order_client, mint()[1])  # a loser: the worker learns it is sold out
    context_module.reset(ctx.settings)  # a fresh stock worker, no in-process copy
    assert json.loads(redis.get(f"fs:{{{SKU}}}:stock") or b"{}")["available"] == 0
    assert stock(function_client("stock")).get_json()["sold_out"] is True


def test_stock_source_order_local_then_redis_then_database(ctx: Context) -> None:
    ctx.store.create_sale(SKU, 5, 1, None)
    assert ctx.stock.read(SKU).source == "database"
    assert ctx.stock.read(SKU).source == "local"
    fresh = context_module.reset(ctx.settings)
    assert fresh.stock.read(SKU).source == "redis"


def test_orders_are_correct_from_the_database_when_redis_is_down(tmp_path: Path, keys: tuple[Path, Path], mint: Mint) -> None:
    from ops.devstack import free_port
    from tests.conftest import make_settings

    ctx = context_module.reset(make_settings(tmp_path, f"redis://127.0.0.1:{free_port()}/0", keys, REDIS_TIMEOUT_SECONDS="0.2"))
    ctx.store.create_sale(SKU, 2, 1, None)
    client = function_client("order")
    users = [mint() for _ in range(4)]
    codes = [buy(client, token).status_code for _, token in users]
    assert codes == [201, 201, 409, 409]
    assert stock(function_client("stock")).get_json()["available"] == 0
    assert ctx.store.sale_stats(SKU).sold == 2


def test_a_flushed_gate_is_rebuilt_from_the_database(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 3, 1, None)
    client = function_client("order")
    _, repeat = mint()
    assert buy(client, repeat).status_code == 201
    redis = redis_lib.Redis.from_url(ctx.settings.redis_url)
    redis.flushall()
    again = buy(client, repeat)
    assert again.get_json()["code"] == "limit_reached"  # the rebuilt gate remembers the buyer
    state = ctx.gate.state(SKU)
    assert state["remaining"] == "2", state
    assert [buy(client, mint()[1]).status_code for _ in range(3)] == [201, 201, 409]
    assert redis.hget(gate_key(SKU), "remaining") == b"0"
    assert ctx.store.sale_stats(SKU).sold == 3


def test_a_database_failure_after_admission_gives_the_unit_back(ctx: Context, mint: Mint) -> None:
    from shared.errors import StoreError

    ctx.store.create_sale(SKU, 1, 1, None)
    client = function_client("order")
    real = ctx.store.place_orders

    def failing(*args: object, **kwargs: object) -> NoReturn:
        raise StoreError("disk on fire")

    ctx.store.place_orders = failing
    answer = buy(client, mint()[1])
    assert answer.status_code == 503 and answer.get_json()["code"] == "unavailable" and answer.headers["Retry-After"]
    assert ctx.gate.state(SKU)["remaining"] == "1"
    ctx.store.place_orders = real
    assert buy(client, mint()[1]).status_code == 201
    assert ctx.store.sale_stats(SKU).sold == 1


def test_a_press_on_a_cold_gate_another_worker_rebuilds_waits_for_the_gate(ctx: Context, mint: Mint) -> None:
    """Not the database alone: in a crowd, every press but the rebuilder's queued on the one database thread."""
    ctx.store.create_sale(SKU, 3, 1, None)
    redis = redis_lib.Redis.from_url(ctx.settings.redis_url)
    redis.delete(gate_key(SKU))
    redis.set(f"fs:{{{SKU}}}:gate:rebuild", "1", px=5000)  # another worker holds the rebuild
    rebuilt: list[float] = []
    written: list[float] = []
    real = ctx.store.place_orders

    def recorded(*args: Any, **kwargs: Any) -> Any:
        written.append(time.monotonic())
        return real(*args, **kwargs)

    def other_worker() -> None:
        time.sleep(0.3)
        store = open_store(ctx.settings)
        try:
            ctx.gate.rebuild(store, SKU)
        finally:
            store.close()
        rebuilt.append(time.monotonic())
        redis.delete(f"fs:{{{SKU}}}:gate:rebuild")

    ctx.store.place_orders = recorded
    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert buy(function_client("order"), mint()[1]).status_code == 201
    finally:
        thread.join()
    assert rebuilt and written and written[0] >= rebuilt[0], "the press went to the database while the gate was cold"
    assert redis.hget(gate_key(SKU), "remaining") == b"2"  # the gate counted the press


def test_a_cold_gate_nobody_rebuilds_leaves_the_press_to_the_database(ctx: Context, mint: Mint, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import ordering

    monkeypatch.setattr(ordering, "GATE_WARM_SECONDS", 0.2)
    ctx.store.create_sale(SKU, 3, 1, None)
    redis = redis_lib.Redis.from_url(ctx.settings.redis_url)
    redis.delete(gate_key(SKU))
    redis.set(f"fs:{{{SKU}}}:gate:rebuild", "1", px=5000)  # held by a worker that died
    started = time.monotonic()
    assert buy(function_client("order"), mint()[1]).status_code == 201
    assert 0.2 <= time.monotonic() - started < 2.0
    assert ctx.store.sale_stats(SKU).sold == 1 and not redis.exists(gate_key(SKU))
