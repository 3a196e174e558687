"""Login must not tell an attacker which emails have accounts: not by its answer, not by its timing.

An unknown email is checked against a dummy bcrypt hash of the same cost, so
both failures spend one bcrypt comparison. The timing test compares medians
of interleaved attempts with a real cost (8: about 15-25 ms a check), so
noise from a busy machine hits both sides alike; the whole measurement is
repeated a few times before it counts as a failure. A companion test makes the
dummy hash cheap and shows the same measurement catches the leak.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import bcrypt
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from shared import context
from shared.accounts import Accounts
from tests.clients import function_client
from tests.conftest import make_settings

pytestmark = pytest.mark.integration

ATTEMPTS = 30
TOLERANCE = 0.10
MEASUREMENTS = 4
PASSWORD = "correct horse battery"


@pytest.fixture
def auth(tmp_path: Path, redis_url: str, keys: tuple[Path, Path]) -> Iterator[FlaskClient]:
    settings = make_settings(tmp_path, redis_url, keys, BCRYPT_ROUNDS="8", LOGIN_RATE_PER_ACCOUNT="0", LOGIN_RATE_PER_ADDRESS="0")
    ctx = context.reset(settings)
    client = function_client("auth")
    assert post(client, "/register", {"email": "ada@example.com", "password": PASSWORD}).status_code == 201
    yield client
    ctx.store.close()


def post(client: FlaskClient, path: str, body: Mapping[str, object]) -> TestResponse:
    return client.post(path, data=json.dumps(body), content_type="application/json")


WRONG_PASSWORD = {"email": "ada@example.com", "password": "wrong horse battery"}
UNKNOWN_EMAIL = {"email": "nobody@example.com", "password": "wrong horse battery"}


def timing_gap(client: FlaskClient) -> tuple[float, float, float]:
    """Relative gap between the medians of the two failures, and the medians (seconds)."""
    for body in (WRONG_PASSWORD, UNKNOWN_EMAIL):  # warm up: the dummy hash is made on first use
        post(client, "/login", body)
    samples: dict[str, list[float]] = {"wrong": [], "unknown": []}
    for _ in range(ATTEMPTS):
        pair = [("wrong", WRONG_PASSWORD), ("unknown", UNKNOWN_EMAIL)]
        random.shuffle(pair)  # neither side always goes first
        for name, body in pair:
            started = time.perf_counter()
            assert post(client, "/login", body).status_code == 401
            samples[name].append(time.perf_counter() - started)
    wrong, unknown = statistics.median(samples["wrong"]), statistics.median(samples["unknown"])
    return abs(wrong - unknown) / max(wrong, unknown), wrong, unknown


def test_unknown_email_and_wrong_password_get_the_same_answer(auth: FlaskClient) -> None:
    wrong = post(auth, "/login", WRONG_PASSWORD)
    unknown = post(auth, "/login", UNKNOWN_EMAIL)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.get_data() == unknown.get_data()

    def shown(response: TestResponse) -> list[tuple[str, str]]:
        return sorted((k, v) for k, v in response.headers.items() if k != "X-Request-Id")

    assert shown(wrong) == shown(unknown)


def test_unknown_email_and_wrong_password_take_the_same_time(auth: FlaskClient) -> None:
    results = []
    for _ in range(MEASUREMENTS):
        gap, wrong, unknown = timing_gap(auth)
        results.append(f"wrong password {wrong * 1000:.1f} ms, unknown email {unknown * 1000:.1f} ms ({gap:.0%})")
        if gap <= TOLERANCE:
            break
    else:
        pytest.fail("login timing reveals which emails exist: " + "; ".join(results))
    assert min(wrong, unknown) > 0.003, f"no bcrypt check seems to run at cost 8: {results[-1]}"


def test_the_timing_check_catches_a_cheap_dummy_hash(auth: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The measurement can fail: a dummy hash of cost 4 (16 times cheaper) must show."""
    monkeypatch.setattr(Accounts, "_dummy_hash", bcrypt.hashpw(b"flashsale-dummy-password", bcrypt.gensalt(4)))
    gap, wrong, unknown = timing_gap(auth)
    assert gap > 0.5 and unknown < wrong, (gap, wrong, unknown)
