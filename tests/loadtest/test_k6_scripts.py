"""Every k6 script runs for a few seconds at small scale against the real stack, so none can rot."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.run import crowd_verdict, prepare_sale, run_k6, stack_env
from ops.devstack import Stack
from shared.settings import Settings
from shared.store import open_store

pytestmark = [pytest.mark.loadtest, pytest.mark.integration]

SMALL = {
    "stock-check.js": {"VUS": "5", "DURATION": "3s"},
    "login-storm.js": {"VUS": "4", "DURATION": "3s"},
    "mixed.js": {"VUS": "3", "LOGIN_VUS": "2", "BUYER_VUS": "3", "STOCK_VUS": "3", "DURATION": "3s"},
    "seed-matrix.js": {"VUS": "4", "DURATION": "2s", "GAP": "1s", "THINK_TIME": "0"},
}


def test_flash_sale_script_sells_exactly_the_stock(stack: Stack, stack_settings: Settings, tmp_path: Path) -> None:
    sku, tokens, users = prepare_sale(stack_settings, tmp_path, stock=20, buyers=80)
    env = {**stack_env(stack, sku, tokens, users), "BUYERS": "80", "START_DELAY": "1s"}
    run = run_k6("flash-sale.js", env, tmp_path / "summary.json", timeout=180)
    assert run.exit_code == 0, run.output
    stats = open_store(stack_settings).sale_stats(sku)
    passed, lines = crowd_verdict(run, stats, 80, 20)
    assert passed, "\n".join(lines)
    assert run.summary["counters"]["orders_confirmed"] == 20
    assert run.summary["counters"]["orders_sold_out"] == 60


@pytest.mark.parametrize("script", sorted(SMALL))
def test_script_runs_clean(stack: Stack, stack_settings: Settings, tmp_path: Path, script: str) -> None:
    sku, tokens, users = prepare_sale(stack_settings, tmp_path, stock=10_000, buyers=40, per_user_limit=10_000)
    env = {**stack_env(stack, sku, tokens, users), **SMALL[script]}
    run = run_k6(script, env, tmp_path / "summary.json", timeout=180)
    assert run.exit_code == 0, run.output
    assert run.summary["setup_ok"] and run.summary["thresholds_ok"]
    assert run.summary["http"]["requests"] > 0
    stats = open_store(stack_settings).sale_stats(sku)
    assert stats.invariants_hold, stats.violations()


def test_a_script_fails_when_its_target_is_down(stack_settings: Settings, tmp_path: Path) -> None:
    from ops.devstack import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    tokens = tmp_path / "tokens.json"
    tokens.write_text('[{"user_id": "u", "email": "e", "access_token": "t"}]')
    env = {"AUTH_URL": dead, "STOCK_URL": dead, "ORDER_URL": dead, "SKU": "x", "TOKENS_FILE": str(tokens), "USERS_FILE": str(tokens)}
    run = run_k6("stock-check.js", {**env, "VUS": "1", "DURATION": "1s"}, tmp_path / "summary.json", timeout=60)
    assert run.exit_code != 0
