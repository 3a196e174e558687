"""HTTP test clients for each function, as functions-framework serves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
