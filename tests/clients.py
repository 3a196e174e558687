"""HTTP test clients for each function, as functions-framework serves it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import functions_framework
from flask import Flask
from flask.testing import FlaskClient

from ops.demo import call
from shared.models import User
from shared.settings import Settings
from shared.store import Store, open_store
from shared.tokens import TokenSigner

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"auth": "auth", "stock": "stock", "order": "order", "events": "order_placed"}


def function_client(function: str) -> FlaskClient:
    app: Flask = functions_framework.create_app(target=TARGETS[function], source=str(ROOT / "functions" / function / "main.py"))
    return app.test_client()


def bearer(token: str, **extra: str) -> dict[str, Any]:
    return {"Authorization": f"Bearer {token}", **extra}


@dataclass(frozen=True)
class SaleOnStack:
    store: Store
    sku: str
    users: list[User]
    tokens: list[str]


def sale_with_buyers(settings: Settings, prefix: str, *, stock: int, buyers: int) -> SaleOnStack:
    """A fresh sale on the stack's database and ``buyers`` real users with signed tokens."""
    store = open_store(settings)
    sku = f"{prefix}-{uuid.uuid4().hex[:6]}"
    store.create_sale(sku, stock, 1, None)
    users = store.ensure_users([f"{sku}-{i}@test.flashsale.dev" for i in range(buyers)], b"x")
    signer = TokenSigner(settings)
    return SaleOnStack(store, sku, users, [signer.issue(u.user_id, u.email)[0] for u in users])


def press_buy(url: str, token: str, sku: str, key: str) -> tuple[int, dict[str, Any]]:
    return call("POST", url + "/orders", {"sku": sku}, token, key)
