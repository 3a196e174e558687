"""An order worker opens its Redis pool when it starts, not in a crowd's first second.

In a `make bench` crowd an order worker opened its connections under the burst;
with thousands of presses queued for its CPU, a loopback connect outlived the
0.5 s Redis timeout and the breaker sent presses to the database for 2 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from ops.devstack import Stack, local_stack
from shared.redisconn import MAX_CONNECTIONS
from shared.serving import worker_plan
from shared.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"LOG_LEVEL": "WARNING", "WORKERS": "2"}
    with local_stack(tmp_path_factory.mktemp("warm"), functions=("order", "stock"), extra_env=env) as (running, _):
        yield running


def test_before_any_request_every_order_worker_holds_its_pool_open(stack: Stack) -> None:
    settings = Settings.from_env(stack.env)
    expected = MAX_CONNECTIONS * worker_plan("order", settings).workers + 8 * worker_plan("stock", settings).workers
    with redis.Redis.from_url(settings.redis_url) as admin:
        deadline = time.monotonic() + 15
        while (open_now := len(admin.client_list()) - 1) < expected and time.monotonic() < deadline:
            time.sleep(0.2)  # a worker past its first readiness answer may still be opening its pool
    assert open_now >= expected, f"{open_now} connections open, {expected} expected"
