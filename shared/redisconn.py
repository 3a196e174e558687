"""Redis access with a circuit breaker.

Redis is only ever the fast path. When it fails, callers fall back to the
database; the breaker keeps every following request from waiting on a dead
socket until ``redis_retry_after_seconds`` have passed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from shared.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_CONNECTIONS = 64  # a worker's connections to Redis, shared by all its greenlets
POOL_WAIT_SECONDS = 10.0
POOL_EXHAUSTED = "No connection available."  # what redis-py's BlockingConnectionPool raises when the wait runs out


class RedisDown(Exception):
    """Redis did not answer; use the database instead."""


class RedisConn:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.client: redis.Redis = client or redis.Redis(
            connection_pool=redis.BlockingConnectionPool.from_url(
                settings.redis_url,
                # Bounded: a crowd of 10,000 greenlets shares these instead of
                # opening 10,000 sockets and exhausting Redis's maxclients.
                max_connections=MAX_CONNECTIONS,
                # How long a greenlet waits for a free connection. In a crowd
                # the wait is the worker's own queue of CPU work ahead of it
                # (10,000 buyers at once on 2 cores: seconds), not Redis failing.
                timeout=POOL_WAIT_SECONDS,
                socket_timeout=settings.redis_timeout_seconds,
                socket_connect_timeout=settings.redis_timeout_seconds,
                health_check_interval=30,
            )
        )
        self._open_until = 0.0
        self._lock = threading.Lock()
        self.on_error: Callable[[Exception], None] | None = None

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._open_until

    def call(self, operation: Callable[[redis.Redis], T]) -> T:
        if not self.available:
            raise RedisDown("redis marked down")
        try:
            return operation(self.client)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError) as exc:
            if exc.args == (POOL_EXHAUSTED,):
                # Every connection stayed busy for POOL_WAIT_SECONDS: this worker is
                # overloaded, Redis is not down. This request goes to the database;
                # the others keep the fast path (tripping here once sent a whole
                # crowd to the database for REDIS_RETRY_AFTER_SECONDS).
                raise RedisDown(str(exc)) from exc
            self.trip(exc)
            raise RedisDown(str(exc)) from exc
        except redis.ResponseError as exc:
            if "NOSCRIPT" in str(exc) or "READONLY" in str(exc) or "LOADING" in str(exc):
                self.trip(exc)
                raise RedisDown(str(exc)) from exc
            raise

    def warm(self, count: int = MAX_CONNECTIONS) -> int:
        """Open ``count`` of the pool's connections now; returns how many are open.

        A crowd's first second otherwise opens them under load: with thousands
        of greenlets queued for the CPU, a loopback connect outlived
        ``redis_timeout_seconds`` and tripped the breaker, sending presses to
        the database for ``redis_retry_after_seconds`` (seen in a `make bench`
        crowd). A failure stops here and leaves the rest to open on demand; it
        never trips the breaker, since no request is waiting.
        """
        pool = self.client.connection_pool
        taken: list[Any] = []
        try:
            for _ in range(count):
                taken.append(pool.get_connection())  # connects, or raises
        except (redis.RedisError, OSError) as exc:
            log.info("redis: %d of %d connections opened at start: %s", len(taken), count, exc)
        finally:
            for connection in taken:
                pool.release(connection)
        return len(taken)

    def trip(self, exc: Exception) -> None:
        with self._lock:
            self._open_until = time.monotonic() + self.settings.redis_retry_after_seconds
        log.warning("redis unavailable, using the database for %.1fs: %s", self.settings.redis_retry_after_seconds, exc)
        if self.on_error is not None:
            self.on_error(exc)

    def ping(self) -> None:
        # Readiness asks Redis itself, breaker or not.
        try:
            self.client.ping()
        except (redis.RedisError, OSError) as exc:
            raise RedisDown(str(exc)) from exc
        with self._lock:
            self._open_until = 0.0
