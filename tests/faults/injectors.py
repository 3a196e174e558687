"""The faults. Each breaks one thing on a running local stack, at a chosen moment of the sale.

They act from outside, as the world would: a signal to a process, a command
to redis-server, a lock or a failing trigger in the database file, sockets
that never finish their request. None of them touches flashsale's code.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

import redis as redis_lib

from ops.devstack import RedisServer, Stack, wait_until
from shared.gate import buyers_key
from tests.faults.crowd import Buyer, Crowd, send_order

FAILING_TRIGGER = "flashsale_fault_injection"


class Sale(Protocol):
    """What an injector may use: the stack, its redis-server, the database file and the crowd."""

    stack: Stack
    redis: RedisServer
    database: Path
    crowd: Crowd
    stock: int
    repeats: int
    vanishers: list[Buyer]  # buyers outside the crowd whose requests die and who never come back
    fault_at: float | None  # time.monotonic() when a one-off fault struck

    def note(self, text: str) -> None: ...

    def when_sold(self, fraction: float) -> bool: ...


# processes -----------------------------------------------------------------
def children(parent: int) -> list[int]:
    """Live child processes of ``parent``, oldest first (from /proc: Linux only)."""
    found: list[tuple[int, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = stat[stat.rindex(")") + 2 :].split()
        state, ppid, started = fields[0], int(fields[1]), int(fields[19])
        if ppid == parent and state != "Z":
            found.append((started, int(entry.name)))
    return [pid for _, pid in sorted(found)]


def kill_order_workers(sale: Sale) -> None:
    """SIGKILL a gunicorn worker of the order function (never the master) amid a burst of requests, repeatedly.

    The oldest worker is chosen: it has been serving, where a just-forked
    replacement may not have taken a request yet. The wire errors the crowd
    records (closed, reset) count the requests that were cut off.
    """
    master = sale.stack.processes["order"].pid
    expected = len(children(master))
    for strike in range(sale.repeats):
        if not sale.when_sold((strike + 1) / (sale.repeats + 1)):
            break
        sale.crowd.wait_until(lambda: sale.crowd.in_flight >= 3, timeout=5)
        workers = children(master)
        if not workers:
            break
        in_flight = sale.crowd.in_flight
        os.kill(workers[0], signal.SIGKILL)
        sale.note(f"SIGKILL order worker {workers[0]} ({in_flight} requests in flight)")
        # gunicorn's master forks a replacement; let it appear before the next strike
        wait_until(lambda v=workers[0]: v not in children(master) and len(children(master)) >= expected, 30, "a replacement worker")


def strand_and_crash(sale: Sale) -> None:
    """Every order worker SIGKILLed at once (a pod OOM-killed) while orders the gate admitted wait for the database.

    The vanishing buyers' orders are admitted by the gate and then held at the
    database's write lock, so the crash certainly catches them between the
    two; their buyers never come back (a closed app), so nothing but the gate's
    count is left of them: units the gate calls gone and the database still has.
    """
    if not sale.when_sold(0.3):
        return
    master = sale.stack.processes["order"].pid
    expected = len(children(master))
    client = redis_lib.Redis.from_url(sale.redis.url)
    holder = sqlite3.connect(sale.database, isolation_level=None, timeout=10)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        url, sku = sale.crowd.base_url, sale.crowd.sku
        for buyer in sale.vanishers:
            threading.Thread(target=send_order, args=(url, buyer.token, sku, 1, buyer.key, 30.0), daemon=True).start()
        wait_until(lambda: all(client.hexists(buyers_key(sku), b.user_id) for b in sale.vanishers), 10, "the vanishing buyers' admissions")
        workers = children(master)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        sale.fault_at = time.monotonic()
        sale.note(
            f"{len(sale.vanishers)} orders admitted by the gate wait for the database; SIGKILL all {len(workers)} order workers"
            f" ({sale.crowd.in_flight} crowd requests in flight); those {len(sale.vanishers)} buyers never come back"
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        client.close()
    wait_until(lambda: len(set(children(master)) - set(workers)) >= expected, 30, "replacement workers")
    sale.note("gunicorn forked replacement workers; nobody runs a command from here on")


# redis -----------------------------------------------------------------------
def restart_redis(sale: Sale) -> None:
    """redis-server stopped and started again on the same port: persistence is off, so the gate is gone."""
    if sale.when_sold(0.4):
        sale.redis.stop()
        sale.note("redis-server stopped")
        sale.redis.start()
        sale.note(f"redis-server started again on port {sale.redis.port}, empty")


def flush_redis(sale: Sale) -> None:
    for fraction in (0.3, 0.6)[: max(1, sale.repeats)]:
        if not sale.when_sold(fraction):
            return
        client = redis_lib.Redis.from_url(sale.redis.url)
        try:
            client.flushall()
        finally:
            client.close()
        sale.note("FLUSHALL")


def stop_redis(sale: Sale) -> None:
    """redis-server gone for the rest of the sale, reconcile included."""
    if sale.when_sold(0.3):
        sale.redis.stop()
        sale.note("redis-server stopped for good")


# the database ----------------------------------------------------------------
LOCK_SECONDS = 0.4


def lock_database(sale: Sale) -> None:
    """Another connection holds the write lock (BEGIN EXCLUSIVE) for a while, a few times during the sale."""
    strikes = max(1, sale.repeats // 2)
    for strike in range(strikes):
        if not sale.when_sold((strike + 1) / (strikes + 1)):
            return
        holder = sqlite3.connect(sale.database, isolation_level=None, timeout=10)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            sale.note(f"database write-locked for {LOCK_SECONDS * 1000:.0f} ms")
            time.sleep(LOCK_SECONDS)  # the length of the fault, not a wait for readiness
            holder.execute("COMMIT")
        finally:
            holder.close()


FAIL_SECONDS = 1.0


def fail_writes(sale: Sale) -> None:
    """Every order write fails for a while, after the gate has admitted the buyer.

    A trigger on ``orders`` calls a function that does not exist, so the
    INSERT inside place_order's transaction fails with an OperationalError,
    as a full disk or an I/O error would, after the sale row was updated.
    """
    if not sale.when_sold(0.4):
        return
    admin = sqlite3.connect(sale.database, isolation_level=None, timeout=10)
    try:
        admin.execute(f"CREATE TRIGGER {FAILING_TRIGGER} BEFORE INSERT ON orders BEGIN SELECT flashsale_injected_write_failure(); END")
        sale.note(f"order writes fail for {FAIL_SECONDS * 1000:.0f} ms")
        time.sleep(FAIL_SECONDS)  # the length of the fault
        admin.execute(f"DROP TRIGGER {FAILING_TRIGGER}")
        sale.note("order writes work again")
    finally:
        admin.close()


# clients ---------------------------------------------------------------------
class SlowClients:
    """Connections that never finish their request.

    Half trickle header bytes for as long as they live (slowloris); the other
    half finish their headers promising a body and send only part of it.
    """

    def __init__(self, base_url: str, count: int, *, path: str = "/orders") -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.count = count
        self.path = path
        self.sockets: list[socket.socket] = []
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SlowClients:
        for i in range(self.count):
            sock = socket.create_connection(self.address, timeout=5)
            head = f"POST {self.path} HTTP/1.1\r\nHost: {self.address[0]}\r\nContent-Type: application/json\r\n"
            if i % 2:
                sock.sendall((head + 'Content-Length: 64\r\nAuthorization: Bearer x\r\n\r\n{"sku": "').encode())
            else:
                sock.sendall(head.encode() + b"X-Slow: ")
            self.sockets.append(sock)
        self._thread = threading.Thread(target=self._trickle, name="slow-clients", daemon=True)
        self._thread.start()
        return self

    def _trickle(self) -> None:
        while not self._stop.wait(0.5):
            for i, sock in enumerate(self.sockets):
                if i % 2 == 0 and sock.fileno() != -1:
                    try:
                        sock.sendall(random.choice(b"abcdefgh").to_bytes(1, "big"))
                    except OSError:
                        self.closed_by_server += 1
                        sock.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for sock in self.sockets:
            sock.close()


def slow_clients(sale: Sale) -> None:
    """Slow clients hold connections to the order function for the whole sale."""
    slow = SlowClients(sale.stack.url("order"), 10 * max(1, sale.repeats)).start()
    sale.note(f"{slow.count} slow clients connected")
    sale.crowd.done.wait(120)
    slow.stop()
    sale.note(f"{slow.closed_by_server} slow clients were cut off by the server")
