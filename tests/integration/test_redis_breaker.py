"""The Redis circuit breaker trips when Redis fails, not when a crowd queues for the worker's connections."""

from __future__ import annotations

import pytest
import redis

from shared.redisconn import RedisConn, RedisDown
from shared.settings import Settings

pytestmark = pytest.mark.integration


def test_a_worker_out_of_pool_connections_keeps_the_fast_path_for_the_others(settings: Settings) -> None:
    pool = redis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=1, timeout=0.05)
    conn = RedisConn(settings, client=redis.Redis(connection_pool=pool))
    held = pool.get_connection()  # the one connection, busy with someone else's call
    with pytest.raises(RedisDown):
        conn.call(lambda client: client.ping())
    assert conn.available  # not tripped: Redis itself answered nothing wrong
    pool.release(held)
    assert conn.call(lambda client: client.ping())


def test_redis_not_answering_trips_the_breaker(settings: Settings) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    conn = RedisConn(settings, client=dead)
    with pytest.raises(RedisDown):
        conn.call(lambda client: client.ping())
    assert not conn.available


def clients(url: str) -> int:
    with redis.Redis.from_url(url) as admin:
        return len(admin.client_list())


def test_warm_opens_the_pool_before_any_call_and_calls_reuse_it(settings: Settings) -> None:
    conn = RedisConn(settings)
    before = clients(settings.redis_url)
    assert conn.warm(5) == 5
    assert clients(settings.redis_url) == before + 5
    for _ in range(5):
        assert conn.call(lambda client: client.ping())
    assert clients(settings.redis_url) == before + 5  # no connect in a call: they were open


def test_warm_without_redis_opens_nothing_and_leaves_the_breaker_closed(settings: Settings) -> None:
    dead = redis.Redis(connection_pool=redis.BlockingConnectionPool(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    conn = RedisConn(settings, client=dead)
    assert conn.warm(64) == 0  # stops at the first refusal: one connect, not 64
    assert conn.available  # no request was waiting on it
