"""The pieces of `make run` that need no servers: how a line is shown, and how `flashsale` finds the stack."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops import cli
from ops.devstack import DEVSTACK_FILE, DevStackInfo, absolute_database_url, dev_ports, render
from shared.settings import Settings

ACCESS_LINE = json.dumps(
    {
        "time": "2026-11-27T09:00:01.5Z",
        "severity": "INFO",
        "message": "GET /stock/{sku} 404",
        "logger": "flashsale.http",
        "function": "stock",
        "status": 404,
        "request_id": "r-1",
    }
)


def test_a_json_line_for_a_program_keeps_its_fields_behind_the_function() -> None:
    shown = render("stock", ACCESS_LINE, readable=False)
    assert shown.startswith('{"function": "stock", ')
    assert json.loads(shown) == {"function": "stock", **json.loads(ACCESS_LINE)}


def test_any_other_line_for_a_program_is_json_too() -> None:
    line = "[2026-11-27 09:00:00 +0000] [42] [INFO] Starting gunicorn 27.0.1"
    assert json.loads(render("auth", line, readable=False)) == {"function": "auth", "message": line}


def test_a_line_for_a_person_is_text_with_the_function_in_front() -> None:
    shown = render("stock", ACCESS_LINE, readable=True)
    assert shown.startswith("stock  | ") and "INFO" in shown and "GET /stock/{sku} 404" in shown and "status=404" in shown
    assert "{" not in shown.replace("{sku}", ""), shown  # not JSON
    assert render("auth", "Booting worker", readable=True) == "auth   | Booting worker"


def test_a_traceback_keeps_the_function_on_every_line() -> None:
    line = json.dumps({"time": "2026-11-27T09:00:01Z", "severity": "ERROR", "message": "unhandled error\nTraceback\n  File x"})
    assert all(part.startswith("order  | ") for part in render("order", line, readable=True).splitlines())


def stack_info(pid: int) -> DevStackInfo:
    return DevStackInfo(
        pid, "redis://127.0.0.1:6390/0", "sqlite:////dev/var/flashsale.db", "/dev/var/keys/signing.pem", "/dev/var/keys/signing.pub.pem",
        {"order": "http://127.0.0.1:8083"}, "/dev/var/log",
    )  # fmt: skip


def test_the_file_of_a_running_stack_is_believed_and_that_of_a_stopped_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / DEVSTACK_FILE
    stack_info(os.getpid()).save(path)
    assert DevStackInfo.load(path) == stack_info(os.getpid())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stack_info(int(gone.stdout)).save(path)  # a `make run` killed with -9 left its file behind
    assert DevStackInfo.load(path) is None
    path.write_text("{not json")
    assert DevStackInfo.load(path) is None
    assert DevStackInfo.load(tmp_path / "absent.json") is None


def test_what_the_environment_sets_wins_over_the_stack() -> None:
    settings = Settings.from_env({"DATABASE_URL": "sqlite:///mine.db"})
    joined = stack_info(os.getpid()).settings_for(settings, lambda name: name == "DATABASE_URL")
    assert joined.redis_url == "redis://127.0.0.1:6390/0"  # unset: the stack's
    assert joined.jwt_private_key_file == "/dev/var/keys/signing.pem"
    assert joined.database_url == "sqlite:///mine.db"  # set: the operator's


@pytest.mark.parametrize(("command", "joins"), [("reconcile", True), ("run", False), ("demo", False)])
def test_commands_join_a_running_stack_except_those_that_start_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, joins: bool
) -> None:
    for name in Settings.env_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cli, "get_settings", lambda: Settings.from_env({}))
    stack_info(os.getpid()).save(tmp_path / DEVSTACK_FILE)
    args = cli.parser().parse_args([command, "--sku", "x"] if command == "reconcile" else [command])
    settings = cli.operator_settings(args, tmp_path)
    assert (settings.redis_url == "redis://127.0.0.1:6390/0") is joins
    assert isinstance(args, argparse.Namespace) and (args.dev_stack is not None) is joins


def test_ports_and_paths() -> None:
    assert dev_ports(("auth", "stock", "order"), 8081) == {"auth": 8081, "stock": 8082, "order": 8083}
    assert dev_ports(("events",), 9000) == {"events": 9003}
    assert all(port > 0 for port in dev_ports(("auth", "order"), 0).values())
    assert absolute_database_url("sqlite:///var/x.db") == f"sqlite:///{Path('var/x.db').resolve()}"
    assert absolute_database_url("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_database_url("mongodb://h/") == "mongodb://h/"
