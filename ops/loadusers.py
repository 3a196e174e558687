"""Load-test accounts: real users in the store, with tokens signed by auth's key."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import bcrypt

from shared.settings import Settings
from shared.store import open_store
from shared.tokens import TokenSigner


def progress(done: int, total: int, started: float, label: str) -> None:
    if not sys.stderr.isatty() and done != total and done % max(1, total // 10):
        return
    width = 30
    filled = int(width * done / max(1, total))
    rate = done / max(1e-9, time.monotonic() - started)
    end = "\n" if done >= total else ""
    sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} ({rate:,.0f}/s){end}")
    sys.stderr.flush()


def mint_tokens(
    settings: Settings,
    count: int,
    out: Path,
    *,
    users_out: Path | None = None,
    prefix: str = "buyer",
    password: str = "load-test-password",  # noqa: S107 - load-test accounts, documented
    ttl_seconds: int = 3600,
    show_progress: bool = True,
) -> int:
    """Create ``count`` users (or reuse them) and write their tokens as JSON; returns how many."""
    store = open_store(settings)
    signer = TokenSigner(settings)
    emails = [f"{prefix}{i:06d}@loadtest.flashsale.dev" for i in range(count)]
    # One hash for every load-test account: each is a real account that can log
    # in, without spending N bcrypt rounds up front.
    password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt(settings.bcrypt_rounds))
    started = time.monotonic()
    users = []
    for start in range(0, len(emails), 1000):
        users.extend(store.ensure_users(emails[start : start + 1000], password_hash))
        if show_progress:
            progress(len(users), len(emails), started, "users ")
    started = time.monotonic()
    tokens = []
    for i, user in enumerate(users, 1):
        token, _ = signer.issue(user.user_id, user.email, ttl_seconds=ttl_seconds)
        tokens.append({"user_id": user.user_id, "email": user.email, "access_token": token})
        if show_progress and (i % 500 == 0 or i == len(users)):
            progress(i, len(users), started, "tokens")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tokens))
    if users_out is not None:
        users_out.parent.mkdir(parents=True, exist_ok=True)
        users_out.write_text(json.dumps([{"email": e, "password": password} for e in emails]))
    store.close()
    return len(tokens)
