"""What the event consumer does with ``order.placed``: keep the stock cache and
the sold-out flag fresh, and count sales, each event exactly once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.redisconn import RedisConn
from shared.stock import StockCache
from shared.store.base import Store

SEEN_SECONDS = 7 * 24 * 3600  # longer than any broker keeps retrying a delivery


def seen_key(event_id: str) -> str:
    return f"fs:event:{event_id}"


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

    def order_placed(self, event_id: str, data: dict[str, Any]) -> FeedResult:
        """Raise RedisDown (the broker then redelivers) or ValueError for a malformed event."""
        sku, quantity = data.get("sku"), data.get("quantity")
        if not isinstance(sku, str) or not isinstance(quantity, int) or quantity < 1 or not event_id:
            raise ValueError("order.placed needs an id, a sku and a positive quantity")

        def count_once(client: Any) -> bool:
            # SET NX and the counter in one MULTI: either both happen or neither.
            pipe = client.pipeline(transaction=True)
            pipe.set(seen_key(event_id), "1", nx=True, ex=SEEN_SECONDS)
            pipe.exists(seen_key(event_id))
            first, _ = pipe.execute()
            if not first:
                return False
            client.hincrby(sales_key(sku), "orders", 1)
            client.hincrby(sales_key(sku), "units", quantity)
            return True

        applied = self.redis.call(count_once)
        # Refreshing from the database is idempotent by nature, so it runs on
        # redeliveries too: the cache is never fresher than the truth.
        level = self.store.stock_level(sku)
        self.stock.put(sku, level)
        return FeedResult(applied, sku, None if level is None else level.available)

    def counts(self, sku: str) -> dict[str, int]:
        raw = self.redis.call(lambda c: c.hgetall(sales_key(sku)))
        return {k.decode() if isinstance(k, bytes) else str(k): int(v) for k, v in raw.items()}
