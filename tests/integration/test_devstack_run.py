"""`make run` (``flashsale run``) as a developer meets it, in a temporary var directory.

- Every function's lines reach the terminal with its name in front and are kept
  in var/log/<function>.log.
- Ctrl-C (SIGINT to the terminal's foreground process group) stops every
  process it started, gunicorn workers and redis-server included, within 5
  seconds; a second Ctrl-C during the shutdown changes nothing.
- ``flashsale`` typed in another terminal, with no REDIS_URL or DATABASE_URL,
  reaches that stack through var/devstack.json.
- ``flashsale reconcile`` that cannot reach Redis fails and says what to run.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis as redis_lib

from ops.devstack import DEVSTACK_FILE, free_port
from shared.gate import gate_key
from shared.settings import Settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("auth", "stock", "order")
CTRL_C_SECONDS = 5.0


def shell_env(**extra: str) -> dict[str, str]:
    """A developer's shell: none of flashsale's settings set (the test run's own stay out)."""
    env = {name: value for name, value in os.environ.items() if name not in Settings.env_names()}
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **extra}


def flashsale(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args], cwd=cwd, env=shell_env(**env), capture_output=True, text=True, timeout=120
    )


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (gunicorn masters, their workers, redis-server), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead; its new parent reaps it


@dataclass
class DevStack:
    process: subprocess.Popen[str]
    var: Path
    lines: list[str] = field(default_factory=list)

    @property
    def info(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads((self.var / DEVSTACK_FILE).read_text())
        return loaded

    def url(self, function: str) -> str:
        urls = self.info["urls"]
        assert isinstance(urls, dict)
        return str(urls[function])

    def printed(self, function: str) -> list[dict[str, object]]:
        """What the stack printed for ``function``, as the JSON objects it prints when stdout is not a terminal."""
        records = [json.loads(line) for line in list(self.lines)]
        return [r for r in records if r.get("function") == function]


def wait_for(check: Callable[..., object], seconds: float, what: str) -> None:  # ...: checks bind loop variables as lambda defaults
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} not after {seconds:.0f}s"
        time.sleep(0.05)


@pytest.fixture
def dev_stack(tmp_path: Path) -> Iterator[DevStack]:
    var = tmp_path / "var"
    command = [sys.executable, "-m", "ops.cli", "run", "--var-dir", str(var), "--redis-port", "0", "--first-port", "0"]
    env = shell_env(WORKERS="1", LOG_SAMPLE_EVERY="1", BCRYPT_ROUNDS="4")
    # Its own process group, as a shell gives a foreground job: the test plays the terminal.
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    stack = DevStack(process, var)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            stack.lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: (var / DEVSTACK_FILE).exists() or process.poll() is not None, 120, "var/devstack.json")
        assert process.poll() is None, "\n".join(stack.lines)
        yield stack
    finally:
        if process.poll() is None:  # a failed test: leave nothing behind
            for pid in descendants(process.pid) | {process.pid}:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.wait()
        reader.join(10)
        assert process.stdout is not None
        process.stdout.close()


def get(url: str, request_id: str) -> int:
    request = urllib.request.Request(url, headers={"X-Request-Id": request_id})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as answer:
        return int(answer.code)


