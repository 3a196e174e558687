"""Opening a sale, with a crowd of buyers for it: the one way ``flashsale sale create``, the demo,
the load test, the benchmark and the tests make a sale."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from ops.loadusers import Buyers, mint_buyers, store_for
from shared import validation
from shared.gate import Gate
from shared.healing import refresh_gate
from shared.models import Sale
from shared.redisconn import RedisConn
from shared.settings import Settings
from shared.stock import StockCache
from shared.store import Store


@dataclass(frozen=True)
class OpenedSale:
    sale: Sale
    gate_epoch: str | None  # None: Redis did not answer, and the first buyer builds the gate once it is back
    buyers: Buyers  # their emails start with "{sku}-"

    @property
    def sku(self) -> str:
        return self.sale.sku


def fresh_sku(prefix: str) -> str:
    """A sku no earlier run used: ``{prefix}-`` and 8 hex digits."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def open_sale(
    settings: Settings,
    sku: str,
    stock: int,
    *,
    per_user_limit: int = 1,
    starts_at: datetime | None = None,
    buyers: int = 0,
    show_progress: bool = False,
    store: Store | None = None,
) -> OpenedSale:
    """A new sale, its gate loaded, and ``buyers`` real accounts with tokens for it.

    The gate is built here, as the operator's command builds it, and not left to
    the first buyer: a cold gate makes the first presses wait for one rebuild
    (or, with Redis down, go to the database). ``store``: the caller's, left
    open; without it one is opened for the call.
    """
    with store_for(settings, store) as sales:
        sale = sales.create_sale(validation.sku(sku), stock, per_user_limit, starts_at)
        epoch = refresh_redis(settings, sales, sale.sku)
        crowd = mint_buyers(settings, buyers, prefix=f"{sale.sku}-", show_progress=show_progress, store=sales)
    return OpenedSale(sale, epoch, crowd)


def redis_side(settings: Settings, store: Store) -> tuple[Gate, StockCache]:
    """The sale's gate and the stock cache, as the functions hold them, for a command run beside them."""
    redis = RedisConn(settings)
    return Gate(redis), StockCache(store, redis, settings.stock_cache_ttl_seconds)


def refresh_redis(settings: Settings, store: Store, sku: str) -> str | None:
    """Rebuild the gate and drop the cached stock so Redis matches the database; None if Redis did not answer."""
    return refresh_gate(store, *redis_side(settings, store), sku, give_way=False)
