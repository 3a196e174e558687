"""After a sell-out, a token that fails verification learns nothing of who bought.

A loser's press is answered "sold out" from memory before the signature is
checked (docs/security.md). A token naming a holder went on to the signature
check and got 401 while one naming anybody else got 409, so a forged token
told whether a given user holds units.
"""

from __future__ import annotations

import json

import pytest
from werkzeug.test import TestResponse

from shared.context import Context
from tests.clients import bearer, function_client
from tests.conftest import Mint

pytestmark = pytest.mark.integration
SKU = "oracle-phone"


def press(token: str, key: str | None = None) -> TestResponse:
    headers = bearer(token, **({"Idempotency-Key": key} if key else {}))
    return function_client("order").post("/orders", data=json.dumps({"sku": SKU}), content_type="application/json", headers=headers)


def broken(token: str) -> str:
    """The same claims under a signature that does not verify."""
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return f"{head}.{payload}.{flipped}"


def test_a_broken_token_gets_the_same_answer_whoever_it_names(ctx: Context, mint: Mint) -> None:
    # Bug caught: 401 for a forged token naming a winner, 409 for one naming anyone else: "does this user hold units?"
    ctx.store.create_sale(SKU, 1, 1, None)
    (_, winner), (_, loser), (_, stranger) = mint(), mint(), mint()
    assert press(winner, "winner-key").status_code == 201
    assert press(loser).status_code == 409  # the worker now remembers the sale sold out, and who holds it
    answers = {name: press(broken(token), "winner-key") for name, token in (("winner", winner), ("loser", loser), ("stranger", stranger))}
    seen = {name: (a.status_code, a.get_json()["code"], a.get_json()["detail"]) for name, a in answers.items()}
    assert len(set(seen.values())) == 1, seen
    assert seen["winner"][:2] == (409, "sold_out")
    assert press(winner, "winner-key").status_code == 201  # the real token still gets its order back
