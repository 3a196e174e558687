"""Buyers: real accounts in the store, each with a token signed by auth's key.

The one way a crowd is made, for a sale (:func:`ops.sales.open_sale`), for
``flashsale tokens``, for the benchmark's sites and for the tests' ``mint``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from shared.models import User
from shared.settings import Settings
from shared.store import Store, open_store
from shared.tokens import TokenSigner

LOAD_TEST_PASSWORD = "load-test-password"  # noqa: S105 - load-test accounts, documented


def progress(done: int, total: int, started: float, label: str) -> None:
    if not sys.stderr.isatty() and done != total and done % max(1, total // 10):
        return
    width = 30
    filled = int(width * done / max(1, total))
    rate = done / max(1e-9, time.monotonic() - started)
    end = "\n" if done >= total else ""
    sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} ({rate:,.0f}/s){end}")
    sys.stderr.flush()


@dataclass(frozen=True)
class Buyers:
    users: list[User]
    tokens: list[str]  # users[i]'s access token
    password: str  # every one of them logs in with it

    def write(self, tokens_out: Path, users_out: Path | None = None) -> None:
        """The k6 scripts' TOKENS_FILE ([{user_id, email, access_token}]) and, if asked, USERS_FILE ([{email, password}])."""
        tokens = [{"user_id": u.user_id, "email": u.email, "access_token": t} for u, t in zip(self.users, self.tokens, strict=True)]
        tokens_out.parent.mkdir(parents=True, exist_ok=True)
        tokens_out.write_text(json.dumps(tokens))
        if users_out is not None:
            users_out.parent.mkdir(parents=True, exist_ok=True)
            users_out.write_text(json.dumps([{"email": u.email, "password": self.password} for u in self.users]))

    def write_files(self, workdir: Path, name: str) -> tuple[Path, Path]:
        """Both files, as ``{name}-tokens.json`` and ``{name}-users.json`` in ``workdir``; returns (tokens, users)."""
        tokens, users = workdir / f"{name}-tokens.json", workdir / f"{name}-users.json"
        self.write(tokens, users)
        return tokens, users


@contextmanager
def store_for(settings: Settings, store: Store | None) -> Iterator[Store]:
    """The caller's store, left open; or, when it has none, one opened for the call and closed after it."""
    if store is not None:
        yield store
        return
    opened = open_store(settings)
    try:
        yield opened
    finally:
        opened.close()


def mint_buyers(
    settings: Settings,
    count: int,
    *,
    prefix: str = "buyer",
    password: str = LOAD_TEST_PASSWORD,
    ttl_seconds: int = 3600,
    show_progress: bool = False,
    store: Store | None = None,
) -> Buyers:
    """``count`` users ``{prefix}000000@loadtest.flashsale.dev`` ... (created, or reused if they exist) and a token for each."""
    if count <= 0:
        return Buyers([], [], password)
    signer = TokenSigner(settings)
    emails = [f"{prefix}{i:06d}@loadtest.flashsale.dev" for i in range(count)]
    # One hash for every account: each is a real account that can log in,
    # without spending N bcrypt rounds up front.
    password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt(settings.bcrypt_rounds))
    started = time.monotonic()
    users: list[User] = []
    with store_for(settings, store) as accounts:
        for start in range(0, len(emails), 1000):
            users.extend(accounts.ensure_users(emails[start : start + 1000], password_hash))
            if show_progress:
                progress(len(users), len(emails), started, "users ")
    started = time.monotonic()
    tokens = []
    for i, user in enumerate(users, 1):
        tokens.append(signer.issue(user.user_id, user.email, ttl_seconds=ttl_seconds)[0])
        if show_progress and (i % 500 == 0 or i == len(users)):
            progress(i, len(users), started, "tokens")
    return Buyers(users, tokens, password)
