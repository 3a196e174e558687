"""A batch whose leader dies after the write began has an unknown outcome, and says so.

At gunicorn's graceful timeout a gevent worker kills its greenlets; a batch's
leader waiting on the database thread dies, while that thread goes on and
commits. Its callers were told "the batch was not written" and their gate
units were released: buyers heard 503 for orders that exist, and the gate
counted their units as free.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from shared import context
from shared.errors import FlashsaleError, Unavailable
from shared.models import OrderRequest
from shared.store.base import Placement
from tests.conftest import make_settings

pytestmark = pytest.mark.integration
SKU = "batch-phone"


class Killed(BaseException):
    """What gevent's Timeout and GreenletExit are to a greenlet: not an Exception."""


def test_callers_of_a_batch_whose_leader_died_mid_write_hear_unknown_and_keep_their_units(
    tmp_path: Path, redis_url: str, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bug caught: "the batch was not written" for a committed batch, and the follower's gate unit released.
    ctx = context.reset(make_settings(tmp_path, redis_url, keys, ORDER_BATCH_MAX="2", ORDER_BATCH_WAIT_MS="5000"))
    try:
        ctx.store.create_sale(SKU, 5, 1, None)
        real = ctx.store.place_orders

        def write_then_die(requests: list[OrderRequest]) -> list[Placement]:
            real(requests)  # committed ...
            raise Killed()  # ... and the leader killed before it hears so

        monkeypatch.setattr(ctx.store, "place_orders", write_then_die)
        answers: dict[str, BaseException | object] = {}

        def buy(user: str) -> None:
            try:
                answers[user] = ctx.orders.place(user, SKU, 1, f"key-{user}")
            except BaseException as exc:  # the leader's Killed, the follower's refusal: both are what the test reads
                answers[user] = exc

        buyers = [threading.Thread(target=buy, args=(user,)) for user in ("ada", "bob")]
        for buyer in buyers:
            buyer.start()
        for buyer in buyers:
            buyer.join(30)
        assert not any(buyer.is_alive() for buyer in buyers)
        assert sum(isinstance(a, Killed) for a in answers.values()) == 1, answers  # the leader, whichever it was
        (follower,) = [user for user, a in answers.items() if not isinstance(a, Killed)]
        refusal = answers[follower]
        assert isinstance(refusal, Unavailable), refusal
        assert "Idempotency-Key" in (refusal.detail or ""), refusal.detail
        assert ctx.store.sale_stats(SKU).sold == 2  # both orders exist
        assert follower in ctx.gate.holders(SKU)  # the unit stays counted: it is sold

        monkeypatch.setattr(ctx.store, "place_orders", real)
        again = ctx.orders.place(follower, SKU, 1, f"key-{follower}")
        assert again.replayed and again.order.user_id == follower
    finally:
        ctx.store.close()


def test_an_error_the_store_reports_still_releases_the_units(
    tmp_path: Path, redis_url: str, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The other side: a write the store says failed (rolled back) is not written, and its units go back.
    from shared.errors import StoreError

    ctx = context.reset(make_settings(tmp_path, redis_url, keys))
    try:
        ctx.store.create_sale(SKU, 5, 1, None)

        def fail(requests: list[OrderRequest]) -> list[Placement]:
            raise StoreError("disk I/O error")

        monkeypatch.setattr(ctx.store, "place_orders", fail)
        with pytest.raises(FlashsaleError) as refused:
            ctx.orders.place("cy", SKU, 1, "key-cy")
        assert refused.value.status == 503
        assert "cy" not in ctx.gate.holders(SKU)
        assert ctx.store.sale_stats(SKU).sold == 0
    finally:
        ctx.store.close()
