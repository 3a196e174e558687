"""The whole function set on one machine: a private redis-server and each
function as its own process group, as its own pod would be.

Used by ``flashsale run`` (``make run``), the demo, the integration tests and
the benchmark.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TextIO

from shared.settings import FIELDS, Settings
from shared.tokens import generate_keypair

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORTS = {"auth": 8081, "stock": 8082, "order": 8083, "events": 8084}
LOCAL_HOST = "127.0.0.1"  # what the functions of a stack on this machine bind: nobody else reaches them
DEVSTACK_FILE = "devstack.json"  # in the var directory: where `make run`'s stack listens, for `flashsale` in another terminal
STOP_SECONDS = 5.0  # Ctrl-C to everything gone, at most


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


@dataclass
class Stack:
    """Configuration shared by every function process, plus where each listens."""

    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    functions: tuple[str, ...] = ("auth", "stock", "order")
    cpus: Mapping[str, str] = field(default_factory=dict)  # function -> taskset CPU list
    log_dir: Path | None = None
    log_lines: LogLines | None = None  # set: each function's output goes through it (files and terminal) instead of log_dir
    # Each function's metric files in <metrics_dir>/<function>, emptied at its start: a group killed
    # with SIGKILL cannot remove a temporary directory of its own, so it leaves nothing behind in /tmp.
    metrics_dir: Path | None = None
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
        # Local by default (an explicit BIND_HOST wins); a container keeps the settings' 0.0.0.0.
        env = {"BIND_HOST": LOCAL_HOST, **os.environ, **self.env, "FUNCTION": function, "PORT": str(self.ports[function])}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        if self.metrics_dir is not None and not env.get("PROMETHEUS_MULTIPROC_DIR"):
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir / function)
        command = [sys.executable, "-m", "shared.serving", function]
        if function in self.cpus and shutil.which("taskset"):
            command = ["taskset", "-c", self.cpus[function], *command]
        log = None
        if self.log_dir is not None and self.log_lines is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = (self.log_dir / f"{function}.log").open("ab")
        output: Any = subprocess.PIPE if self.log_lines is not None else log or subprocess.DEVNULL
        # Its own session: one signal stops the function's whole process group.
        try:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if log is not None:
                log.close()  # the child holds its own copy
        self.processes[function] = process
        if self.log_lines is not None and process.stdout is not None:
            self.log_lines.follow(function, process.stdout)

    def wait_ready(self, function: str, timeout: float = 60) -> None:
        process = self.processes[function]

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{function} exited with {process.returncode}")
            return http_ok(self.url(function) + "/readyz")

        wait_until(ready, timeout, f"{function} on port {self.ports[function]}")

    def stop_function(self, function: str, sig: int = signal.SIGTERM) -> None:
        stop_group(self.processes.pop(function, None), sig)

    def stop(self, timeout: float = 15) -> None:
        """Every function at once, against one deadline (one after another, each with its own wait, took 15 s and more)."""
        stop_groups([self.processes.pop(function) for function in list(self.processes)], timeout)


def stop_groups(processes: Iterable[subprocess.Popen[bytes] | None], timeout: float, sig: int = signal.SIGTERM) -> None:
    """Signal (SIGTERM) every process group at once, wait for all against one deadline, then SIGKILL the groups still there.

    Each process was started in its own session, so its group holds its
    children too (gunicorn's workers, which a gunicorn master waits for
    before it exits).
    """
    running = [p for p in processes if p is not None and p.poll() is None]
    for process in running:
        _signal_group(process, sig)
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
    for process in running:
        process.wait()


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def stop_group(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """Signal a process started in its own session and all its children (gunicorn's workers); SIGKILL after 15 s."""
    stop_groups([process], 15, sig)


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
    stack = Stack(env=env, ports=ports, functions=functions, cpus=cpus or {}, log_dir=workdir / "logs", metrics_dir=workdir / "metrics")
    try:
        stack.start()
        yield stack, redis
    finally:
        stack.stop()
        if redis is not None:
            redis.stop()


# `make run` -----------------------------------------------------------------
def render(function: str, line: str, *, readable: bool) -> str:
    """One line a function wrote, as the dev stack shows it: the function's name in front.

    ``readable``: ``auth   | 12:00:01 INFO    message key=value`` for a person;
    otherwise one JSON object with ``function`` as its first key, whatever the
    line was (a function's JSON log line keeps its fields; anything else,
    gunicorn's own lines, becomes the ``message``).
    """
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        if readable:
            return f"{function:<6} | {line}"
        return json.dumps({"function": function, "message": line})
    if not readable:
        return json.dumps({"function": function, **record}, default=str)
    record = dict(record)
    when = str(record.pop("time", ""))
    try:
        when = datetime.fromisoformat(when.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        pass
    severity, message = str(record.pop("severity", "")), str(record.pop("message", ""))
    exception = record.pop("exception", None)
    for noise in ("logger", "function"):
        record.pop(noise, None)
    extras = " ".join(f"{key}={value}" for key, value in record.items())
    first, *rest = message.splitlines() or [""]  # a traceback's lines follow the first, fields and all
    if exception and str(exception) not in message:
        rest += str(exception).splitlines()
    lines = [f"{when} {severity:<7} {first} {extras}".rstrip(), *rest]
    return "\n".join(f"{function:<6} | {line}" for line in lines)


class LogLines:
    """Each function's output, line by line: kept as written in ``<log_dir>/<function>.log``, and shown on ``out`` rendered."""

    def __init__(self, log_dir: Path, out: TextIO, *, readable: bool) -> None:
        self.log_dir = log_dir
        self.out = out
        self.readable = readable
        self._lock = threading.Lock()
        self._followers: list[threading.Thread] = []

    def say(self, message: str) -> None:
        """A line of the dev stack's own."""
        self._show(render("stack", message, readable=self.readable))

    def follow(self, function: str, output: IO[bytes]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{function}.log").open("ab")

        def copy() -> None:
            with log, output:
                for raw in iter(output.readline, b""):
                    log.write(raw)
                    log.flush()  # `tail -f` sees it now
                    self._show(render(function, raw.decode("utf-8", "replace").rstrip("\r\n"), readable=self.readable))

        follower = threading.Thread(target=copy, name=f"log-{function}", daemon=True)
        follower.start()
        self._followers.append(follower)

    def _show(self, text: str) -> None:
        with self._lock:
            try:
                self.out.write(text + "\n")
                self.out.flush()
            except (OSError, ValueError):
                pass  # a closed terminal or pipe: the files still get every line

    def drain(self, deadline: float) -> None:
        """Wait (until ``deadline``) for the last lines of processes that have exited."""
        for follower in self._followers:
            follower.join(max(0.0, deadline - time.monotonic()))


@dataclass(frozen=True)
class DevStackInfo:
    """What `make run` writes into ``var/devstack.json`` while it runs, for `flashsale` in another terminal."""

    pid: int  # the supervisor's: the file is believed only while it runs
    redis_url: str
    database_url: str
    jwt_private_key_file: str
    jwt_public_key_file: str
    urls: dict[str, str]
    log_dir: str

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(asdict(self), indent=2) + "\n")
        partial.replace(path)  # a reader sees the old file or the whole new one

    @classmethod
    def load(cls, path: Path) -> DevStackInfo | None:
        """The running dev stack described at ``path``; None when there is none (no file, unreadable, or its stack stopped)."""
        try:
            info = cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return info if _running(info.pid) else None

    def settings_for(self, settings: Settings, is_set: Callable[[str], bool]) -> Settings:
        """``settings`` pointed at this stack, for every setting the environment does not set itself."""
        adopted = {name: getattr(self, name) for name in ("redis_url", "database_url", "jwt_private_key_file", "jwt_public_key_file")}
        return settings.replace(**{name: value for name, value in adopted.items() if not is_set(FIELDS[name].env)})


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def absolute_database_url(url: str) -> str:
    """A relative SQLite path made absolute: the functions run in the repository, `flashsale` wherever it is typed."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.removeprefix(prefix).startswith("/"):
        return prefix + str(Path(url.removeprefix(prefix)).resolve())
    return url


def run_dev_stack(
    settings: Settings,
    is_set: Callable[[str], bool],
    *,
    var_dir: Path,
    functions: tuple[str, ...],
    ports: dict[str, int],
    redis_port: int,
    out: TextIO,
) -> int:
    """`make run`: a redis-server (unless REDIS_URL is set) and the functions, until Ctrl-C.

    Every function's lines go to ``var/log/<function>.log`` and to ``out`` with
    its name in front (readable when ``out`` is a terminal, JSON lines
    otherwise). ``var/devstack.json`` says where everything listens while the
    stack runs. Ctrl-C, SIGTERM or SIGHUP stop every process group at once
    within STOP_SECONDS; a second Ctrl-C changes nothing. Exit 1 if a function
    exits by itself (or never gets ready), else 0.
    """
    var_dir = var_dir.resolve()
    log_lines = LogLines(var_dir / "log", out, readable=out.isatty())
    keys_dir = Path(settings.jwt_private_key_file).parent if is_set("JWT_PRIVATE_KEY_FILE") else var_dir / "keys"
    private, public = (p.resolve() for p in ensure_keys(keys_dir))
    env = {
        "DATABASE_URL": absolute_database_url(settings.database_url if is_set("DATABASE_URL") else f"sqlite:///{var_dir}/flashsale.db"),
        "JWT_PRIVATE_KEY_FILE": str(Path(settings.jwt_private_key_file).resolve() if is_set("JWT_PRIVATE_KEY_FILE") else private),
        "JWT_PUBLIC_KEY_FILE": str(Path(settings.jwt_public_key_file).resolve() if is_set("JWT_PUBLIC_KEY_FILE") else public),
    }
    if "events" in functions and not is_set("K_SINK"):
        env["K_SINK"] = f"http://{LOCAL_HOST}:{ports['events']}/"  # order.placed to the local consumer, as local_stack does
    stopping = threading.Event()
    asked_at: list[float] = []  # when the first Ctrl-C came: the bound counts from there

    def stop(signum: int, _frame: Any) -> None:
        # No exception: nothing is cut half-way, and a second Ctrl-C changes nothing.
        if not stopping.is_set():
            asked_at.append(time.monotonic())
            stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    redis: RedisServer | None = None
    stack = Stack(env=env, ports=ports, functions=functions, log_lines=log_lines, metrics_dir=var_dir / "metrics")
    info_path, saved = var_dir / DEVSTACK_FILE, False
    try:
        if is_set("REDIS_URL"):
            env["REDIS_URL"] = settings.redis_url
        else:
            redis = RedisServer(port=redis_port or None, workdir=var_dir).start()
            env["REDIS_URL"] = redis.url
        for function in functions:
            stack.start_function(function)
        if not _until_ready(stack, stopping, log_lines):
            return 0 if stopping.is_set() else 1
        info = DevStackInfo(
            os.getpid(), env["REDIS_URL"], env["DATABASE_URL"], env["JWT_PRIVATE_KEY_FILE"], env["JWT_PUBLIC_KEY_FILE"],
            {function: stack.url(function) for function in functions}, str(log_lines.log_dir),
        )  # fmt: skip
        info.save(info_path)
        saved = True
        log_lines.say(f"redis  {info.redis_url}")
        for function in functions:
            log_lines.say(f"{function:<6} {stack.url(function)}")
        log_lines.say(f"database {info.database_url}; logs in {log_lines.log_dir}; `flashsale` in another terminal finds this stack")
        log_lines.say("Ctrl-C stops everything")
        while not stopping.is_set():
            for function, process in stack.processes.items():
                if process.poll() is not None:
                    log_lines.say(f"{function} exited with {process.returncode}: stopping the others")
                    return 1
            time.sleep(0.2)  # a signal cuts the sleep short
        return 0
    finally:
        deadline = (asked_at[0] if asked_at else time.monotonic()) + STOP_SECONDS
        if saved:
            info_path.unlink(missing_ok=True)  # first: from now on `flashsale` no longer takes this stack for a running one
        # The functions and Redis at once. An idle gunicorn stops in about two seconds; one
        # waiting on a client would wait its graceful timeout (10 s), so what is left once
        # the grace is over gets SIGKILL, with time to spare for that before the deadline.
        processes = [*stack.processes.values(), redis.process if redis else None]
        stack.processes.clear()
        stop_groups(processes, max(0.0, deadline - time.monotonic() - 2.0))
        log_lines.drain(deadline)
        log_lines.say("stopped")
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _until_ready(stack: Stack, stopping: threading.Event, log_lines: LogLines, timeout: float = 60) -> bool:
    """Whether every function answered /readyz; False if one exited, time ran out or a stop was asked for."""
    deadline = time.monotonic() + timeout
    waiting = list(stack.functions)
    while waiting:
        if stopping.is_set():
            return False
        for function in list(waiting):
            process = stack.processes[function]
            if process.poll() is not None:
                log_lines.say(f"{function} exited with {process.returncode} before it was ready (its lines are above)")
                return False
            if http_ok(stack.url(function) + "/readyz"):
                waiting.remove(function)
        if time.monotonic() > deadline:
            log_lines.say(f"not ready after {timeout:.0f}s: {', '.join(waiting)}")
            return False
        time.sleep(0.1)
    return True


def dev_ports(functions: Iterable[str], first_port: int) -> dict[str, int]:
    """auth, stock, order, events on ``first_port`` and the next three (8081-8084 by default); 0: any free ports."""
    names = list(DEFAULT_PORTS)
    return {function: (first_port + names.index(function) if first_port else free_port()) for function in functions}
