"""Fixed-window login limits in Redis, per account and per client address.

When Redis is down the limits fail open, by choice: a login storm is already
bounded by bcrypt's cost and auth's hard concurrency limit, and refusing every
login during a Redis outage would turn a cache failure into a sale outage.

A request whose client address is unknown (``shared.http.client_address``
found fewer X-Forwarded-For entries than ``TRUSTED_PROXIES``) skips the
per-address limits, by choice too: the alternative, one shared key for every
such request, lets the first hundred logins of a sale lock out the rest. The
per-account limit still holds; each such request is counted
(``flashsale_client_address_unknown_total``) and logged at most once every
UNKNOWN_ADDRESS_LOG_SECONDS, with the number of requests it stands for.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

from shared.errors import RateLimited
from shared.redisconn import RedisConn, RedisDown

log = logging.getLogger(__name__)
UNKNOWN_ADDRESS_LOG_SECONDS = 60.0


class LoginLimiter:
    def __init__(
        self, redis: RedisConn, per_account: int, per_address: int, window_seconds: int, registrations_per_address: int = 0
    ) -> None:
        self.redis = redis
        self.per_account = per_account
        self.per_address = per_address
        self.registrations_per_address = registrations_per_address
        self.window = max(1, window_seconds)
        self.observe_unknown_address: list[Callable[[], None]] = []  # for metrics
        self._unknown_unlogged = 0
        self._unknown_logged_at = -UNKNOWN_ADDRESS_LOG_SECONDS

    def check(self, email: str, address: str | None) -> None:
        """Count one login attempt; raise RateLimited if either limit is over. ``address`` None: the account's alone."""
        limits = [("account", email, self.per_account, "login attempts from this account")]
        if address is None:
            self._address_unknown()
        else:
            limits.append(("address", address, self.per_address, "login attempts from this address"))
        self._count(limits)

    def check_registration(self, address: str | None) -> None:
        """Count one registration: each costs a bcrypt hash, so a script must not make them freely."""
        if address is None:
            self._address_unknown()
            return
        self._count([("register", address, self.registrations_per_address, "registrations from this address")])

    def _address_unknown(self) -> None:
        for observe in self.observe_unknown_address:
            observe()
        self._unknown_unlogged += 1
        now = time.monotonic()
        if now - self._unknown_logged_at >= UNKNOWN_ADDRESS_LOG_SECONDS:
            log.warning(
                "client address unknown: X-Forwarded-For has fewer entries than TRUSTED_PROXIES, so per-address limits are"
                " skipped for such requests; is the ingress appending the client (docs/deploy.md, use-remote-address)?",
                extra={"requests": self._unknown_unlogged},
            )
            self._unknown_unlogged, self._unknown_logged_at = 0, now

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
