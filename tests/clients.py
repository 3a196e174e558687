"""HTTP test clients for each function, as functions-framework serves it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import functions_framework
from flask import Flask
from flask.testing import FlaskClient

from ops.demo import call

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"auth": "auth", "stock": "stock", "order": "order", "events": "order_placed"}


def function_client(function: str) -> FlaskClient:
    app: Flask = functions_framework.create_app(target=TARGETS[function], source=str(ROOT / "functions" / function / "main.py"))
    return app.test_client()


def bearer(token: str, **extra: str) -> dict[str, Any]:
    return {"Authorization": f"Bearer {token}", **extra}


def press_buy(url: str, token: str, sku: str, key: str) -> tuple[int, dict[str, Any]]:
    return call("POST", url + "/orders", {"sku": sku}, token, key)


T = TypeVar("T")


def settled(read: Callable[[], T], expected: T, seconds: float = 10.0) -> T:
    """``read()`` once it equals ``expected``, or its last value after ``seconds``.

    For a scrape of a gunicorn group: workers write their counts to the shared
    files every METRICS_FLUSH_SECONDS (shared/metric_files.py), so the worker
    answering a scrape counts its own at once and the others' within the interval.
    Wait on every figure the test compares, as one tuple: one figure settled
    says nothing of another that another worker has still to write.
    """
    deadline = time.monotonic() + seconds
    found = read()
    while found != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        found = read()
    return found
