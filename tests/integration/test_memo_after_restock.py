"""A worker's sold-out memo ends when the database sells again, with Redis down as with Redis up.

With Redis up, a restock rebuilds the gate and the first press after the memo
lapses is admitted there, which ends the memo. With Redis down the database
decides alone: it sold, and the memo went on answering "sold out" to everyone
who arrived while that press was being written, wave after wave, while the
database still had units.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest

from ops.devstack import RedisServer, Stack, local_stack
from ops.loadusers import mint_buyers
from shared.settings import Settings
from shared.store import open_store
from tests.faults.crowd import send_order

pytestmark = pytest.mark.integration

MEMO_SECONDS = 1.0
WAVE = 10


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, RedisServer]]:
    env = {"WORKERS": "1", "LOG_LEVEL": "WARNING", "SOLD_OUT_MEMO_SECONDS": f"{MEMO_SECONDS:g}", "BCRYPT_ROUNDS": "4"}
    with local_stack(tmp_path_factory.mktemp("memo-restock"), functions=("order",), extra_env=env) as (stack, redis):
        assert redis is not None
        yield stack, redis


def wave(stack: Stack, tokens: list[str], sku: str) -> list[str]:
    """Every token presses Buy at the same moment, each on its own connection; the codes answered (201: confirmed)."""
    start = threading.Barrier(len(tokens))
    codes: list[str] = [""] * len(tokens)

    def press(i: int) -> None:
        start.wait(30)
        answer = send_order(stack.url("order"), tokens[i], sku, 1, uuid.uuid4().hex, timeout=30)
        codes[i] = "201" if answer.status == 201 else answer.code

    threads = [threading.Thread(target=press, args=(i,)) for i in range(len(tokens))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    return codes


def test_with_redis_down_a_restocked_sale_sells_every_unit(running: tuple[Stack, RedisServer]) -> None:
    # Bug caught: the memo ended only when the gate admitted someone; with Redis down the database sold, and the
    # memo stayed (measured: a wave of 60 after a restock to 21 got 2 x 201 and 58 x sold_out, 18 units left).
    stack, redis = running
    settings = Settings.from_env(stack.env)
    sku = f"restock-{uuid.uuid4().hex[:8]}"
    store = open_store(settings)
    try:
        store.create_sale(sku, 1, 1, None)
        tokens = mint_buyers(settings, 2 + 3 * WAVE, prefix=f"{sku}-", store=store).tokens
        assert wave(stack, tokens[:1], sku) == ["201"]
        assert wave(stack, tokens[1:2], sku) == ["sold_out"]  # the worker now remembers the sale sold out
        assert redis.process is not None
        redis.process.kill()
        redis.process.wait()
        store.update_sale(sku, total=21)
        threading.Event().wait(MEMO_SECONDS * 1.5)  # the memo's lifetime passes: the restock may now be heard
        first = wave(stack, tokens[2 : 2 + WAVE], sku)
        # Presses that arrived while the first one re-checked the lapsed memo may still hear it; no later one may.
        assert "201" in first, first
        second = wave(stack, tokens[2 + WAVE : 2 + 2 * WAVE], sku)
        assert second == ["201"] * WAVE, second
        left = 21 - store.sale_stats(sku).sold
        third = wave(stack, tokens[2 + 2 * WAVE :], sku)
        assert sorted(third) == sorted(["201"] * left + ["sold_out"] * (WAVE - left)), third
        assert store.sale_stats(sku).sold == 21
    finally:
        store.close()
