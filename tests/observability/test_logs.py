"""Log lines: JSON, one per request, with the client's request id; never a secret; never blocking."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from ops.devstack import Stack
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def call(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET", headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"{}")


def log_file(stack: Stack, function: str) -> Path:
    assert stack.log_dir is not None, "the stack fixture writes each function's output to a file"
    return stack.log_dir / f"{function}.log"


def log_lines(stack: Stack, function: str) -> list[str]:
    return log_file(stack, function).read_text(errors="replace").splitlines()


def request_line(stack: Stack, function: str, rid: str, timeout: float = 10) -> dict[str, Any]:
    """The access-log line of one request; the writer thread may take a moment, so poll with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        for line in log_lines(stack, function):
            if rid in line and line.startswith("{"):
                entry: dict[str, Any] = json.loads(line)
                if entry.get("request_id") == rid and "route" in entry:
                    return entry
        assert time.monotonic() < deadline, f"no log line for request {rid} in {function}.log"
        time.sleep(0.05)


def test_the_clients_request_id_is_echoed_and_logged(stack: Stack) -> None:
    rid = f"client-{uuid.uuid4().hex}"
    status, headers, body = call(stack.url("stock") + "/stock/no-such-sku", headers={"X-Request-Id": rid})
    assert status == 404 and headers["X-Request-Id"] == rid
    entry = request_line(stack, "stock", rid)
    assert {"time", "severity", "message", "function", "route", "status", "code", "latency_ms", "request_id"} <= set(entry)
    assert (entry["function"], entry["route"], entry["status"], entry["code"]) == ("stock", "/stock/<sku>", 404, "unknown_sku")
    assert entry["severity"] == "INFO" and entry["time"].endswith("Z") and entry["latency_ms"] >= 0


def test_a_traceparent_gives_the_trace_id_as_request_id(stack: Stack) -> None:
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    status, headers, _ = call(stack.url("order") + "/healthz", headers={"traceparent": traceparent})
    assert status == 200 and headers["X-Request-Id"] == trace_id
    assert request_line(stack, "order", trace_id)["route"] == "/healthz"


def test_every_request_line_is_json(stack: Stack) -> None:
    rids = [f"json-{uuid.uuid4().hex}" for _ in range(5)]
    for rid in rids:
        call(stack.url("auth") + "/login", {"email": "nobody@example.com"}, {"X-Request-Id": rid})
    for rid in rids:
        assert request_line(stack, "auth", rid)["code"] == "invalid_request"
    # Our lines are JSON; the rest of the file is gunicorn's own "[date] [pid] [INFO]" lines.
    ours = [line for line in log_lines(stack, "auth") if not line.startswith("[")]
    assert ours
    not_json = [line for line in ours if not _is_json_object(line)]
    assert not not_json, not_json[:5]


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_no_password_token_or_hash_in_any_log_line(stack: Stack) -> None:
    from shared.settings import Settings
    from shared.store import open_store

    email = f"secret-{uuid.uuid4().hex[:8]}@example.com"
    password = f"pw-{uuid.uuid4().hex}"
    sku = f"secret-{uuid.uuid4().hex[:6]}"
    store = open_store(Settings.from_env(stack.env))
    store.create_sale(sku, 5, 1, None)
    assert call(stack.url("auth") + "/register", {"email": email, "password": password})[0] == 201
    assert call(stack.url("auth") + "/login", {"email": email, "password": "wrong-" + password})[0] == 401
    status, _, session = call(stack.url("auth") + "/login", {"email": email, "password": password})
    assert status == 200
    token = session["access_token"]
    auth = {"Authorization": f"Bearer {token}", "Idempotency-Key": "secret-1"}
    last = f"last-{uuid.uuid4().hex}"
    assert call(stack.url("order") + "/orders", {"sku": sku}, auth)[0] == 201
    assert call(stack.url("order") + "/orders", headers={**auth, "X-Request-Id": last})[0] == 200
    request_line(stack, "order", last)  # the order function's lines are written
    user = store.get_user_by_email(email)
    assert user is not None
    password_hash = user.password_hash.decode()
    for function in ("auth", "order"):
        text = log_file(stack, function).read_text(errors="replace")
        secrets = {
            "password": password,
            "token": token,
            "token signature": token.split(".")[2],
            "bcrypt hash": password_hash,
            "bcrypt hash prefix": "$2b$",
            "authorization header": "Bearer ",
        }
        for what, secret in secrets.items():
            assert secret not in text, f"{what} in {function}.log"


def run_logging(code: str, *, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, **popen)


def test_text_format_for_a_person_at_a_terminal() -> None:
    code = (
        "import logging; from shared import logs; from shared.settings import Settings;"
        "logs.configure(Settings.from_env({'LOG_FORMAT': 'text'}));"
        "logging.getLogger('flashsale.http').info('GET /healthz 200', extra={'request_id': 'abc', 'status': 200})"
    )
    process = run_logging(code, stdout=subprocess.PIPE)
    out, _ = process.communicate(timeout=30)
    (line,) = out.decode().splitlines()
    assert not line.startswith("{")
    assert line.endswith("INFO    GET /healthz 200 request_id=abc status=200"), line


def test_a_slow_stdout_does_not_stop_a_gevent_worker() -> None:
    """Nobody reads the pipe: once it is full, the writer waits, but greenlets serving requests go on."""
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import logging, sys, gevent\n"
        "from shared import logs\nfrom shared.settings import Settings\n"
        "logs.configure(Settings.from_env({}))\n"
        "log = logging.getLogger('flashsale.test')\n"
        "for i in range(20000):\n"
        "    log.info('a line long enough to fill a pipe soon %d', i, extra={'request_id': 'x' * 40})\n"
        "    if i % 100 == 0: gevent.sleep(0)\n"
        "sys.stderr.write('still serving\\n'); sys.stderr.flush()\n"
    )
    process = run_logging(code, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stderr is not None and process.stdout is not None
    try:
        # 20,000 lines are about 5 MB, far beyond a pipe's 64 KB: the process gets here only if
        # logging never waited for stdout.
        ready, _, _ = select.select([process.stderr], [], [], 30)
        assert ready, "logging blocked the worker on a full stdout"
        assert process.stderr.readline() == b"still serving\n"
        out, _ = process.communicate(timeout=60)  # now drain stdout: the writer finishes at exit
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = out.decode().splitlines()
    assert len(lines) == 20000 and json.loads(lines[-1])["message"].endswith("19999")
