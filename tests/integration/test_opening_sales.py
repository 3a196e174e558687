"""ops.sales.open_sale, the one builder of a sale and its buyers, against a real SQLite file and a real redis-server."""

from __future__ import annotations

import json
from pathlib import Path

import bcrypt
import pytest

from ops import cli
from ops.devstack import free_port
from ops.loadusers import LOAD_TEST_PASSWORD, mint_buyers
from ops.sales import fresh_sku, open_sale
from shared.errors import InvalidRequest
from shared.gate import Gate
from shared.redisconn import RedisConn
from shared.settings import Settings
from shared.store import open_store
from shared.tokens import TokenVerifier
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


def test_a_sale_opens_with_its_gate_loaded_and_buyers_who_can_log_in(settings: Settings, tmp_path: Path) -> None:
    opened = open_sale(settings, fresh_sku("opened"), 3, per_user_limit=2, buyers=4)
    sku = opened.sku
    assert (opened.sale.total, opened.sale.per_user_limit) == (3, 2)
    gate = Gate(RedisConn(settings))
    assert opened.gate_epoch is not None and gate.state(sku) == {"remaining": "3", "limit": "2", "epoch": opened.gate_epoch}
    users, tokens = opened.buyers.users, opened.buyers.tokens
    assert len(users) == len(tokens) == 4 and all(u.email.startswith(f"{sku}-") for u in users)
    verifier = TokenVerifier(settings)
    assert [verifier.verify(t).subject for t in tokens] == [u.user_id for u in users]
    stored = open_store(settings).get_user_by_email(users[0].email)
    assert stored is not None and bcrypt.checkpw(LOAD_TEST_PASSWORD.encode(), stored.password_hash)  # a real account

    token_file, user_file = opened.buyers.write_files(tmp_path, sku)
    assert [t["access_token"] for t in json.loads(token_file.read_text())] == tokens
    assert json.loads(user_file.read_text())[0] == {"email": users[0].email, "password": LOAD_TEST_PASSWORD}


def test_buyers_minted_again_with_the_same_prefix_are_the_same_accounts(settings: Settings) -> None:
    first = mint_buyers(settings, 2, prefix="again-")
    second = mint_buyers(settings, 3, prefix="again-")
    assert [u.user_id for u in second.users[:2]] == [u.user_id for u in first.users]
    assert mint_buyers(settings, 0).users == []


def test_with_redis_down_the_sale_still_opens_and_says_its_gate_is_cold(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    settings = make_settings(tmp_path, f"redis://127.0.0.1:{free_port()}/0", keys, REDIS_TIMEOUT_SECONDS="0.2")
    opened = open_sale(settings, "phone", 5)
    assert opened.gate_epoch is None  # the first buyer builds it once Redis is back
    assert open_store(settings).get_sale("phone") is not None


def test_a_bad_sku_opens_nothing(settings: Settings) -> None:
    with pytest.raises(InvalidRequest):
        open_sale(settings, "no spaces", 5)


def test_sale_create_is_open_sale(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.parser().parse_args(["sale", "create", "--sku", "phone", "--stock", "7", "--per-user-limit", "2"])
    assert args.run(args, settings) == 0
    assert "sale phone: 7 units, 2 per buyer" in capsys.readouterr().out
    assert Gate(RedisConn(settings)).state("phone")["remaining"] == "7"  # loaded before any buyer comes
