"""Stock reads: in-process, then Redis, then the database.

Every cached answer carries the moment it was read from the database and
expires ``stock_cache_ttl_seconds`` after it, in every layer: the in-process
copy takes the Redis key's remaining time, not a fresh one, so a "still
available" answer is never older than one TTL, however many layers it passed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.errors import UnknownSku
from shared.models import StockLevel
from shared.redisconn import RedisConn, RedisDown
from shared.store.base import Store
from shared.ttlcache import TTLCache

LOCAL_SKUS = 10_000  # skus a client made up must not grow memory forever


def stock_key(sku: str) -> str:
    return f"fs:{{{sku}}}:stock"


@dataclass(frozen=True)
class StockRead:
    level: StockLevel
    source: str  # local | redis | database
    fresh_for: float  # seconds this answer may still be served
    body: bytes  # the level as the JSON answer, encoded once per cached level, not once per read


@dataclass(frozen=True, slots=True)
class _Cached:
    level: StockLevel | None
    body: bytes

    @classmethod
    def of(cls, level: StockLevel | None) -> _Cached:
        body = json.dumps(level.to_public(), separators=(",", ":")).encode() if level else b""
        return cls(level, body)


class StockCache:
    def __init__(self, store: Store, redis: RedisConn, ttl_seconds: float) -> None:
        self.store = store
        self.redis = redis
        self.ttl = ttl_seconds
        self._local: TTLCache[str, _Cached] = TTLCache(LOCAL_SKUS, clock=time.monotonic)  # the clock _read compares with
        self.observers: list[Callable[[str], None]] = []  # the source of each answer, for metrics

    def read(self, sku: str) -> StockRead:
        answer = self._read(sku)
        for observe in self.observers:
            observe(answer.source)
        return answer

    def _read(self, sku: str) -> StockRead:
        entry = self._local.entries.get(sku)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            lapses_at, cached = entry
            return StockRead(self._known(sku, cached.level), "local", lapses_at - now, cached.body)

        def get_with_ttl(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            pipe.get(stock_key(sku))
            pipe.pttl(stock_key(sku))
            answers: list[Any] = pipe.execute()
            return answers

        try:
            raw, pttl = self.redis.call(get_with_ttl)
        except RedisDown:
            raw, pttl = None, -2
        if raw is not None and pttl > 0:
            cached = self._remember(sku, self._decode(sku, raw), pttl / 1000)
            return StockRead(self._known(sku, cached.level), "redis", pttl / 1000, cached.body)
        cached = self.put(sku, self.store.stock_level(sku))
        return StockRead(self._known(sku, cached.level), "database", self.ttl, cached.body)

    def put(self, sku: str, level: StockLevel | None) -> _Cached:
        """Cache a database answer (``None``: the sku has no sale) for one TTL."""
        payload = json.dumps({"total": level.total, "available": level.available} if level else {"unknown": True})
        cached = self._remember(sku, level, self.ttl)
        try:
            self.redis.call(lambda c: c.set(stock_key(sku), payload, px=int(self.ttl * 1000)))
        except RedisDown:
            pass
        return cached

    def mark_sold_out(self, sku: str, total: int) -> None:
        """The order path learned the sale is sold out: say so at once, not after the TTL."""
        self.put(sku, StockLevel(sku, total, 0))

    def forget(self, sku: str) -> None:
        self._local.discard(sku)
        try:
            self.redis.call(lambda c: c.delete(stock_key(sku)))
        except RedisDown:
            pass

    def _remember(self, sku: str, level: StockLevel | None, seconds: float) -> _Cached:
        cached = _Cached.of(level)
        self._local.set(sku, cached, seconds)
        return cached

    @staticmethod
    def _decode(sku: str, raw: bytes | str) -> StockLevel | None:
        data = json.loads(raw)
        if data.get("unknown"):
            return None
        return StockLevel(sku, int(data["total"]), int(data["available"]))

    @staticmethod
    def _known(sku: str, level: StockLevel | None) -> StockLevel:
        if level is None:
            raise UnknownSku(f"no sale for sku {sku!r}")
        return level
