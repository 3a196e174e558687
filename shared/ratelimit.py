"""Fixed-window login limits in Redis, per account and per client address.

When Redis is down the limits fail open, by choice: a login storm is already
bounded by bcrypt's cost and auth's hard concurrency limit, and refusing every
login during a Redis outage would turn a cache failure into a sale outage.
"""

from __future__ import annotations

import hashlib
import logging
import time

from shared.errors import RateLimited
from shared.redisconn import RedisConn, RedisDown

log = logging.getLogger(__name__)


class LoginLimiter:
    def __init__(self, redis: RedisConn, per_account: int, per_address: int, window_seconds: int) -> None:
        self.redis = redis
        self.per_account = per_account
        self.per_address = per_address
        self.window = max(1, window_seconds)

    def check(self, email: str, address: str) -> None:
        """Count one attempt; raise RateLimited if either limit is over."""
        now = time.time()
        window = int(now // self.window)
        retry_after = int(self.window - now % self.window) + 1
        limits = [
            (f"fs:rl:account:{_digest(email)}:{window}", self.per_account, "this account"),
            (f"fs:rl:address:{_digest(address)}:{window}", self.per_address, "this address"),
        ]
        active = [(key, limit, who) for key, limit, who in limits if limit > 0]
        if not active:
            return

        def count(client):  # type: ignore[no-untyped-def]
            pipe = client.pipeline(transaction=False)
            for key, _, _ in active:
                pipe.incr(key)
                pipe.expire(key, self.window + 1)
            return pipe.execute()[0::2]

        try:
            counts = self.redis.call(count)
        except RedisDown:
            log.warning("login rate limits skipped: redis unavailable")
            return
        for (_, limit, who), seen in zip(active, counts, strict=True):
            if int(seen) > limit:
                raise RateLimited(retry_after, f"too many login attempts from {who}")


def _digest(value: str) -> str:
    # Emails and addresses never appear in Redis key names in clear.
    return hashlib.sha256(value.encode()).hexdigest()[:32]
