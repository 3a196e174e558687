"""A refusal from memory: once a worker knows a sale is sold out, a loser is answered
with no Redis, no database and no signature check, while a winner still gets
their order back and a forged token never gets anyone's."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Request, Response
from werkzeug.wrappers import Request as BareRequest

from shared import context as context_module
from shared.context import Context
from shared.errors import SoldOut
from shared.models import PlacedOrder
from shared.soldout import SoldOutMemo
from tests.clients import function_client
from tests.conftest import Mint
from tests.integration.test_order_api import SKU, buy

pytestmark = pytest.mark.integration


def forged(ctx: Context, subject: str) -> str:
    """A well-formed token for ``subject`` that claims our key id but is signed with another key."""
    now = int(time.time())
    claims = {"sub": subject, "iss": ctx.settings.jwt_issuer, "aud": ctx.settings.jwt_audience, "iat": now, "nbf": now, "exp": now + 300}
    other = Ed25519PrivateKey.generate()
    return jwt.encode(claims, other, algorithm="EdDSA", headers={"kid": ctx.verifier.key_id})


class Calls:
    """Counts every call that leaves the process: the store, the gate and the signature check."""

    def __init__(self, ctx: Context) -> None:
        self.made: list[str] = []
        desk = ctx.orders
        for name, target in (("store", desk.store), ("gate", desk.gate), ("verifier", ctx.verifier)):
            self._spy(name, target)

    def _spy(self, name: str, target: Any) -> None:
        for attribute in dir(target):
            # bearer: the header parsed (and remembered) in memory; the signature is checked by check().
            if attribute.startswith("_") or attribute in {"public_key", "public_raw", "key_id", "settings", "redis", "store", "bearer"}:
                continue
            original = getattr(target, attribute)
            if callable(original):
                setattr(target, attribute, self._recording(f"{name}.{attribute}", original))

    def _recording(self, label: str, original: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.made.append(label)
            return original(*args, **kwargs)

        return call


def sold_out_sale(ctx: Context, mint: Mint) -> tuple[str, str, dict[str, Any]]:
    """One unit, sold with an Idempotency-Key; a loser teaches the worker it is sold out."""
    ctx.store.create_sale(SKU, 1, 1, None)
    client = function_client("order")
    winner_id, winner = mint()
    first = buy(client, winner, key="winner-key")
    assert first.status_code == 201
    assert buy(client, mint()[1], key="a-loser-key").get_json()["code"] == "sold_out"
    return winner_id, winner, first.get_json()


def test_a_losers_press_with_or_without_key_touches_nothing(ctx: Context, mint: Mint) -> None:
    sold_out_sale(ctx, mint)
    client = function_client("order")
    _, loser = mint()
    calls = Calls(ctx)
    answers = [buy(client, loser, key=key) for key in ("first-press", "first-press", None, "fiftieth")]
    assert [a.get_json()["code"] for a in answers] == ["sold_out"] * 4
    assert calls.made == []


def test_a_winner_gets_their_order_back_on_this_worker_and_on_a_fresh_one(ctx: Context, mint: Mint) -> None:
    winner_id, winner, order = sold_out_sale(ctx, mint)
    again = buy(function_client("order"), winner, key="winner-key")
    assert again.status_code == 201 and again.json == order and again.headers["Idempotent-Replayed"] == "true"
    fresh = context_module.reset(ctx.settings)  # another worker: no memo yet
    assert buy(function_client("order"), mint()[1], key="x").get_json()["code"] == "sold_out"
    memo = fresh.orders.memos.peek(SKU)
    assert memo is not None and winner_id in memo.holders
    replay = buy(function_client("order"), winner, key="winner-key")
    assert replay.status_code == 201 and replay.json == order
    more = buy(function_client("order"), winner, key="another-key")  # a holder asking for more
    assert more.status_code == 409 and more.get_json()["code"] == "sold_out"


def test_a_forged_token_naming_the_winner_gets_sold_out_and_no_order(ctx: Context, mint: Mint) -> None:
    # The answer anyone else's forged token gets (tests/security/test_sold_out_oracle.py): 401 here told who bought.
    winner_id, _, order = sold_out_sale(ctx, mint)
    answer = buy(function_client("order"), forged(ctx, winner_id), key="winner-key")
    assert answer.status_code == 409 and answer.get_json()["code"] == "sold_out"
    assert order["order_id"] not in answer.get_data(as_text=True)


def test_a_forged_token_naming_nobody_hears_only_the_public_fact(ctx: Context, mint: Mint) -> None:
    sold_out_sale(ctx, mint)
    before = ctx.store.sale_stats(SKU)
    answer = buy(function_client("order"), forged(ctx, uuid.uuid4().hex), key="k")
    assert answer.status_code == 409 and answer.get_json()["code"] == "sold_out"
    assert ctx.store.sale_stats(SKU) == before


def test_a_forged_token_on_a_sale_with_stock_is_401(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 5, 1, None)
    answer = buy(function_client("order"), forged(ctx, uuid.uuid4().hex))
    assert answer.status_code == 401
    assert ctx.store.sale_stats(SKU).sold == 0


@pytest.mark.parametrize("authorization", [None, "", "Basic abc", "Bearer ", "Bearer not-a-token", "Bearer a.b.c"])
def test_a_missing_or_malformed_authorization_stays_401_after_sell_out(ctx: Context, mint: Mint, authorization: str | None) -> None:
    import json

    sold_out_sale(ctx, mint)
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = function_client("order").post("/orders", data=json.dumps({"sku": SKU}), content_type="application/json", headers=headers)
    assert answer.status_code == 401 and answer.get_json()["code"] == "unauthorized"


def test_a_refusal_from_memory_is_counted(ctx: Context, mint: Mint) -> None:
    sold_out_sale(ctx, mint)
    seen: list[tuple[str, str]] = []
    ctx.orders.observers.append(lambda sku, outcome: seen.append((sku, outcome)))
    buy(function_client("order"), mint()[1])
    buy(function_client("order"), forged(ctx, "nobody"))
    assert seen == [(SKU, "sold_out"), (SKU, "sold_out")]


def test_an_admitted_buyer_whose_order_is_not_written_yet_is_a_holder(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 2, 1, None)
    winner_id, winner = mint()
    assert buy(function_client("order"), winner).status_code == 201
    in_flight, _ = mint()
    assert ctx.gate.admit(SKU, in_flight, 1).verdict == "admitted"  # its order is on its way to the database
    assert buy(function_client("order"), mint()[1]).get_json()["code"] == "sold_out"
    memo = ctx.orders.memos.peek(SKU)
    assert memo is not None and memo.holders == {winner_id, in_flight}


def test_units_coming_back_end_the_memo(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 1, 1, None)
    client = function_client("order")
    sold = buy(client, mint()[1]).get_json()
    assert buy(client, mint()[1]).get_json()["code"] == "sold_out"
    ctx.store.cancel_order(sold["order_id"])
    ctx.gate.rebuild(ctx.store, SKU)
    ctx.orders.memos.seconds = 0.0
    ctx.orders.memos.remember(SKU, frozenset())  # lapses at once: the next press re-checks the gate
    assert buy(client, mint()[1]).status_code == 201
    assert ctx.orders.memos.peek(SKU) is None


def test_a_losers_answer_is_ready_bytes_that_never_reach_flask(ctx: Context, mint: Mint, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import metrics
    from shared.errors import SoldOut
    from shared.http import Router, problem_response

    _, winner, _ = sold_out_sale(ctx, mint)
    client = function_client("order")
    dispatched: list[str] = []
    real_dispatch = Router.dispatch

    def counted_dispatch(self: Router, request: Request) -> Response:
        dispatched.append(request.path)
        return real_dispatch(self, request)

    monkeypatch.setattr(Router, "dispatch", counted_dispatch)
    counted = metrics.HTTP_REQUESTS.labels("order", "/orders", "409")
    before = counted._value.get()
    _, loser = mint()
    answer = buy(client, loser, key="k")
    full = problem_response(SoldOut())
    assert (answer.status_code, answer.content_type, answer.get_data()) == (409, full.content_type, full.get_data())
    assert answer.headers["Content-Length"] == str(len(full.get_data())) and answer.headers["X-Request-Id"]
    echoed = client.post("/orders", json={"sku": SKU}, headers={"Authorization": f"Bearer {loser}", "X-Request-Id": "mine-1"})
    assert echoed.headers["X-Request-Id"] == "mine-1"
    assert dispatched == []  # answered before functions-framework and Flask
    assert counted._value.get() == before + 2  # and counted all the same
    replay = buy(client, winner, key="winner-key")  # a holder: verified, then their order back
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert dispatched == []  # every press of Buy is answered before the framework, winners' too
    invalid = client.post("/orders", json={"sku": SKU, "quantity": 0}, headers={"Authorization": f"Bearer {loser}"})
    assert invalid.status_code == 400 and invalid.get_json()["code"] == "invalid_request"  # the same check, the same answer


def test_before_the_memo_a_loser_the_gate_counts_nothing_for_reads_no_database(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 1, 2, None)
    ctx.gate.rebuild(ctx.store, SKU)
    winner_id, winner = mint()
    first = buy(function_client("order"), winner, key="w1")
    assert first.status_code == 201
    fresh = context_module.reset(ctx.settings)  # another worker: no memo, no cached sale
    fresh.orders.sale(SKU)
    lookups: list[str] = []
    fresh.store.find_order_by_key = lambda user_id, idempotency_key: lookups.append(user_id)
    fresh.orders.remember_sold_out = lambda sale: None  # keep this worker without a memo
    _, loser = mint()
    assert buy(function_client("order"), loser, key="l1").get_json()["code"] == "sold_out"
    assert lookups == []  # the gate counts no units for them: no order to look up
    fresh.store.find_order_by_key = ctx.store.find_order_by_key
    replay = buy(function_client("order"), winner, key="w1")  # a holder (1 of 2) refused by the gate as sold out
    assert replay.status_code == 201 and replay.json == first.json


def test_a_press_the_shortcut_read_is_not_read_again_by_the_route(ctx: Context, mint: Mint, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import http

    _, winner, order = sold_out_sale(ctx, mint)
    reads: list[int] = []
    real = http.read_json

    def counted_read(request: BareRequest, limit: int) -> dict[str, Any]:
        reads.append(1)
        return real(request, limit)

    monkeypatch.setattr("shared.http.read_json", counted_read)
    client = function_client("order")  # imports the function afresh, with the counted read_json
    again = buy(client, winner, key="winner-key")  # a holder: read by the shortcut, decided by the route
    assert again.status_code == 201 and again.json == order
    assert reads == [1]


def test_a_failed_read_of_the_databases_buyers_is_read_again_at_the_next_renewal(ctx: Context, mint: Mint) -> None:
    from shared.errors import StoreError

    ctx.store.create_sale(SKU, 1, 1, None)
    ctx.gate.rebuild(ctx.store, SKU)
    bypassed, _ = mint()
    ctx.store.place_order(SKU, bypassed, 1)  # written while Redis was down: the gate never counted it
    desk = ctx.orders
    sale = desk.sale(SKU)
    real = desk.store.buyer_units

    def failing(sku: str) -> dict[str, int]:
        raise StoreError("database busy")

    desk.store.buyer_units = failing
    desk.remember_sold_out(sale)
    first = desk.memos.peek(SKU)
    assert first is not None and not first.from_database and bypassed not in first.holders  # the gate's holders only
    desk.store.buyer_units = real
    desk.memos.seconds = 0.0
    desk.memos.remember(SKU, first.holders)  # lapses at once
    desk.remember_sold_out(sale)  # the renewal
    renewed = desk.memos.last(SKU)
    assert renewed is not None and renewed.from_database and bypassed in renewed.holders


class WatchedSlots:
    """The desk's gate slots, saying when a press starts waiting for one."""

    def __init__(self) -> None:
        self.inner = threading.BoundedSemaphore(1)
        self.waiting = threading.Event()

    def __enter__(self) -> None:
        self.waiting.set()
        self.inner.acquire()

    def __exit__(self, *exc: object) -> None:
        self.inner.release()


