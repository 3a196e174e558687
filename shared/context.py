"""The clients a function process shares across requests.

Created lazily, once per process (a forked gunicorn worker builds its own), so
warm instances reuse connections and nothing connects at import time.
"""

from __future__ import annotations

import os
import threading
from functools import cached_property

from shared import logs
from shared.accounts import Accounts
from shared.events import EventEmitter
from shared.gate import Gate
from shared.ordering import OrderDesk
from shared.ratelimit import LoginLimiter
from shared.redisconn import RedisConn
from shared.sales_feed import SalesFeed
from shared.settings import Settings, get_settings
from shared.stock import StockCache
from shared.store import Store, open_store
from shared.tokens import TokenSigner, TokenVerifier


class Context:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        logs.configure(settings)

    @cached_property
    def store(self) -> Store:
        return open_store(self.settings)

    @cached_property
    def redis(self) -> RedisConn:
        return RedisConn(self.settings)

    @cached_property
    def verifier(self) -> TokenVerifier:
        return TokenVerifier(self.settings)

    @cached_property
    def signer(self) -> TokenSigner:
        return TokenSigner(self.settings)

    @cached_property
    def stock(self) -> StockCache:
        return StockCache(self.store, self.redis, self.settings.stock_cache_ttl_seconds)

    @cached_property
    def gate(self) -> Gate:
        return Gate(self.redis)

    @cached_property
    def emitter(self) -> EventEmitter:
        return EventEmitter(self.settings.k_sink)

    @cached_property
    def orders(self) -> OrderDesk:
        return OrderDesk(self.store, self.gate, self.stock, self.emitter, sold_out_memo_seconds=self.settings.sold_out_memo_seconds)

    @cached_property
    def sales_feed(self) -> SalesFeed:
        return SalesFeed(self.store, self.redis, self.stock)

    @cached_property
    def accounts(self) -> Accounts:
        s = self.settings
        limiter = LoginLimiter(self.redis, s.login_rate_per_account, s.login_rate_per_address, s.login_rate_window_seconds)
        return Accounts(self.store, self.signer, limiter, s.bcrypt_rounds)

    def ready_checks(self, *, database: bool = True, redis: bool = True) -> dict[str, object]:
        checks: dict[str, object] = {}
        if database:
            checks["database"] = self.store.ping
        if redis:
            checks["redis"] = self.redis.ping
        return checks


_context: Context | None = None
_pid = 0
_lock = threading.Lock()


def context() -> Context:
    global _context, _pid
    if _context is None or _pid != os.getpid():
        with _lock:
            if _context is None or _pid != os.getpid():
                _context, _pid = Context(get_settings()), os.getpid()
    return _context


def reset(settings: Settings | None = None) -> Context:
    """Start over with new settings (tests)."""
    global _context, _pid
    with _lock:
        _context, _pid = Context(settings or get_settings()), os.getpid()
    return _context
