"""`flashsale sale update` and `flashsale order cancel` against a real SQLite file and a real redis-server:
the database changes, the gate follows at once, and an edit made on a stale read changes nothing."""

from __future__ import annotations

import json
import uuid

import pytest

from ops import cli
from shared.errors import NotFound
from shared.gate import Gate
from shared.healing import reconcile_sale
from shared.redisconn import RedisConn
from shared.sales_feed import SalesFeed
from shared.settings import Settings
from shared.stock import StockCache
from shared.store import open_store
from shared.store.base import Store

pytestmark = pytest.mark.integration


def flashsale(settings: Settings, *argv: str) -> int:
    args = cli.parser().parse_args(list(argv))
    return int(args.run(args, settings))


@pytest.fixture
def store(settings: Settings) -> Store:
    return open_store(settings)


@pytest.fixture
def gate(settings: Settings) -> Gate:
    return Gate(RedisConn(settings))


def sale_sold_out_at_the_gate(store: Store, gate: Gate, stock: int) -> str:
    """A sale whose gate has admitted ``stock`` buyers whose orders are not written yet: the gate says sold out."""
    sku = f"phone-{uuid.uuid4().hex[:6]}"
    store.create_sale(sku, stock, 1, None)
    gate.rebuild(store, sku)
    for buyer in range(stock):
        assert gate.admit(sku, f"admitted-{buyer}", 1).verdict == "admitted"
    assert gate.admit(sku, "late", 1).verdict == "sold_out"
    return sku


def test_sale_update_changes_the_sale_and_the_gate_at_once(
    settings: Settings, store: Store, gate: Gate, capsys: pytest.CaptureFixture[str]
) -> None:
    sku = sale_sold_out_at_the_gate(store, gate, 2)
    assert flashsale(settings, "sale", "update", "--sku", sku, "--stock", "5", "--per-user-limit", "2") == 0
    sale = store.get_sale(sku)
    assert sale is not None and (sale.total, sale.per_user_limit, sale.version) == (5, 2, 2)
    assert "version 1 -> 2" in capsys.readouterr().out
    assert gate.state(sku)["remaining"] == "5"  # rebuilt from the database: buyers are admitted again
    assert gate.admit(sku, "late", 2).verdict == "admitted"


def test_sale_update_on_a_stale_version_changes_nothing(
    settings: Settings, store: Store, gate: Gate, capsys: pytest.CaptureFixture[str]
) -> None:
    sku = sale_sold_out_at_the_gate(store, gate, 2)
    assert flashsale(settings, "sale", "update", "--sku", sku, "--per-user-limit", "3") == 0  # someone else's edit: version 2
    capsys.readouterr()
    assert flashsale(settings, "sale", "update", "--sku", sku, "--stock", "9", "--if-version", "1") == cli.EXIT_SALE_CHANGED
    assert "version 2, not 1" in capsys.readouterr().err
    sale = store.get_sale(sku)
    assert sale is not None and (sale.total, sale.per_user_limit, sale.version) == (2, 3, 2)


def test_sale_update_says_what_to_change(settings: Settings, store: Store) -> None:
    store.create_sale("phone", 2, 1, None)
    assert cli.main(["sale", "update", "--sku", "phone"]) == 2  # InvalidRequest: nothing to change
    with pytest.raises(SystemExit):
        flashsale(settings, "sale", "update", "--sku", "phone", "--per-user-limit", "0")


def test_order_cancel_puts_the_ticket_back_on_sale(
    settings: Settings, store: Store, gate: Gate, capsys: pytest.CaptureFixture[str]
) -> None:
    sku = f"phone-{uuid.uuid4().hex[:6]}"
    store.create_sale(sku, 1, 1, None)
    order = store.place_order(sku, "first-buyer", 1).order
    gate.rebuild(store, sku)
    assert gate.admit(sku, "second-buyer", 1).verdict == "sold_out"
    assert flashsale(settings, "order", "cancel", "--order-id", order.order_id) == 0
    assert '"status": "cancelled"' in capsys.readouterr().out
    assert gate.admit(sku, "second-buyer", 1).verdict == "admitted"  # the gate was rebuilt: the unit sells again
    again = store.place_order(sku, "second-buyer", 1).order
    assert again.tickets == order.tickets  # the cancelled ticket, not a new one
    assert store.sale_stats(sku).invariants_hold


def test_reconcile_rebuilds_the_gate_even_while_another_process_is_rebuilding_it(
    settings: Settings, store: Store, gate: Gate, capsys: pytest.CaptureFixture[str]
) -> None:
    sku = sale_sold_out_at_the_gate(store, gate, 2)  # admissions whose orders never landed
    gate.redis.client.set(f"fs:{{{sku}}}:gate:rebuild", "1", px=5000)  # a worker's rebuild under way
    stock = StockCache(store, gate.redis, 1.0)
    # The healer gives way to it ...
    assert reconcile_sale(store, gate, stock, sku, grace_seconds=0, give_way=True).epoch is None
    assert gate.state(sku)["remaining"] == "0"
    # ... the operator's command does not: it ends with the gate matching the database.
    assert flashsale(settings, "reconcile", "--sku", sku, "--grace", "0") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gate_rebuilt"] is True and report["available"] == 2
    assert gate.state(sku)["remaining"] == "2"


def test_order_cancel_of_an_unknown_order_is_an_error(settings: Settings) -> None:
    with pytest.raises(NotFound):
        flashsale(settings, "order", "cancel", "--order-id", "no-such-order")


def test_sale_status_shows_what_the_events_counted_beside_the_database(
    settings: Settings, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    sku = f"phone-{uuid.uuid4().hex[:6]}"
    store.create_sale(sku, 3, 1, None)
    store.place_order(sku, "ada", 1)
    store.place_order(sku, "bob", 1)
    redis = RedisConn(settings)
    SalesFeed(store, redis, StockCache(store, redis, 1.0)).order_placed("event-1", {"sku": sku, "quantity": 1})  # one still in flight
    assert flashsale(settings, "sale", "status", "--sku", sku, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sold"] == 2 and report["events_counted"] == {"orders": 1, "units": 1}