def press_while_slots_are_taken(ctx: Context, user_id: str, then: Any) -> tuple[Any, list[str]]:
    """``user_id`` presses Buy while every gate slot is taken; ``then()`` runs while the press waits; the press's answer or error."""
    desk = ctx.orders
    slots = WatchedSlots()
    desk._gate_slots = slots  # type: ignore[assignment]
    calls = Calls(ctx)
    answer: dict[str, Any] = {}

    def press() -> None:
        try:
            answer["placed"] = desk.place(user_id, SKU, 1, None)
        except Exception as exc:  # noqa: BLE001 - the answer under test
            answer["error"] = exc

    slots.inner.acquire()  # presses ahead of this one hold every slot
    buyer = threading.Thread(target=press)
    buyer.start()
    assert slots.waiting.wait(10), "the press never reached the gate slots"
    then()
    slots.inner.release()
    buyer.join(10)
    return answer.get("placed", answer.get("error")), calls.made


def test_a_press_that_waited_for_the_gate_while_the_sale_sold_out_is_refused_without_asking(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 1, 1, None)
    loser_id, _ = mint()
    ctx.gate.rebuild(ctx.store, SKU)
    ctx.orders.sale(SKU)  # read before the crowd: the press goes straight to the gate
    answer, calls = press_while_slots_are_taken(ctx, loser_id, lambda: ctx.orders.memos.remember(SKU, frozenset({"the-winner"})))
    assert isinstance(answer, SoldOut)
    assert not [c for c in calls if c.startswith("gate.")]  # the unit is still the gate's to give
    assert ctx.gate.state(SKU)["remaining"] == "1"


