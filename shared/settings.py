"""The one place flashsale reads its configuration from the environment.

Every other module takes a :class:`Settings`; nothing else reads ``os.environ``.
The README's configuration table is checked against :data:`FIELDS` by a test.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


@dataclass(frozen=True)
class Field:
    env: str
    default: Any
    parse: Callable[[str], Any]
    doc: str


def setting(env: str, default: Any, parse: Callable[[str], Any], doc: str) -> Any:
    """One setting, declared once: its variable, default, parser and the README's line for it."""
    return field(default=default, metadata={"spec": Field(env, default, parse, doc)})


@dataclass(frozen=True)
class Settings:
    function: str = setting("FUNCTION", "", str, "Which function this process serves: auth, stock, order or events.")
    port: int = setting("PORT", 8080, int, "Port the function listens on (Knative sets it).")
    bind_host: str = setting(
        "BIND_HOST",
        "0.0.0.0",
        str,
        "Address the function listens on: every interface in a container; `make run` sets `127.0.0.1`, so only this machine reaches it.",
    )
    database_url: str = setting(
        "DATABASE_URL",
        "sqlite:///var/flashsale.db",
        str,
        "`sqlite:///path` (embedded default) or a `mongodb://` / `mongodb+srv://` URI (production).",
    )
    mongodb_database: str = setting("MONGODB_DATABASE", "flashsale", str, "Database name inside MongoDB.")
    redis_url: str = setting("REDIS_URL", "redis://127.0.0.1:6379/0", str, "Redis for the admission gate, stock cache and rate limits.")
    redis_timeout_seconds: float = setting(
        "REDIS_TIMEOUT_SECONDS",
        0.5,
        float,
        "Socket timeout for Redis calls; past it Redis counts as down.",
    )
    redis_retry_after_seconds: float = setting(
        "REDIS_RETRY_AFTER_SECONDS",
        2.0,
        float,
        "After a Redis error, go straight to the database for this long.",
    )
    bcrypt_rounds: int = setting("BCRYPT_ROUNDS", 12, int, "bcrypt cost factor for password hashes (4-31).")
    token_ttl_seconds: int = setting("TOKEN_TTL_SECONDS", 900, int, "Lifetime of an access token.")
    jwt_private_key_file: str = setting(
        "JWT_PRIVATE_KEY_FILE",
        "var/keys/signing.pem",
        str,
        "Ed25519 signing key (PEM). Only auth needs it.",
    )
    jwt_public_key_file: str = setting(
        "JWT_PUBLIC_KEY_FILE",
        "var/keys/signing.pub.pem",
        str,
        "Ed25519 public key (PEM) used to verify tokens.",
    )
    jwt_issuer: str = setting("JWT_ISSUER", "flashsale", str, "`iss` claim written and required.")
    jwt_audience: str = setting("JWT_AUDIENCE", "flashsale", str, "`aud` claim written and required.")
    stock_cache_ttl_seconds: float = setting(
        "STOCK_CACHE_TTL_SECONDS",
        1.0,
        float,
        "How stale a stock answer may be (Redis and in-process caches, and Cache-Control).",
    )
    sold_out_memo_seconds: float = setting(
        "SOLD_OUT_MEMO_SECONDS",
        1.0,
        float,
        "How long a worker answers `sold_out` from memory before asking Redis again.",
    )
    heal_interval_seconds: float = setting(
        "HEAL_INTERVAL_SECONDS",
        10.0,
        float,
        "How often stock and events look for a sold-out gate while the database still has units (admissions whose orders"
        " never landed, after a crash) and rebuild it; one pass at a time for the whole deployment. 0 turns healing off.",
    )
    heal_grace_seconds: float = setting(
        "HEAL_GRACE_SECONDS",
        5.0,
        float,
        "How long such a gate must stay sold out, with no order landing meanwhile, before it is rebuilt: longer than an"
        " order is in flight.",
    )
    order_batch_wait_ms: float = setting(
        "ORDER_BATCH_WAIT_MS",
        0.0,
        float,
        "Group commit: how long the first order of a batch waits for others before it is written. 0: written as soon as"
        " the previous batch is, so a batch is what arrived during the write before it (no wait when the store is idle).",
    )
    order_batch_max: int = setting("ORDER_BATCH_MAX", 64, int, "Group commit: most orders one database write confirms.")
    login_rate_per_account: int = setting(
        "LOGIN_RATE_PER_ACCOUNT",
        10,
        int,
        "Failed logins per account and client address per window; an account takes 10 times as many from all addresses (0 disables).",
    )
    login_rate_per_address: int = setting("LOGIN_RATE_PER_ADDRESS", 100, int, "Login attempts per client address per window (0 disables).")
    register_rate_per_address: int = setting(
        "REGISTER_RATE_PER_ADDRESS",
        20,
        int,
        "Registrations per client address per window (0 disables).",
    )
    login_rate_window_seconds: int = setting("LOGIN_RATE_WINDOW_SECONDS", 60, int, "Window of the login rate limits.")
    trusted_proxies: int = setting(
        "TRUSTED_PROXIES",
        0,
        int,
        "How many proxies in front of auth append to `X-Forwarded-For`: the client is that many entries from the end;"
        " a shorter chain gives no address, and the per-address login limits are skipped for that request.",
    )
    max_body_bytes: int = setting("MAX_BODY_BYTES", 16384, int, "Largest request body accepted (413 above).")
    body_timeout_seconds: float = setting(
        "BODY_TIMEOUT_SECONDS",
        5.0,
        float,
        "A request's body must arrive in full within this many seconds of its headers; otherwise `408` and the connection is closed.",
    )
    k_sink: str = setting("K_SINK", "", str, "Where `order.placed` CloudEvents go (Knative's SinkBinding sets it); empty disables.")
    log_level: str = setting("LOG_LEVEL", "INFO", str, "DEBUG, INFO, WARNING or ERROR.")
    log_format: str = setting("LOG_FORMAT", "json", str, "`json` (one object a line) or `text` for a person at a terminal.")
    log_sample_every: int = setting(
        "LOG_SAMPLE_EVERY",
        100,
        int,
        "Routine answers (4xx refusals, 200 reads) get one access line in this many per route, status and code, carrying"
        " the count it stands for; 5xx errors, 201s and slow answers always get theirs. 1 logs every answer.",
    )
    log_slow_ms: float = setting("LOG_SLOW_MS", 1000.0, float, "An answer slower than this always gets its access line.")
    workers: int = setting("WORKERS", 0, int, "gunicorn worker processes; 0 picks the function's default (one per CPU).")
    threads: int = setting(
        "THREADS",
        0,
        int,
        "auth: bcrypt hashes one worker runs at once (default 1); events: threads per worker (default 4).",
    )
    worker_connections: int = setting(
        "WORKER_CONNECTIONS",
        10000,
        int,
        "Connections per gevent worker (auth, stock, order): a burst queues here, not in the kernel.",
    )
    accept_burst: int = setting(
        "ACCEPT_BURST",
        100,
        int,
        "Connections a gevent worker takes from the kernel's accept queue per turn of its loop (gunicorn's own is 1): "
        "a crowd's connections wait in the worker, not in a queue the kernel overflows.",
    )
    first_byte_timeout_seconds: float = setting(
        "FIRST_BYTE_TIMEOUT_SECONDS",
        15.0,
        float,
        "How long a new connection to a gevent worker may stay silent; its headers then have the 5 s keep-alive timeout.",
    )
    access_log: bool = setting("ACCESS_LOG", False, _bool, "Also write gunicorn's access log.")
    metrics: bool = setting(
        "METRICS",
        True,
        _bool,
        "Count requests, orders and the rest for `/metrics`; off only to measure what counting costs.",
    )
    prometheus_multiproc_dir: str = setting(
        "PROMETHEUS_MULTIPROC_DIR",
        "",
        str,
        "Where a function's gunicorn workers share their metrics (`/metrics` sums them). "
        "`python -m shared.serving` empties it at start, or makes a fresh one when unset.",
    )
    metrics_flush_seconds: float = setting(
        "METRICS_FLUSH_SECONDS",
        1.0,
        float,
        "How often a gunicorn worker writes its counts to the shared metrics files; a scrape sees the other workers' "
        "counts at most this late (its own at once). A worker killed outright loses at most this much of its counts.",
    )
    otel_traces_exporter: str = setting(
        "OTEL_TRACES_EXPORTER",
        "none",
        str,
        "Tracing: `none` (off), `otlp` (to `OTEL_EXPORTER_OTLP_ENDPOINT`; the other standard `OTEL_*` variables apply) "
        "or `console` (a JSON line per span on stdout).",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, spec in FIELDS.items():
            raw = env.get(spec.env)
            if raw is None or raw == "":
                values[name] = spec.default
                continue
            try:
                values[name] = spec.parse(raw)
            except ValueError as exc:
                raise ValueError(f"{spec.env}={raw!r}: {exc}") from exc
        settings = cls(**values)
        settings.validate()
        return settings

    @staticmethod
    def is_set(env_name: str, environ: Mapping[str, str] | None = None) -> bool:
        """Whether the operator set a variable (not just its default)."""
        return bool((os.environ if environ is None else environ).get(env_name))

    @classmethod
    def env_names(cls) -> frozenset[str]:
        return frozenset(spec.env for spec in FIELDS.values())

    def validate(self) -> None:
        if not 4 <= self.bcrypt_rounds <= 31:
            raise ValueError("BCRYPT_ROUNDS must be between 4 and 31")
        if self.token_ttl_seconds <= 0:
            raise ValueError("TOKEN_TTL_SECONDS must be positive")
        if self.max_body_bytes < 256:
            raise ValueError("MAX_BODY_BYTES must be at least 256")
        if self.body_timeout_seconds <= 0:
            raise ValueError("BODY_TIMEOUT_SECONDS must be positive")
        if self.heal_interval_seconds < 0 or self.heal_grace_seconds < 0:
            raise ValueError("HEAL_INTERVAL_SECONDS and HEAL_GRACE_SECONDS must be >= 0")
        if self.log_sample_every < 1:
            raise ValueError("LOG_SAMPLE_EVERY must be at least 1")
        if self.log_format not in {"json", "text"}:
            raise ValueError("LOG_FORMAT must be json or text")
        if self.stock_cache_ttl_seconds <= 0:
            raise ValueError("STOCK_CACHE_TTL_SECONDS must be positive")
        if self.order_batch_wait_ms < 0 or self.order_batch_max < 1:
            raise ValueError("ORDER_BATCH_WAIT_MS must be >= 0 and ORDER_BATCH_MAX >= 1")
        if self.metrics_flush_seconds <= 0:
            raise ValueError("METRICS_FLUSH_SECONDS must be positive")
        if self.accept_burst < 1:
            raise ValueError("ACCEPT_BURST must be at least 1")
        if self.first_byte_timeout_seconds <= 0:
            raise ValueError("FIRST_BYTE_TIMEOUT_SECONDS must be positive")
        if self.otel_traces_exporter not in {"none", "otlp", "console"}:
            raise ValueError("OTEL_TRACES_EXPORTER must be none, otlp or console")

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def uses_mongodb(self) -> bool:
        return self.database_url.startswith(("mongodb://", "mongodb+srv://"))


# Each setting's spec by field name: what from_env reads, and the README's configuration table.
FIELDS: dict[str, Field] = {f.name: f.metadata["spec"] for f in dataclasses.fields(Settings)}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings.from_env()
