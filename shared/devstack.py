"""The whole function set on one machine: a private redis-server and each
function as its own process group, as its own pod would be.

Used by ``flashsale run`` (``make run``), the demo, the integration tests and
the benchmark.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from shared.tokens import generate_keypair

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORTS = {"auth": 8081, "stock": 8082, "order": 8083, "events": 8084}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check, timeout: float, what: str, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # the thing is not up yet
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s" + (f": {last}" if last else ""))


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class RedisServer:
    """A throwaway redis-server on a free port, persistence off."""

    def __init__(self, port: int | None = None, *, workdir: Path | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir or ROOT / "var"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed: run `make setup` (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_until(self._pings, 10, f"redis-server on port {self.port}")
        return self

    def _pings(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class Stack:
    """Configuration shared by every function process, plus where each listens."""

    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    functions: tuple[str, ...] = ("auth", "stock", "order")
    cpus: Mapping[str, str] = field(default_factory=dict)  # function -> taskset CPU list
    log_dir: Path | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, function: str) -> str:
        return f"http://127.0.0.1:{self.ports[function]}"

    def start(self, timeout: float = 60) -> Stack:
        for function in self.functions:
            self.start_function(function)
        for function in self.functions:
            self.wait_ready(function, timeout)
        return self

    def start_function(self, function: str) -> None:
        env = {**os.environ, **self.env, "FUNCTION": function, "PORT": str(self.ports[function])}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "shared.serving", function]
        if function in self.cpus and shutil.which("taskset"):
            command = ["taskset", "-c", self.cpus[function], *command]
        log = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = (self.log_dir / f"{function}.log").open("ab")
        # Its own session: one signal stops the function's whole process group.
        try:
            self.processes[function] = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own copy

    def wait_ready(self, function: str, timeout: float = 60) -> None:
        process = self.processes[function]

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{function} exited with {process.returncode}")
            return http_ok(self.url(function) + "/readyz")

        wait_until(ready, timeout, f"{function} on port {self.ports[function]}")

    def stop_function(self, function: str, sig: int = signal.SIGTERM) -> None:
        stop_group(self.processes.pop(function, None), sig)

    def stop(self) -> None:
        for function in list(self.processes):
            self.stop_function(function)


def stop_group(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """Signal a process started in its own session and all its children (gunicorn's workers); SIGKILL after 15 s."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def ensure_keys(directory: Path) -> tuple[Path, Path]:
    private, public = directory / "signing.pem", directory / "signing.pub.pem"
    if not (private.exists() and public.exists()):
        generate_keypair(directory)
    return private, public


@contextmanager
def local_stack(
    workdir: Path,
    *,
    redis_url: str | None = None,
    ports: dict[str, int] | None = None,
    functions: tuple[str, ...] = ("auth", "stock", "order"),
    extra_env: Mapping[str, str] | None = None,
    cpus: Mapping[str, str] | None = None,
) -> Iterator[tuple[Stack, RedisServer | None]]:
    """A running stack in ``workdir`` (database file, keys, logs); stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    private, public = ensure_keys(workdir / "keys")
    redis = None if redis_url else RedisServer(workdir=workdir).start()
    env = {
        "DATABASE_URL": f"sqlite:///{workdir / 'flashsale.db'}",
        "REDIS_URL": redis_url or (redis.url if redis else ""),
        "JWT_PRIVATE_KEY_FILE": str(private),
        "JWT_PUBLIC_KEY_FILE": str(public),
        **(extra_env or {}),
    }
    ports = ports or {f: free_port() for f in DEFAULT_PORTS}
    if "events" in functions:
        # order.placed goes to the local event consumer, as the SinkBinding points it at the Broker on Knative.
        env.setdefault("K_SINK", f"http://127.0.0.1:{ports['events']}/")
    stack = Stack(env=env, ports=ports, functions=functions, cpus=cpus or {}, log_dir=workdir / "logs")
    try:
        stack.start()
        yield stack, redis
    finally:
        stack.stop()
        if redis is not None:
            redis.stop()
