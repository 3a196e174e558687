"""Fixtures shared by every tier: a real redis-server, real SQLite files, real keys."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
import redis as redis_lib

from ops.devstack import RedisServer, Stack, ensure_keys
from ops.loadusers import mint_buyers
from shared import context as context_module
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(workdir=tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()  # a test may have stopped it on purpose
    client = redis_lib.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


def make_settings(tmp_path: Path, redis_url: str, keys: tuple[Path, Path], **overrides: str) -> Settings:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'flashsale.db'}",
        "REDIS_URL": redis_url,
        "JWT_PRIVATE_KEY_FILE": str(keys[0]),
        "JWT_PUBLIC_KEY_FILE": str(keys[1]),
        "BCRYPT_ROUNDS": "4",
        "LOG_FORMAT": "json",
        "REDIS_RETRY_AFTER_SECONDS": "0.2",
        **overrides,
    }
    return Settings.from_env(env)


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, keys: tuple[Path, Path]) -> Settings:
    return make_settings(tmp_path, redis_url, keys)


@pytest.fixture
def ctx(settings: Settings) -> Iterator[context_module.Context]:
    context = context_module.reset(settings)
    yield context
    context.store.close()


class Mint(Protocol):
    """The ``mint`` fixture: a fresh real user and a bearer token for them."""

    def __call__(self) -> tuple[str, str]: ...


@pytest.fixture
def mint(ctx: context_module.Context) -> Mint:
    """mint() -> (user_id, bearer token) for a fresh real user."""

    def make() -> tuple[str, str]:
        buyer = mint_buyers(ctx.settings, 1, prefix=f"{uuid.uuid4().hex[:12]}-", store=ctx.store)
        return buyer.users[0].user_id, buyer.tokens[0]

    return make


def pytest_report_header() -> str:
    uri = os.environ.get("FLASHSALE_TEST_MONGODB_URI")
    where = "real, " + uri.split("@")[-1] if uri else "mongomock only (set FLASHSALE_TEST_MONGODB_URI for a real one)"
    return f"store contract on MongoDB: {where}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The functions under real gunicorn, two workers each, on a real redis-server and SQLite file."""
    from ops.devstack import local_stack

    workdir = tmp_path_factory.mktemp("stack")
    env = {
        "WORKERS": "2",
        "BCRYPT_ROUNDS": "4",
        "LOGIN_RATE_PER_ADDRESS": "0",
        "REGISTER_RATE_PER_ADDRESS": "0",
        "LOGIN_RATE_PER_ACCOUNT": "0",
        "LOG_LEVEL": "INFO",
        "LOG_SAMPLE_EVERY": "1",  # the log tests look for the line of one request; sampling has its own tests
    }
    with local_stack(workdir, extra_env=env, functions=("events", "auth", "stock", "order")) as (running, redis):
        yield running


@pytest.fixture(scope="session")
def stack_settings(stack: Stack) -> Settings:
    return Settings.from_env(stack.env)
