"""Micro-benchmarks the load scenarios are compared with, or that size a capacity plan:

- raw bcrypt: ``bcrypt.checkpw`` in one process per CPU, the ceiling for logins;
- the admission gate: ``Gate.admit`` (one Lua script call) against a real redis-server;
- the database: ``SqliteStore.place_order`` from several processes on one file;
- group commit: the same orders written ``place_orders`` a batch at a time, and
  through an :class:`OrderBatcher` fed by many threads, on the same kind of file.

Each runs ``processes`` fresh (spawned) processes that start at the same
instant and work for ``seconds``; the rate is all their calls over the slowest
one's time.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from bench.results import lower_median
from shared.gate import Gate
from shared.models import OrderRequest
from shared.redisconn import RedisConn
from shared.settings import Settings
from shared.store import open_store
from shared.store.batching import OrderBatcher

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


@dataclass(frozen=True)
class StoreRound:
    """One round of the store row: one order a transaction and a batch a transaction, run one after the other."""

    number: int
    single: Rate
    batched: Rate

    @property
    def ratio(self) -> float | None:
        return round(self.batched.per_second / self.single.per_second, 2) if self.single.per_second else None


def median_store_round(rounds: list[StoreRound]) -> StoreRound:
    """The round whose batched-over-single ratio is the median, by the pairs' rule (``bench.results.lower_median``)."""
    return lower_median(rounds, lambda r: r.ratio)


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


def _batch_worker(database_url: str, sku: str, size: int, start_at: float, seconds: float) -> tuple[int, float]:
    store = open_store(Settings.from_env({"DATABASE_URL": database_url}))
    buyer = uuid.uuid4().hex
    store.ping()
    try:
        batches, elapsed = _loop(
            lambda n: store.place_orders([OrderRequest(sku, f"{buyer}-{n}-{i}", 1) for i in range(size)]), start_at, seconds
        )
    finally:
        store.close()
    return batches * size, elapsed  # orders, not calls: the rate is comparable with one order a call


def _batcher_worker(database_url: str, sku: str, threads: int, start_at: float, seconds: float) -> tuple[int, float]:
    settings = Settings.from_env({"DATABASE_URL": database_url})
    store = open_store(settings)
    batcher = OrderBatcher(store, max_wait_s=settings.order_batch_wait_ms / 1000, max_size=settings.order_batch_max)
    store.ping()
    loops: list[tuple[int, float]] = []

    def buyer() -> None:
        name = uuid.uuid4().hex
        loops.append(_loop(lambda n: batcher.place_order(sku, f"{name}-{n}", 1), start_at, seconds))

    workers = [threading.Thread(target=buyer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    store.close()
    return sum(calls for calls, _ in loops), max(elapsed for _, elapsed in loops)


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
    """place_order calls a second from ``processes`` processes on one fresh SQLite file, each a new buyer: one order a transaction."""
    return _in_processes(_order_worker, _fresh_sale(workdir, "orders-bench"), processes, seconds)


def _fresh_sale(workdir: Path, name: str) -> tuple[str, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{workdir / f'{name}-{uuid.uuid4().hex[:8]}.db'}"
    store = open_store(Settings.from_env({"DATABASE_URL": database_url}))
    store.create_sale(name, 100_000_000, 1, None)
    store.close()
    return database_url, name


def batched_orders(workdir: Path, processes: int, seconds: float, size: int) -> Rate:
    """Orders a second written ``size`` to a transaction (``place_orders``) from ``processes`` processes on one fresh file."""
    return _in_processes(_batch_worker, (*_fresh_sale(workdir, "batched-bench"), size), processes, seconds)


def batcher_orders(workdir: Path, processes: int, seconds: float, threads: int) -> Rate:
    """Orders a second through one OrderBatcher a process (the settings' wait and size), ``threads`` buyers in each."""
    return _in_processes(_batcher_worker, (*_fresh_sale(workdir, "batcher-bench"), threads), processes, seconds)
