"""Registering and logging in: bcrypt hashes, constant-shape failures."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

import bcrypt

from shared.blocking import run_blocking
from shared.errors import FlashsaleError, InvalidCredentials
from shared.ratelimit import LoginLimiter
from shared.store.base import Store
from shared.tokens import TokenSigner
from shared.validation import Credentials

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Session:
    access_token: str
    expires_in: int

    def to_public(self) -> dict[str, object]:
        return {"access_token": self.access_token, "token_type": "Bearer", "expires_in": self.expires_in}


class Accounts:
    def __init__(self, store: Store, signer: TokenSigner, limiter: LoginLimiter, bcrypt_rounds: int, hashes_at_once: int = 1) -> None:
        self.store = store
        self.signer = signer
        self.limiter = limiter
        self.rounds = bcrypt_rounds
        self.hashes_at_once = max(1, hashes_at_once)
        self.observe_hash: list[Callable[[float], None]] = []  # seconds per bcrypt call, for metrics
        self.observe_login: list[Callable[[str], None]] = []  # success, or the error code answered (metrics.LOGIN_OUTCOMES)

    @cached_property
    def _dummy_hash(self) -> bytes:
        # Checked for unknown emails so that "no such user" costs as much as
        # "wrong password": the answer's timing does not reveal who has an account.
        return bcrypt.hashpw(b"flashsale-dummy-password", bcrypt.gensalt(self.rounds))

    def hash_password(self, password: str) -> bytes:
        return self._timed(lambda: bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(self.rounds)))

    def register(self, credentials: Credentials, address: str | None) -> dict[str, str]:
        self.limiter.check_registration(address)
        user = self.store.create_user(credentials.email, self.hash_password(credentials.password))
        log.info("user registered", extra={"user_id": user.user_id})
        return {"user_id": user.user_id, "email": user.email}

    def login(self, credentials: Credentials, address: str | None) -> Session:
        # Counted under the code the caller is answered with: an error that is not
        # one of ours is answered 500 with FlashsaleError's own code, "internal".
        outcome = FlashsaleError.code
        try:
            session = self._login(credentials, address)
            outcome = "success"
            return session
        except FlashsaleError as error:
            outcome = error.code
            raise
        finally:
            for observe in self.observe_login:
                observe(outcome)

    def _login(self, credentials: Credentials, address: str | None) -> Session:
        attempt = self.limiter.check(credentials.email, address)  # counted as a failure until the password matches
        user = self.store.get_user_by_email(credentials.email)
        stored = user.password_hash if user is not None else self._dummy_hash
        matches = self._timed(lambda: bcrypt.checkpw(credentials.password.encode("utf-8"), stored))
        if user is None or not matches:
            raise InvalidCredentials()
        self.limiter.succeeded(attempt)
        token, ttl = self.signer.issue(user.user_id, user.email)
        return Session(token, ttl)

    def _timed(self, work: Callable[[], T]) -> T:
        def measured() -> T:
            started = time.perf_counter()  # the hash itself, not the wait for a free hashing thread
            try:
                return work()
            finally:
                for observe in self.observe_hash:
                    observe(time.perf_counter() - started)

        return run_blocking(measured, pool_name="bcrypt", size=self.hashes_at_once)
