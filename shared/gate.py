"""The admission gate: one Lua script in Redis that decides, atomically, whether
a buyer may go on to the database.

It turns away the crowd cheaply (sold out, over the per-user limit) so that
only about as many requests as there are units reach the database. It is an
optimisation, never the authority: the database re-checks everything, and a
gate lost to a restart or a flush is rebuilt from the database. Each rebuild
starts a new epoch, so a release from before the rebuild cannot add stock the
rebuild already counted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from shared.redisconn import RedisConn
from shared.store.base import Store

ADMIT = """
local remaining = redis.call('HGET', KEYS[1], 'remaining')
if not remaining then return {'cold', ''} end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local quantity = tonumber(ARGV[2])
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit'))
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held + quantity > limit then return {'limit_reached', epoch, held} end
if tonumber(remaining) < quantity then return {'sold_out', epoch, held} end
redis.call('HINCRBY', KEYS[1], 'remaining', -quantity)
redis.call('HINCRBY', KEYS[2], ARGV[1], quantity)
return {'admitted', epoch, held + quantity}
"""

# ARGV: user, quantity, epoch, give_back_units (1/0), user_units_after ('' = subtract)
RELEASE = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[3] then return 0 end
local quantity = tonumber(ARGV[2])
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'remaining', quantity) end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
else
  local left = redis.call('HINCRBY', KEYS[2], ARGV[1], -quantity)
  if left <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
end
return 1
"""

CLOSE = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'remaining', 0)
return 1
"""


def gate_key(sku: str) -> str:
    # The {sku} hash tag keeps a sale's keys on one Redis Cluster slot.
    return f"fs:{{{sku}}}:gate"


def buyers_key(sku: str) -> str:
    return f"fs:{{{sku}}}:buyers"


@dataclass(frozen=True)
class Admission:
    verdict: str  # admitted | sold_out | limit_reached | cold
    epoch: str
    held: int = 0  # units the gate counts for this buyer (admitted ones included)


class Gate:
    def __init__(self, redis: RedisConn) -> None:
        self.redis = redis
        client = redis.client
        self._admit = client.register_script(ADMIT)
        self._release = client.register_script(RELEASE)
        self._close = client.register_script(CLOSE)

    def admit(self, sku: str, user_id: str, quantity: int) -> Admission:
        """Raise RedisDown when Redis does not answer."""
        verdict, epoch, *held = self.redis.call(lambda _: self._admit(keys=[gate_key(sku), buyers_key(sku)], args=[user_id, quantity]))
        return Admission(_text(verdict), _text(epoch), int(held[0]) if held else 0)

    def release(self, sku: str, user_id: str, quantity: int, epoch: str, *, units_after: int | None = None, give_back: bool = True) -> bool:
        """Undo an admission the database refused or failed (only within its epoch)."""
        args: list[Any] = [user_id, quantity, epoch, "1" if give_back else "0", "" if units_after is None else units_after]
        return bool(self.redis.call(lambda _: self._release(keys=[gate_key(sku), buyers_key(sku)], args=args)))

    def close(self, sku: str, epoch: str) -> bool:
        """The database says sold out: stop admitting until the next rebuild."""
        return bool(self.redis.call(lambda _: self._close(keys=[gate_key(sku)], args=[epoch])))

    def rebuild(self, store: Store, sku: str) -> str | None:
        """Load the gate from the database; returns the new epoch, or None for an unknown sku."""
        sale = store.get_sale(sku)
        level = store.stock_level(sku)
        if sale is None or level is None:
            return None
        buyers = store.buyer_units(sku)
        epoch = uuid.uuid4().hex

        def load(client: Any) -> None:
            pipe = client.pipeline(transaction=True)
            pipe.delete(gate_key(sku), buyers_key(sku))
            pipe.hset(gate_key(sku), mapping={"remaining": level.available, "limit": sale.per_user_limit, "epoch": epoch})
            for start in range(0, len(buyers), 1000):
                chunk = dict(list(buyers.items())[start : start + 1000])
                pipe.hset(buyers_key(sku), mapping=chunk)
            pipe.execute()

        self.redis.call(load)
        return epoch

    def try_rebuild(self, store: Store, sku: str) -> str | None:
        """Rebuild a cold gate unless another worker is already doing it."""
        lock = f"fs:{{{sku}}}:gate:rebuild"
        if not self.redis.call(lambda c: c.set(lock, "1", nx=True, px=5000)):
            return None
        try:
            return self.rebuild(store, sku)
        finally:
            self.redis.call(lambda c: c.delete(lock))

    def warm(self, sku: str) -> bool:
        """Whether the gate of ``sku`` is loaded (a rebuild under way elsewhere has finished)."""
        return bool(self.redis.call(lambda c: c.exists(gate_key(sku))))

    def holders(self, sku: str) -> set[str]:
        """Every buyer the gate counts units for: admitted ones, whose orders may still be on their way, included."""
        raw = self.redis.call(lambda c: c.hkeys(buyers_key(sku)))
        return {_text(user) for user in raw}

    def state(self, sku: str) -> dict[str, str]:
        raw = self.redis.call(lambda c: c.hgetall(gate_key(sku)))
        return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
