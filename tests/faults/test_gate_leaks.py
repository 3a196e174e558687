"""The two wrong refusals the fault scenarios found, pinned down without a crowd.

The gate counts a buyer's unit at admission, before the database writes the
order. If the request then dies (its worker SIGKILLed) or is still in flight
when the same buyer's retry arrives, the gate says ``limit_reached`` for a
buyer who, in the database, holds nothing, or whose order the retry should
simply get back. The database must have the last word on both.
"""

from __future__ import annotations

import json

import pytest
from werkzeug.test import TestResponse

from shared.context import Context
from shared.gate import Admission
from shared.models import request_fingerprint
from tests import openapi
from tests.clients import bearer, function_client
from tests.conftest import Mint

pytestmark = pytest.mark.integration
SKU = "iphone-17"


def buy(token: str, key: str | None = None) -> TestResponse:
    headers = bearer(token, **({"Idempotency-Key": key} if key else {}))
    response = function_client("order").post("/orders", data=json.dumps({"sku": SKU}), content_type="application/json", headers=headers)
    openapi.check("/orders", "POST", response.status_code, response.content_type, response.data)
    return response


def test_an_admission_whose_request_died_does_not_refuse_the_buyer(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 2, 1, None)
    ctx.gate.rebuild(ctx.store, SKU)
    user_id, token = mint()
    assert ctx.gate.admit(SKU, user_id, 1).verdict == "admitted"  # ... and then its worker was killed

    retry = buy(token, key="k1")
    assert retry.status_code == 201, retry.json
    assert [o.order_id for o in ctx.store.list_orders(user_id)] == [retry.get_json()["order_id"]]
    assert buy(mint()[1]).status_code == 201  # the second unit is still sold
    assert ctx.store.sale_stats(SKU).sold == 2


def test_a_retry_racing_its_own_request_gets_the_order_back(ctx: Context, mint: Mint) -> None:
    """Connection 1 is admitted and commits just before connection 2 reaches the gate, where it meets connection 1's hold."""
    ctx.store.create_sale(SKU, 5, 1, None)
    ctx.gate.rebuild(ctx.store, SKU)
    user_id, token = mint()
    admit = ctx.orders.gate.admit
    first: list[str] = []

    def racing_admit(sku: str, user_id: str, quantity: int) -> Admission:
        if not first:  # connection 1, admitted and committed right before connection 2's admission
            assert admit(sku, user_id, quantity).verdict == "admitted"
            placed = ctx.store.place_order(SKU, user_id, 1, idempotency_key="k1", request_hash=request_fingerprint(SKU, 1))
            first.append(placed.order.order_id)
        return admit(sku, user_id, quantity)

    ctx.orders.gate.admit = racing_admit
    second = buy(token, key="k1")
    assert second.status_code == 201, second.json
    assert second.get_json()["order_id"] == first[0]
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert len(ctx.store.list_orders(user_id)) == 1


def test_a_buyer_at_the_limit_is_still_refused(ctx: Context, mint: Mint) -> None:
    """The database check must not open a way round the limit."""
    ctx.store.create_sale(SKU, 5, 1, None)
    user_id, token = mint()
    assert buy(token, key="k1").status_code == 201
    for key in ("k2", None):
        again = buy(token, key=key)
        assert again.status_code == 409 and again.get_json()["code"] == "limit_reached"
    assert ctx.store.sale_stats(SKU).sold == 1 and len(ctx.store.list_orders(user_id)) == 1
