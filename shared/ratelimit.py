"""Login and registration limits in Redis: sliding windows, one round trip a check.

Three limits on a login, each over the last ``window`` seconds (a sliding
window: a log of attempts per key, so no edge lets twice the limit through):

- per client address, every attempt (``LOGIN_RATE_PER_ADDRESS``);
- per account and address, attempts that did not succeed
  (``LOGIN_RATE_PER_ACCOUNT``): a stranger's wrong passwords use up the
  stranger's own allowance at that account, never the owner's;
- per account, failures from every address, bounded at
  ``ACCOUNT_FAILURES_FACTOR`` times that (100 by default). Past the bound,
  an address that has itself failed at the account in the window is refused;
  one that has not still gets its attempt. A guess spread over many addresses
  gets one try per fresh address, and the owner, from an address that has not
  failed, still logs in (docs/security.md says why this trade-off).

A check is all or nothing: an attempt any limit refuses counts against none,
so an address refused for itself costs the accounts it names nothing. An
attempt is counted as a failure when it is let through (so that concurrent
guesses cannot all pass before the first failure lands) and given back by
:meth:`LoginLimiter.succeeded` when the password matched: the owner's own
logins never use up their limit.

When Redis is down the limits fail open, by choice: a login storm is already
bounded by bcrypt's cost and auth's hard concurrency limit, and refusing every
login during a Redis outage would turn a cache failure into a sale outage.

A request whose client address is unknown (``shared.http.client_address``
found fewer X-Forwarded-For entries than ``TRUSTED_PROXIES``) skips the
per-address limit, by choice too: the alternative, one shared key for every
such request, lets the first hundred logins of a sale lock out the rest. Its
failures count per account under one "unknown" address, the per-account limit
as it was; each such request is counted
(``flashsale_client_address_unknown_total``) and logged at most once every
UNKNOWN_ADDRESS_LOG_SECONDS, with the number of requests it stands for.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.errors import RateLimited
from shared.redisconn import RedisConn, RedisDown

log = logging.getLogger(__name__)
UNKNOWN_ADDRESS_LOG_SECONDS = 60.0
ACCOUNT_FAILURES_FACTOR = 10  # the account-wide bound on failures, in per-account-and-address limits
UNKNOWN_ADDRESS = "unknown"  # the address key of the failures of requests with no client address

# KEYS: the logs to count the attempt in. ARGV: now (ms), window (ms), this attempt's member,
# one limit per key, then the 1-based index of the account-wide log (0: none), which binds
# only when the log before it (the account and address's) holds a failure.
# Returns {0, 0} when counted in every log, else {index of the refusing log, ms until it frees}.
SLIDING_WINDOWS = """
local now, window, member = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local guarded = tonumber(ARGV[4 + #KEYS])
local counts = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  counts[i] = redis.call('ZCARD', key)
end
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 + i])
  if counts[i] >= limit and (i ~= guarded or counts[i - 1] > 0) then
    -- Freed when the entry that puts it at its limit lapses (for the guarded log, or the address's last failure).
    local frees = tonumber(redis.call('ZRANGE', key, counts[i] - limit, counts[i] - limit, 'WITHSCORES')[2])
    if i == guarded then
      local last = tonumber(redis.call('ZRANGE', KEYS[i - 1], -1, -1, 'WITHSCORES')[2])
      frees = math.min(frees, last)
    end
    return {i, frees + window - now}
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, window)
end
return {0, 0}
"""


@dataclass(frozen=True)
class Attempt:
    """A login let through: where it was counted as a failure, until :meth:`LoginLimiter.succeeded` gives it back."""

    member: str
    failure_keys: tuple[str, ...]


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
        self._script: Any = None

    def check(self, email: str, address: str | None) -> Attempt | None:
        """Count one login attempt, or raise RateLimited; ``address`` None: no per-address limit.

        Returns where the attempt counts as a failure (None: nowhere), for :meth:`succeeded`.
        """
        limits: list[tuple[str, int, str]] = []
        if address is None:
            self._address_unknown()
        elif self.per_address > 0:
            limits.append((f"fs:rl:address:{_digest(address)}", self.per_address, "too many login attempts from this address"))
        failures: list[str] = []
        if self.per_account > 0:
            account = _digest(email)
            pair = f"fs:rl:failed:{account}:{_digest(address or UNKNOWN_ADDRESS)}"
            whole = f"fs:rl:failed:{account}"
            limits.append((pair, self.per_account, "too many failed logins at this account from this address"))
            limits.append((whole, self.per_account * ACCOUNT_FAILURES_FACTOR, "too many failed logins at this account"))
            failures = [pair, whole]
        member = uuid.uuid4().hex
        if not self._count(limits, member, guarded=len(limits) if failures else 0):
            return None
        return Attempt(member, tuple(failures)) if failures else None

    def succeeded(self, attempt: Attempt | None) -> None:
        """The password matched: the attempt was no failure, and counts against nothing at the account."""
        if attempt is None:
            return

        def give_back(client):  # type: ignore[no-untyped-def]
            pipe = client.pipeline(transaction=False)
            for key in attempt.failure_keys:
                pipe.zrem(key, attempt.member)
            return pipe.execute()

        try:
            self.redis.call(give_back)
        except RedisDown:
            log.warning("rate limits skipped: redis unavailable")

    def check_registration(self, address: str | None) -> None:
        """Count one registration: each costs a bcrypt hash, so a script must not make them freely."""
        if address is None:
            self._address_unknown()
            return
        if self.registrations_per_address > 0:
            limit = (f"fs:rl:register:{_digest(address)}", self.registrations_per_address, "too many registrations from this address")
            self._count([limit], uuid.uuid4().hex, guarded=0)

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

    def _count(self, limits: list[tuple[str, int, str]], member: str, *, guarded: int) -> bool:
        """Count the attempt in every log, or raise RateLimited for the first that refuses; False: Redis is down."""
        if not limits:
            return True
        window_ms = self.window * 1000
        args = [int(time.time() * 1000), window_ms, member, *(limit for _, limit, _ in limits), guarded]

        def count(client):  # type: ignore[no-untyped-def]
            if self._script is None:
                self._script = client.register_script(SLIDING_WINDOWS)
            return self._script(keys=[key for key, _, _ in limits], args=args, client=client)

        try:
            refused, wait_ms = self.redis.call(count)
        except RedisDown:
            log.warning("rate limits skipped: redis unavailable")
            return False
        if int(refused):
            raise RateLimited(max(1, math.ceil(int(wait_ms) / 1000)), limits[int(refused) - 1][2])
        return True


def _digest(value: str) -> str:
    # Emails and addresses never appear in Redis key names in clear.
    return hashlib.sha256(value.encode()).hexdigest()[:32]
