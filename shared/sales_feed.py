"""What the event consumer does with ``order.placed``: keep the stock cache and
the sold-out flag fresh, and count sales, each event exactly once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared import validation
from shared.errors import InvalidRequest
from shared.redisconn import RedisConn
from shared.stock import StockCache
from shared.store.base import Store

SEEN_SECONDS = 7 * 24 * 3600  # longer than any broker keeps retrying a delivery

# Mark the event seen and count it in one script: Redis runs it whole, so no
# failure (a lost connection, Redis killed, a broker's timeout) can fall between
# the mark and the counts and leave a redelivery to find the event seen but
# uncounted. Redis does not undo a script's earlier writes when a later command
# fails, so everything that could fail is checked before the first write.
COUNT_ONCE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'none' and kind ~= 'hash' then return redis.error_reply('WRONGTYPE sales counters ' .. KEYS[2] .. ' are a ' .. kind) end
for _, count in ipairs(redis.call('HMGET', KEYS[2], 'orders', 'units')) do
  if count and not string.match(count, '^%d+$') then return redis.error_reply('sales counter in ' .. KEYS[2] .. ' is not a count') end
end
redis.call('HINCRBY', KEYS[2], 'orders', 1)
redis.call('HINCRBY', KEYS[2], 'units', ARGV[2])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return 1
"""


def seen_key(sku: str, event_id: str) -> str:
    # In the sale's hash slot, beside its counters: one script may touch both on Redis Cluster.
    return f"fs:{{{sku}}}:event:{event_id}"


def sales_key(sku: str) -> str:
    return f"fs:{{{sku}}}:sales"


@dataclass(frozen=True)
class FeedResult:
    applied: bool  # False: a redelivery, nothing changed
    sku: str
    available: int | None


class SalesFeed:
    def __init__(self, store: Store, redis: RedisConn, stock: StockCache) -> None:
        self.store = store
        self.redis = redis
        self.stock = stock
        self._count_once = redis.client.register_script(COUNT_ONCE)

    def order_placed(self, event_id: str, data: dict[str, Any]) -> FeedResult:
        """Raise RedisDown or a Redis error (the broker then redelivers), or ValueError for a malformed event."""
        sku, quantity = data.get("sku"), data.get("quantity")
        try:
            validation.sku(sku)
            validation.text(event_id, "id")  # a structured-mode event's id is any JSON string
        except InvalidRequest as exc:
            raise ValueError(f"order.placed: {exc.detail}") from exc
        if not isinstance(sku, str) or not isinstance(quantity, int) or quantity < 1 or not event_id:
            raise ValueError("order.placed needs an id, a sku and a positive quantity")

        keys = [seen_key(sku, event_id), sales_key(sku)]
        applied = bool(self.redis.call(lambda client: self._count_once(keys=keys, args=[SEEN_SECONDS, quantity], client=client)))
        # Refreshing from the database is idempotent by nature, so it runs on
        # redeliveries too: the cache is never fresher than the truth.
        level = self.store.stock_level(sku)
        self.stock.put(sku, level)
        return FeedResult(applied, sku, None if level is None else level.available)

    def counts(self, sku: str) -> dict[str, int]:
        raw = self.redis.call(lambda c: c.hgetall(sales_key(sku)))
        return {k.decode() if isinstance(k, bytes) else str(k): int(v) for k, v in raw.items()}
