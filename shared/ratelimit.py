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
    def __init__(
        self, redis: RedisConn, per_account: int, per_address: int, window_seconds: int, registrations_per_address: int = 0
    ) -> None:
        self.redis = redis
        self.per_account = per_account
        self.per_address = per_address
        self.registrations_per_address = registrations_per_address
        self.window = max(1, window_seconds)

    def check(self, email: str, address: str) -> None:
        """Count one login attempt; raise RateLimited if either limit is over."""
        self._count(
            [
                ("account", email, self.per_account, "login attempts from this account"),
                ("address", address, self.per_address, "login attempts from this address"),
            ]
        )

    def check_registration(self, address: str) -> None:
        """Count one registration: each costs a bcrypt hash, so a script must not make them freely."""
        self._count([("register", address, self.registrations_per_address, "registrations from this address")])

    def _count(self, limits: list[tuple[str, str, int, str]]) -> None:
        now = time.time()
        window = int(now // self.window)
        retry_after = int(self.window - now % self.window) + 1
        active = [(f"fs:rl:{kind}:{_digest(who)}:{window}", limit, what) for kind, who, limit, what in limits if limit > 0]
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
            log.warning("rate limits skipped: redis unavailable")
            return
        for (_, limit, who), seen in zip(active, counts, strict=True):
            if int(seen) > limit:
                raise RateLimited(retry_after, f"too many {who}")


def _digest(value: str) -> str:
    # Emails and addresses never appear in Redis key names in clear.
    return hashlib.sha256(value.encode()).hexdigest()[:32]