def test_the_press_rechecking_a_lapsed_memo_still_asks_the_gate(ctx: Context, mint: Mint) -> None:
    ctx.store.create_sale(SKU, 1, 1, None)
    buyer_id, _ = mint()
    ctx.gate.rebuild(ctx.store, SKU)
    ctx.orders.sale(SKU)
    # The worker once heard "sold out"; the memo has lapsed, so this press is the one re-checking it with the gate.
    ctx.orders.memos._memos.set(SKU, SoldOutMemo(frozenset({"the-winner"}), True), -1)
    answer, calls = press_while_slots_are_taken(ctx, buyer_id, lambda: None)
    assert isinstance(answer, PlacedOrder), answer
    assert "gate.admit" in calls


def test_an_unexpected_failure_while_placing_is_answered_once_and_never_placed_again(
    ctx: Context, mint: Mint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order shortcut does the route's whole work: handing a failure to the route would place the order twice."""
    ctx.store.create_sale(SKU, 5, 5, None)
    _, buyer = mint()
    placed: list[str] = []
    real_place = ctx.orders.place

    def place_then_fail(*args: Any, **kwargs: Any) -> Any:
        placed.append(real_place(*args, **kwargs).order.order_id)
        raise RuntimeError("after the order was written")

    monkeypatch.setattr(ctx.orders, "place", place_then_fail)
    answer = buy(function_client("order"), buyer)
    assert answer.status_code == 500 and answer.get_json()["code"] == "internal" and answer.headers["X-Request-Id"]
    assert len(placed) == 1 and ctx.store.sale_stats(SKU).sold == 1  # written once, not again by the route
