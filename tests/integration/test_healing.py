"""Healing end to end in one process: the lease, and an order worker that was told "sold out" selling again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.devstack import free_port
from shared import context as context_module
from shared import healing
from shared.context import Context
from shared.errors import SoldOut
from shared.models import PlacedOrder
from tests.conftest import make_settings

pytestmark = pytest.mark.integration
SKU = "heal-phone"


@pytest.fixture
def healing_ctx(tmp_path: Path, redis_url: str, keys: tuple[Path, Path]) -> Iterator[Context]:
    ctx = context_module.reset(make_settings(tmp_path, redis_url, keys, HEAL_GRACE_SECONDS="0.05", HEAL_INTERVAL_SECONDS="10"))
    yield ctx
    ctx.store.close()


def strand(ctx: Context, units: int) -> None:
    """``units`` admissions whose orders died with their worker: the gate calls the sale sold out, the database has them all."""
    ctx.store.create_sale(SKU, units, 1, None)
    ctx.gate.rebuild(ctx.store, SKU)
    for i in range(units):
        assert ctx.gate.admit(SKU, f"vanished-{i}", 1).verdict == "admitted"


def test_an_order_worker_told_sold_out_sells_again_once_the_gate_is_healed(healing_ctx: Context) -> None:
    ctx = healing_ctx
    strand(ctx, 2)
    buyer = "still-wants-one"
    with pytest.raises(SoldOut):
        ctx.orders.place(buyer, SKU, 1, "key-1")
    assert ctx.orders.memos.peek(SKU) is not None  # the worker remembers "sold out"
    healed = healing.heal_once(ctx)
    assert healed is not None and [(h.sku, h.available) for h in healed] == [(SKU, 2)]
    # The worker re-checks the gate when its memo lapses (SOLD_OUT_MEMO_SECONDS), then admits: nobody restarts it.
    deadline = time.monotonic() + 15
    placed: PlacedOrder | None = None
    while placed is None and time.monotonic() < deadline:
        try:
            placed = ctx.orders.place(buyer, SKU, 1, "key-1")
        except SoldOut:
            time.sleep(0.1)
    assert placed is not None and placed.order.status == "confirmed"
    assert ctx.store.sale_stats(SKU).sold == 1


def test_one_pass_per_lease_for_the_whole_deployment(healing_ctx: Context) -> None:
    strand(healing_ctx, 1)
    first = healing.heal_once(healing_ctx)
    assert first is not None and [h.sku for h in first] == [SKU]
    other_process = context_module.reset(healing_ctx.settings)  # another worker, same Redis
    try:
        assert healing.heal_once(other_process) is None  # the lease is taken: no second pass this interval
    finally:
        other_process.store.close()


def test_redis_down_means_no_pass_and_no_error(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    ctx = context_module.reset(make_settings(tmp_path, f"redis://127.0.0.1:{free_port()}/0", keys, REDIS_TIMEOUT_SECONDS="0.2"))
    try:
        assert healing.heal_once(ctx) is None  # no gate admits anyone: the database decides alone
    finally:
        ctx.store.close()


def test_the_loop_runs_only_in_stock_and_events_and_only_when_on(healing_ctx: Context) -> None:
    settings = healing_ctx.settings
    assert healing.start("order", settings) is None and healing.start("auth", settings) is None
    assert healing.start("stock", settings.replace(heal_interval_seconds=0.0)) is None
