"""schemathesis against docs/openapi.yaml on the three running functions (real gunicorn, real redis-server and SQLite).

For every operation it sends examples, boundary values and fuzzed requests
(valid and invalid) and demands: no server error, every error a
problem+json with its ``code``, and every answer (status, headers, body)
as the spec documents it. /orders gets a valid token so that the fuzzing
reaches past authentication.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ops.devstack import Stack
from ops.loadusers import mint_buyers
from shared.settings import Settings
from tests.openapi import SPEC_PATH

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_path(SPEC_PATH)
SERVED_BY = {
    "/register": ("auth",),
    "/login": ("auth",),
    "/.well-known/jwks.json": ("auth",),
    "/stock/{sku}": ("stock",),
    "/orders": ("order",),
}
EVERY_FUNCTION = ("auth", "stock", "order")

# Every other built-in check runs. This one cannot: schema-valid requests may be
# refused by rules no JSON Schema states (see docs/security.md, "Contract"):
NOT_YET = {
    # A password of 72 characters but more than 72 UTF-8 bytes (JSON Schema counts
    # characters; the spec says so in prose), and business answers to valid data:
    # 409 email_taken, sold_out, limit_reached.
    positive_data_acceptance: "valid data still meets byte limits and business rules",
}


@schemathesis.check
def problem_details(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every error is RFC 9457 problem+json carrying a string ``code`` and its own status."""
    if response.status_code < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]  # lower-case names, list values
    assert content_type.startswith("application/problem+json"), f"{response.status_code} answered {content_type!r}"
    body = json.loads(response.content)
    assert isinstance(body.get("code"), str) and body.get("status") == response.status_code, body
    assert "Traceback" not in response.text
    return True


@pytest.fixture(scope="module")
def token(stack_settings: Settings) -> str:
    return mint_buyers(stack_settings, 1, prefix="fuzzer-").tokens[0]


@schema.parametrize()
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_documented(case: Case[Any], stack: Stack, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}"} if case.path == "/orders" else None
    for function in SERVED_BY.get(case.path, EVERY_FUNCTION):
        case.call_and_validate(base_url=stack.url(function), headers=headers, excluded_checks=list(NOT_YET), timeout=30)
