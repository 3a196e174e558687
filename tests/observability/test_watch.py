"""``flashsale sale watch``: the quantile it computes, and --once against the running stack."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from ops.devstack import Stack
from ops.sales import fresh_sku, open_sale
from ops.watch import Scrape, fetch, quantile
from shared.settings import Settings
from shared.store import open_store
from tests.clients import press_buy, settled
from tests.conftest import ROOT

PAGE = """\
# TYPE flashsale_http_request_duration_seconds histogram
flashsale_http_request_duration_seconds_bucket{function="order",route="/orders",le="0.01"} 50.0
flashsale_http_request_duration_seconds_bucket{function="order",route="/orders",le="0.1"} 90.0
flashsale_http_request_duration_seconds_bucket{function="order",route="/orders",le="1.0"} 100.0
flashsale_http_request_duration_seconds_bucket{function="order",route="/orders",le="+Inf"} 100.0
flashsale_http_request_duration_seconds_count{function="order",route="/orders"} 100.0
flashsale_http_request_duration_seconds_sum{function="order",route="/orders"} 3.0
# TYPE flashsale_orders_total counter
flashsale_orders_total{sku="a",outcome="confirmed"} 3.0
flashsale_orders_total{sku="b",outcome="confirmed"} 4.0
"""


def test_quantile_interpolates_within_the_bucket_like_prometheus() -> None:
    buckets = Scrape.parse(PAGE).buckets("flashsale_http_request_duration_seconds_bucket", function="order")
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 9 / 10)
    assert quantile(0.99, {1.0: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.99, {1.0: 1.0, float("inf"): 10.0}) == 1.0  # in +Inf: the highest finite bound


def test_totals_filter_on_labels() -> None:
    page = Scrape.parse(PAGE)
    assert page.total("flashsale_orders_total", outcome="confirmed") == 7
    assert page.total("flashsale_orders_total", sku="a") == 3


def test_a_second_frame_shows_rates_and_the_recent_p99(monkeypatch: pytest.MonkeyPatch) -> None:
    from ops import watch

    later = (
        PAGE.replace('sku="a",outcome="confirmed"} 3.0', 'sku="a",outcome="confirmed"} 13.0')
        .replace('le="1.0"} 100.0', 'le="1.0"} 200.0')
        .replace('le="+Inf"} 100.0', 'le="+Inf"} 200.0')
    )
    pages = iter([Scrape.parse(PAGE, at=10.0), Scrape.parse(later, at=12.0)])
    monkeypatch.setattr(watch, "fetch", lambda url: next(pages))

    class NoStore:
        def sale_stats(self, sku: str) -> None:
            from shared.errors import UnknownSku

            raise UnknownSku("no sale")

    watcher = watch.Watcher(NoStore(), "http://order", "a")  # type: ignore[arg-type]
    first = watcher.frame()
    assert first.rates is None and first.outcomes["confirmed"] == 3 and first.p99_window == "since start"
    second = watcher.frame()
    assert second.rates is not None and second.rates["confirmed"] == 5.0  # 10 more in 2 s
    assert second.p99 is not None and 0.1 < second.p99 <= 1.0 and second.p99_window == "last 2 s"  # only slow ones lately
    assert second.stats is None and second.stats_error == "no sale"


@pytest.mark.integration
def test_once_shows_the_sale_against_the_stack(stack: Stack, stack_settings: Settings) -> None:
    sale = open_sale(stack_settings, fresh_sku("watched"), 3, buyers=5)
    sku = sale.sku
    statuses = [press_buy(stack.url("order"), token, sku, "k")[0] for token in sale.buyers.tokens]
    assert statuses == [201, 201, 201, 409, 409]
    # Both workers' counts in the files (within METRICS_FLUSH_SECONDS), as a watch a second later sees them.
    assert settled(lambda: fetch(stack.url("order")).total("flashsale_orders_total", sku=sku), 5.0) == 5

    env = {**os.environ, **stack.env, "COLUMNS": "100"}
    command = [sys.executable, "-m", "ops.cli", "sale", "watch", "--sku", sku, "--order-url", stack.url("order"), "--once"]
    shown = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    screen = shown.stdout
    assert sku in screen and "3 / 3" in screen and "█" * 40 in screen and "invariants hold" in screen
    rows = {line.strip("│ ").split()[0]: line.split() for line in screen.splitlines() if "│" in line and line.strip("│ ")}
    assert "3" in rows["confirmed"] and "2" in rows["sold_out"], screen
    assert "p99 /orders" in screen and "no requests yet" not in screen


@pytest.mark.integration
def test_once_says_so_when_the_order_function_does_not_answer(stack: Stack, stack_settings: Settings) -> None:
    sku = f"quiet-{uuid.uuid4().hex[:6]}"
    open_store(stack_settings).create_sale(sku, 3, 1, None)
    env = {**os.environ, **stack.env, "COLUMNS": "100"}
    command = [sys.executable, "-m", "ops.cli", "sale", "watch", "--sku", sku, "--order-url", "http://127.0.0.1:9", "--once"]
    shown = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "0 / 3" in shown.stdout and "metrics:" in shown.stdout and "invariants hold" in shown.stdout