def test_lines_are_shown_named_and_kept_and_ctrl_c_stops_everything_within_5_seconds(dev_stack: DevStack) -> None:
    marks = {function: f"devstack-{function}-{uuid.uuid4().hex[:8]}" for function in FUNCTIONS}
    for function, mark in marks.items():
        assert get(dev_stack.url(function) + "/readyz", mark) == 200
        assert dev_stack.url(function).startswith("http://127.0.0.1:")  # make run binds 127.0.0.1

    for function, mark in marks.items():
        # On the terminal (a pipe here: JSON lines), the function's name first.
        wait_for(lambda f=function, m=mark: any(r.get("request_id") == m for r in dev_stack.printed(f)), 30, f"{function}'s line")
        line = next(line for line in dev_stack.lines if marks[function] in line)
        assert line.startswith(json.dumps({"function": function})[:-1] + ","), line
        # In var/log/<function>.log, as the function wrote it.
        log = dev_stack.var / "log" / f"{function}.log"
        wait_for(lambda log=log, m=mark: log.exists() and m in log.read_text(), 30, f"{log}")
        others = [record for other in FUNCTIONS if other != function for record in dev_stack.printed(other)]
        assert not any(record.get("request_id") == mark for record in others), f"{function}'s line under another name"

    # Metric files in var/metrics/<function>, emptied when the function starts again: a group
    # killed with SIGKILL used to leave its /tmp/flashsale-metrics-* directory behind for good.
    for function in FUNCTIONS:
        assert any((dev_stack.var / "metrics" / function).glob("*.db")), function

    # A client in the middle of sending a body holds a worker: gunicorn would wait for it
    # up to its graceful timeout (10 s), so the stack must cut it off to keep its bound.
    held = [socket.create_connection(("127.0.0.1", int(dev_stack.url(f).rsplit(":", 1)[1])), timeout=10) for f in FUNCTIONS]
    for client in held:
        client.sendall(b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")

    started = descendants(dev_stack.process.pid)
    redis_port = int(str(dev_stack.info["redis_url"]).rsplit(":", 1)[1].split("/")[0])
    assert len(started) >= 1 + 2 * len(FUNCTIONS), started  # redis-server, and a gunicorn master and worker per function

    os.killpg(dev_stack.process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals its foreground process group
    pressed = time.monotonic()
    # A second Ctrl-C while it stops (once the functions are being stopped) must change nothing.
    wait_for(lambda: any("Handling signal: term" in line for line in dev_stack.lines), CTRL_C_SECONDS, "the shutdown")
    os.killpg(dev_stack.process.pid, signal.SIGINT)

    def everything_stopped() -> bool:
        return dev_stack.process.poll() is not None and not any(alive(pid) for pid in started)

    while not everything_stopped() and time.monotonic() - pressed < CTRL_C_SECONDS:
        time.sleep(0.05)
    left = sorted(pid for pid in started if alive(pid))
    assert everything_stopped(), f"after {CTRL_C_SECONDS}s: supervisor {dev_stack.process.poll()}, still running {left}"
    assert dev_stack.process.returncode == 0, "\n".join(dev_stack.lines[-20:])
    assert not (dev_stack.var / DEVSTACK_FILE).exists(), "a stopped stack must not be found by `flashsale`"
    with redis_lib.Redis(port=redis_port, socket_connect_timeout=1) as redis, pytest.raises(redis_lib.ConnectionError):
        redis.ping()
    for client in held:
        client.close()


def test_a_person_at_a_terminal_reads_text_and_one_ctrl_c_stops_it(tmp_path: Path) -> None:
    """Under a real terminal (a pty): readable lines, and Ctrl-C typed at it goes through the terminal driver."""
    var = tmp_path / "var"
    command = [sys.executable, "-m", "ops.cli", "run", "--var-dir", str(var), "--redis-port", "0", "--first-port", "0"]
    pid, terminal = pty.fork()
    if pid == 0:  # the child: a session of its own with the pty as its controlling terminal
        os.chdir(tmp_path)
        os.execve(sys.executable, command, shell_env(WORKERS="1"))
    shown = bytearray()
    status: int | None = None  # set once the child is reaped

    def read_terminal(seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until and select.select([terminal], [], [], 0.05)[0]:
            try:
                shown.extend(os.read(terminal, 65536))
            except OSError:  # the other side is gone
                return

    try:
        deadline = time.monotonic() + 120
        while not (var / DEVSTACK_FILE).exists():
            done, code = os.waitpid(pid, os.WNOHANG)
            status = code if done else None
            assert time.monotonic() < deadline and status is None, shown.decode(errors="replace")
            read_terminal(0.1)
        started = descendants(pid)
        os.write(terminal, b"\x03")  # Ctrl-C
        pressed = time.monotonic()
        while status is None and time.monotonic() - pressed < CTRL_C_SECONDS:
            read_terminal(0.05)
            done, code = os.waitpid(pid, os.WNOHANG)
            status = code if done else None
        left = sorted(p for p in started if alive(p))
        assert status is not None and not left, f"after {CTRL_C_SECONDS}s: still running {left}"
        assert os.waitstatus_to_exitcode(status) == 0
        text = shown.decode(errors="replace")
        for function in FUNCTIONS:
            assert f"\n{function:<6} | " in text, text[-2000:]
        assert '{"function"' not in text, "JSON on a terminal"
    finally:
        if status is None:  # a failed test: leave nothing behind
            for leftover in descendants(pid) | {pid}:
                try:
                    os.kill(leftover, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.waitpid(pid, 0)
        os.close(terminal)


def test_flashsale_in_another_terminal_finds_the_stack(dev_stack: DevStack, tmp_path: Path) -> None:
    """No REDIS_URL, no DATABASE_URL: the commands reach make run's Redis (not on 6379) and database."""
    sku = f"devstack-{uuid.uuid4().hex[:6]}"
    created = flashsale(tmp_path, "sale", "create", "--sku", sku, "--stock", "5")
    assert created.returncode == 0, created.stderr
    assert "did not answer" not in created.stderr, created.stderr
    status = get(dev_stack.url("stock") + f"/stock/{sku}", "devstack-stock-read")
    assert status == 200  # the stack's own database has the sale

    reconciled = flashsale(tmp_path, "reconcile", "--sku", sku)
    assert reconciled.returncode == 0, reconciled.stderr
    assert json.loads(reconciled.stdout)["gate_rebuilt"] is True
    with redis_lib.Redis.from_url(str(dev_stack.info["redis_url"])) as redis:
        assert redis.exists(gate_key(sku)), "the gate was not rebuilt in the stack's Redis"


def test_reconcile_that_cannot_reach_redis_fails_and_says_what_to_run(tmp_path: Path) -> None:
    nobody = {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "REDIS_TIMEOUT_SECONDS": "0.2",
        "DATABASE_URL": f"sqlite:///{tmp_path}/f.db",
    }
    assert flashsale(tmp_path, "sale", "create", "--sku", "phone", "--stock", "5", **nobody).returncode == 0
    reconciled = flashsale(tmp_path, "reconcile", "--sku", "phone", **nobody)
    assert reconciled.returncode == 4, (reconciled.returncode, reconciled.stderr)
    assert json.loads(reconciled.stdout)["gate_rebuilt"] is False
    for what_to_run in ("make run", "REDIS_URL", "flashsale reconcile --sku phone"):
        assert what_to_run in reconciled.stderr, reconciled.stderr
