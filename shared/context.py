"""The clients a function process shares across requests.

Created lazily, once per process (a forked gunicorn worker builds its own), so
warm instances reuse connections and nothing connects at import time. Each
client's hooks are attached to the metrics here, where it is built.
"""

from __future__ import annotations

import os
import threading
from functools import cached_property
from typing import cast

import flask

from shared import logs, metrics, tracing
from shared.accounts import Accounts
from shared.blocking import gevent_active
from shared.events import EventEmitter
from shared.gate import Gate
from shared.healing import Healer
from shared.http import ReadinessCheck, Router, install_problem_pages
from shared.ordering import OrderDesk
from shared.ratelimit import LoginLimiter
from shared.redisconn import RedisConn
from shared.sales_feed import SalesFeed
from shared.serving import worker_plan
from shared.settings import Settings, get_settings
from shared.stock import StockCache
from shared.store import Store, open_store
from shared.store.batching import OrderBatcher
from shared.store.offload import OffloadedStore
from shared.store.sqlite import SqliteStore
from shared.tokens import TokenSigner, TokenVerifier


class Context:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        logs.configure(settings)

    @cached_property
    def store(self) -> Store:
        store = open_store(self.settings)
        if gevent_active() and isinstance(store, SqliteStore):
            return cast(Store, OffloadedStore(store))
        return store

    @cached_property
    def redis(self) -> RedisConn:
        redis = RedisConn(self.settings)
        if self.settings.metrics:
            redis.on_error = metrics.dependency_error("redis")
        return redis

    @cached_property
    def verifier(self) -> TokenVerifier:
        return TokenVerifier(self.settings)

    @cached_property
    def signer(self) -> TokenSigner:
        return TokenSigner(self.settings)

    @cached_property
    def stock(self) -> StockCache:
        stock = StockCache(self.store, self.redis, self.settings.stock_cache_ttl_seconds)
        if self.settings.metrics:
            stock.observers.append(metrics.observe_stock_read)
        return stock

    @cached_property
    def gate(self) -> Gate:
        return Gate(self.redis)

    @cached_property
    def emitter(self) -> EventEmitter:
        emitter = EventEmitter(self.settings.k_sink)
        if self.settings.metrics:
            emitter.on_error = metrics.dependency_error("sink")
        if tracing.enabled(self.settings):
            emitter.on_emit.append(tracing.carry_trace_context)
        return emitter

    @cached_property
    def orders(self) -> OrderDesk:
        s = self.settings
        # Group commit: the orders admitted at about the same moment share one write and one fsync.
        batcher = OrderBatcher(self.store, max_wait_s=s.order_batch_wait_ms / 1000, max_size=s.order_batch_max)
        desk = OrderDesk(self.store, self.gate, self.stock, self.emitter, sold_out_memo_seconds=s.sold_out_memo_seconds, placer=batcher)
        if self.settings.metrics:
            # The stock as the worker last read it: a confirmed order has just read the sale, and a refusal
            # from memory must do no I/O at all, not even for a gauge.
            desk.observers.append(metrics.order_observer(desk.known_total))
            desk.on_store_error.append(metrics.dependency_error("database"))
        return desk

    @cached_property
    def sales_feed(self) -> SalesFeed:
        return SalesFeed(self.store, self.redis, self.stock)

    @cached_property
    def accounts(self) -> Accounts:
        s = self.settings
        limiter = LoginLimiter(
            self.redis, s.login_rate_per_account, s.login_rate_per_address, s.login_rate_window_seconds, s.register_rate_per_address
        )
        # As many bcrypt hashes at once as the worker plan gives auth hashing threads (THREADS, else one per CPU).
        accounts = Accounts(self.store, self.signer, limiter, s.bcrypt_rounds, hashes_at_once=worker_plan("auth", s).threads)
        if s.metrics:
            accounts.observe_login.append(metrics.observe_login)
            accounts.observe_hash.append(metrics.observe_password_hash)
            limiter.observe_unknown_address.append(metrics.observe_client_address_unknown)
        return accounts

    @cached_property
    def healer(self) -> Healer:
        on_heal = (lambda _healed: metrics.observe_gate_heal()) if self.settings.metrics else None
        return Healer(self.store, self.gate, self.stock, grace_seconds=self.settings.heal_grace_seconds, on_heal=on_heal)

    @staticmethod
    def ready_checks(*, key: str | None = None) -> dict[str, ReadinessCheck]:
        """What a function's ``/readyz`` checks, for its Router's ``readiness``.

        Not ready only for what stops the function answering correctly: the
        database, and the key it signs (``key="signing_key"``: auth) or
        verifies (``key="public_key"``: order) tokens with. Redis is reported,
        never failed: without it every function answers from the database,
        slower and still right, and Redis is one pod whose restart must not
        take every pod of every function out of service at once.

        Each check finds the process's context when it runs: nothing connects
        at import, and a forked worker checks its own clients.
        """
        checks: dict[str, ReadinessCheck] = {"database": lambda: context().store.ping()}
        if key == "signing_key":
            checks[key] = lambda: _loaded(context().signer.private_key)
        elif key == "public_key":
            checks[key] = lambda: _loaded(context().verifier.public_key)
        elif key is not None:
            raise ValueError(f"no readiness check for key {key!r}")
        # What /readyz shows for Redis ("degraded: ..." when it does not answer); it never raises.
        checks["redis"] = lambda: context().redis_report()
        return checks

    def redis_report(self) -> str | None:
        """None when Redis answers; otherwise how /readyz reports it (degraded, still ready). Counted in metrics."""
        try:
            self.redis.ping()
            report = None
        except Exception as exc:  # whatever Redis does, it never makes the function unready
            report = f"degraded: {type(exc).__name__}"
        if self.settings.metrics:
            metrics.observe_degraded("redis", report is not None)
        return report


def _loaded(_key: object) -> None:
    """Readiness of a key: reading it (a cached property) raised if the file could not be read."""


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


def function_router(function: str, *, key: str | None = None) -> Router:
    """A function's Router, set up as every function's is.

    Problem pages on functions-framework's Flask app (each main.py is imported
    inside its app context), readiness (the database and ``key``; Redis only
    reported, see :meth:`Context.ready_checks`), metrics and span names.
    """
    router = Router(function)
    install_problem_pages(flask.current_app)
    router.readiness = Context.ready_checks(key=key)
    metrics.instrument(router, lambda: context().settings)
    router.observers.append(tracing.name_span)
    return router
