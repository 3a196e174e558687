"""Micro-benchmarks the load scenarios are compared with, or that size a capacity plan:

- raw bcrypt: ``bcrypt.checkpw`` in one process per CPU, the ceiling for logins;
- the admission gate: ``Gate.admit`` (one Lua script call) against a real redis-server;
- the database: ``SqliteStore.place_order`` from several processes on one file.

Each runs ``processes`` fresh (spawned) processes that start at the same
instant and work for ``seconds``; the rate is all their calls over the slowest
one's time.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from shared.gate import Gate
from shared.redisconn import RedisConn
from shared.settings import Settings
from shared.store import open_store

PASSWORD = b"bench-password"


@dataclass(frozen=True)
class Rate:
    calls: int
    seconds: float  # the slowest process's working time
    processes: int

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    @property
    def ms_per_call(self) -> float:
        """Average time one call took inside one process."""
        return self.seconds * self.processes * 1000 / self.calls if self.calls else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "processes": self.processes,
            "per_second": round(self.per_second, 2),
            "ms_per_call": round(self.ms_per_call, 3),
        }


def _loop(call: Callable[[int], object], start_at: float, seconds: float) -> tuple[int, float]:
    time.sleep(max(0.0, start_at - time.time()))
    started = time.perf_counter()
    calls = 0
    while time.perf_counter() - started < seconds:
        call(calls)
        calls += 1
    return calls, time.perf_counter() - started


def _bcrypt_worker(rounds: int, start_at: float, seconds: float) -> tuple[int, float]:
    hashed = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds))
    return _loop(lambda _: bcrypt.checkpw(PASSWORD, hashed), start_at, seconds)


def _gate_worker(redis_url: str, sku: str, start_at: float, seconds: float) -> tuple[int, float]:
    gate = Gate(RedisConn(Settings.from_env({"REDIS_URL": redis_url})))
    buyer = uuid.uuid4().hex
    gate.admit(sku, buyer, 1)  # connect and load the script before the clock starts
    return _loop(lambda n: gate.admit(sku, f"{buyer}-{n}", 1), start_at, seconds)


def _order_worker(database_url: str, sku: str, start_at: float, seconds: float) -> tuple[int, float]:
    store = open_store(Settings.from_env({"DATABASE_URL": database_url}))
    buyer = uuid.uuid4().hex
    store.ping()
    try:
        return _loop(lambda n: store.place_order(sku, f"{buyer}-{n}", 1), start_at, seconds)
    finally:
        store.close()


def _in_processes(target: Callable[..., tuple[int, float]], args: tuple[object, ...], processes: int, seconds: float) -> Rate:
    # spawn: each process opens its own connections, as a gunicorn worker does after fork.
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 2.0  # after every process has started and imported
    with context.Pool(processes) as pool:
        results = pool.starmap(target, [(*args, start_at, seconds)] * processes)
    return Rate(sum(calls for calls, _ in results), max(elapsed for _, elapsed in results), processes)


def bcrypt_verify(rounds: int, processes: int, seconds: float) -> Rate:
    """checkpw at ``rounds`` in ``processes`` processes: logins per second the CPUs could give."""
    return _in_processes(_bcrypt_worker, (rounds,), processes, seconds)


def gate_admits(settings: Settings, processes: int, seconds: float) -> Rate:
    """Gate.admit calls a second against ``settings.redis_url``, each admitting a new buyer to a huge sale."""
    store = open_store(settings)
    sku = f"gate-bench-{uuid.uuid4().hex[:8]}"
    store.create_sale(sku, 1_000_000_000, 1, None)
    Gate(RedisConn(settings)).rebuild(store, sku)
    store.close()
    return _in_processes(_gate_worker, (settings.redis_url, sku), processes, seconds)


def database_orders(workdir: Path, processes: int, seconds: float) -> Rate:
    """place_order calls a second from ``processes`` processes on one fresh SQLite file, each a new buyer."""
    workdir.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{workdir / f'orders-bench-{uuid.uuid4().hex[:8]}.db'}"
    store = open_store(Settings.from_env({"DATABASE_URL": database_url}))
    sku = "orders-bench"
    store.create_sale(sku, 100_000_000, 1, None)
    store.close()
    return _in_processes(_order_worker, (database_url, sku), processes, seconds)
