"""Slow clients against auth: do they hold up other people's logins?

auth runs gunicorn's gthread workers (one thread each: bcrypt is CPU-bound).
A thread that has started reading a request blocks until the request is
complete, so a client that trickles its headers, or never finishes its body,
keeps that thread. This measures login latency with no slow clients and with
as many slow clients as auth has threads.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ops.devstack import local_stack
from tests.faults.crowd import percentile
from tests.faults.injectors import SlowClients

WORKERS, THREADS = 2, 1
PATIENCE = 3.0  # seconds a login may take before it counts as held up (a calm one takes milliseconds)


@dataclass
class SlowAuthReport:
    calm_p95: float
    slow_p95: float
    held_up: int  # logins that did not finish within PATIENCE with slow clients connected
    logins: int
    slow_clients: int

    @property
    def ok(self) -> bool:
        return self.held_up == 0 and self.slow_p95 <= max(2 * self.calm_p95, self.calm_p95 + 0.5)


def login_seconds(base_url: str) -> float:
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=PATIENCE)
    started = time.perf_counter()
    try:
        body = json.dumps({"email": "nobody@example.com", "password": "wrong horse battery"})
        connection.request("POST", "/login", body=body, headers={"Content-Type": "application/json"})
        connection.getresponse().read()
    except TimeoutError:
        return PATIENCE
    finally:
        connection.close()
    return time.perf_counter() - started


def measure(workdir: Path, *, logins: int = 10, slow_clients: int = WORKERS * THREADS) -> SlowAuthReport:
    env = {"WORKERS": str(WORKERS), "THREADS": str(THREADS), "BCRYPT_ROUNDS": "4", "LOG_LEVEL": "WARNING",
           "LOGIN_RATE_PER_ACCOUNT": "0", "LOGIN_RATE_PER_ADDRESS": "0"}  # fmt: skip
    with local_stack(workdir, functions=("auth",), extra_env=env) as (stack, _redis):
        url = stack.url("auth")
        calm = [login_seconds(url) for _ in range(logins)]
        slow = SlowClients(url, slow_clients, path="/login").start()
        try:
            held = [login_seconds(url) for _ in range(logins)]
        finally:
            slow.stop()
    return SlowAuthReport(percentile(calm, 0.95), percentile(held, 0.95), sum(s >= PATIENCE for s in held), logins, slow.count)
