"""/metrics under gunicorn with two workers: the process group's totals, equal to the database."""

from __future__ import annotations

import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ops.devstack import Stack
from ops.sales import fresh_sku, open_sale
from ops.watch import Scrape, fetch
from shared.settings import Settings
from shared.store import open_store
from tests.clients import press_buy, settled

pytestmark = [pytest.mark.integration, pytest.mark.concurrency]


def metrics_dir(stack: Stack, function: str) -> Path:
    """The directory shared.serving gave the function's gunicorn (the master is the process the stack started)."""
    environ = Path(f"/proc/{stack.processes[function].pid}/environ")
    if not environ.exists():
        pytest.skip("needs /proc to find the gunicorn master's environment")
    variables = dict(item.split("=", 1) for item in environ.read_text().split("\0") if "=" in item)
    return Path(variables["PROMETHEUS_MULTIPROC_DIR"])


def healthz_count(scrape: Scrape) -> float:
    return scrape.total("flashsale_http_requests_total", function="stock", route="/healthz", status="200")


def test_every_scrape_answers_the_whole_process_group(stack: Stack) -> None:
    url = stack.url("stock")
    before = healthz_count(fetch(url))
    requests = 300

    def ping(_: int) -> None:
        with urllib.request.urlopen(url + "/healthz", timeout=10) as response:
            assert response.status == 200

    # Many connections at once, so that both workers accept some.
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(ping, range(requests)))

    files = list(metrics_dir(stack, "stock").glob("counter_batched_*.db"))  # shared/metric_files.py
    pids = {int(f.name.removeprefix("counter_batched_").removesuffix(".db")) for f in files}
    assert len(pids) >= 2, f"only one worker kept counts: {files}"
    # Whichever worker answers the scrape, it reports the sum of both, once the interval has passed.
    assert settled(lambda: healthz_count(fetch(url)), before + requests) == before + requests
    for _ in range(10):
        assert healthz_count(fetch(url)) == before + requests


def test_confirmed_orders_scraped_equal_the_database_sold_count(stack: Stack, stack_settings: Settings) -> None:
    """The issue's done-when: after a crowd, sum(flashsale_orders_total{outcome="confirmed"}) == sold, exactly."""
    store = open_store(stack_settings)
    sale = open_sale(stack_settings, fresh_sku("watch"), 60, buyers=200, store=store)
    sku, tokens = sale.sku, sale.buyers.tokens
    barrier = threading.Barrier(len(tokens))
    statuses: list[int] = [0] * len(tokens)

    def buyer(i: int) -> None:
        barrier.wait()
        statuses[i] = press_buy(stack.url("order"), tokens[i], sku, f"k{i}")[0]

    threads = [threading.Thread(target=buyer, args=(i,)) for i in range(len(tokens))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    sold = store.sale_stats(sku).sold
    assert sold == 60 == statuses.count(201)
    pids = {f.name for f in metrics_dir(stack, "order").glob("counter_batched_*.db")}
    assert len(pids) >= 2, pids

    def outcomes() -> tuple[float, float]:
        page = fetch(stack.url("order"))
        confirmed, sold_out = (page.total("flashsale_orders_total", sku=sku, outcome=outcome) for outcome in ("confirmed", "sold_out"))
        return confirmed, sold_out

    # Both outcomes at once: the confirmed counts are written early in the crowd, a worker's last refusals up to an interval later.
    expected = (float(sold), float(statuses.count(409)))
    assert settled(outcomes, expected) == expected
    for _ in range(5):  # every worker answers the same
        page = fetch(stack.url("order"))
        assert page.total("flashsale_orders_total", sku=sku, outcome="confirmed") == sold
        assert page.total("flashsale_orders_total", sku=sku, outcome="sold_out") == statuses.count(409) == 140
        assert page.total("flashsale_sale_units", sku=sku) == 60
        assert page.total("flashsale_http_requests_total", function="order", route="/orders", status="201") >= sold
