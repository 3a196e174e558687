"""``flashsale``: the operator's command line."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops.devstack import DEVSTACK_FILE, DevStackInfo
from ops.loadusers import LOAD_TEST_PASSWORD, mint_buyers
from ops.plan import add_plan_command
from ops.sales import open_sale, redis_side, refresh_redis
from shared import validation
from shared.errors import FlashsaleError, InvalidRequest, SaleChanged, UnknownSku
from shared.healing import reconcile_sale
from shared.redisconn import RedisConn, RedisDown
from shared.sales_feed import SalesFeed
from shared.settings import Settings, get_settings
from shared.stock import StockCache
from shared.store import open_store
from shared.tokens import generate_keypair

EXIT_GATE_NOT_REBUILT = 4  # the database is changed but Redis did not answer, so the gate was not rebuilt (3: the invariants are broken)
EXIT_SALE_CHANGED = 5  # sale update: someone changed the sale since it was read; nothing was written


def _datetime(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _count(least: int) -> Any:
    def parse(value: str) -> int:
        number = int(value)
        if number < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}")
        return number

    return parse


# commands ------------------------------------------------------------------
def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    directory = Path(args.dir or Path(settings.jwt_private_key_file).parent)
    if (directory / "signing.pem").exists() and not args.rotate:
        print(f"keys already in {directory} (use --rotate for new ones)")
        return 0
    private, public = generate_keypair(directory)
    print(f"wrote {private} and {public}")
    return 0


def cmd_sale_create(args: argparse.Namespace, settings: Settings) -> int:
    starts_at = _datetime(args.starts_at) if args.starts_at else None
    opened = open_sale(settings, args.sku, args.stock, per_user_limit=args.per_user_limit, starts_at=starts_at)
    sale = opened.sale
    if opened.gate_epoch is None:
        # A new sale has no gate yet: the first buyer builds it from the database.
        print(f"redis did not answer at {settings.redis_url}: the gate is built by the first buyer once it is back", file=sys.stderr)
    print(f"sale {sale.sku}: {sale.total} units, {sale.per_user_limit} per buyer, starts {sale.starts_at or 'now'}")
    return 0


def cmd_sale_update(args: argparse.Namespace, settings: Settings) -> int:
    """Change a sale's terms with optimistic locking, then rebuild its gate so buyers see the change at once."""
    sku = validation.sku(args.sku)
    if args.stock is None and args.per_user_limit is None and args.starts_at is None and not args.starts_now:
        raise InvalidRequest("say what to change: --stock, --per-user-limit, --starts-at or --starts-now")
    store = open_store(settings)
    read = store.get_sale(sku)
    if read is None:
        raise UnknownSku(f"no sale for sku {sku!r}")
    # The version this command read (or the one the operator saw, --if-version): an edit
    # made by anyone in between makes the write fail rather than be overwritten unseen.
    expected = read.version if args.if_version is None else args.if_version
    try:
        sale = store.update_sale(
            sku,
            total=args.stock,
            per_user_limit=args.per_user_limit,
            starts_at=_datetime(args.starts_at) if args.starts_at else None,
            clear_start=args.starts_now,
            expected_version=expected,
        )
    except SaleChanged as exc:
        print(f"flashsale: nothing changed: {exc.detail} (flashsale sale update prints the version it writes)", file=sys.stderr)
        return EXIT_SALE_CHANGED
    print(
        f"sale {sale.sku}: version {expected} -> {sale.version}: {sale.total} units, {sale.per_user_limit} per buyer,"
        f" starts {sale.starts_at.isoformat() if sale.starts_at else 'now'}"
    )
    if refresh_redis(settings, store, sku) is None:
        return _gate_not_rebuilt(settings, sku, "the sale is changed in the database")
    return 0


def cmd_order_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancel a confirmed order (a failed payment, fraud): its tickets go back to the sale's free list and sell again."""
    store = open_store(settings)
    order = store.cancel_order(args.order_id)
    print(json.dumps({"order_id": order.order_id, "sku": order.sku, "user_id": order.user_id, "status": order.status}, indent=2))
    if refresh_redis(settings, store, order.sku) is None:
        return _gate_not_rebuilt(settings, order.sku, "the order is cancelled in the database")
    return 0


def _gate_not_rebuilt(settings: Settings, sku: str, done: str) -> int:
    # The gate may still say "sold out" for units the database has, and no buyer
    # rebuilds a gate that is closed rather than cold: say so, and fail.
    print(
        f"flashsale: {done}, but redis did not answer at {settings.redis_url}, so the gate was not rebuilt and may still"
        f" refuse buyers for units the sale has. Start Redis (`make run` starts one, and `flashsale` finds it through"
        f" var/devstack.json) or set REDIS_URL to where it listens, then run `flashsale reconcile --sku {sku}`.",
        file=sys.stderr,
    )
    return EXIT_GATE_NOT_REBUILT


def cmd_sale_status(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    sku = validation.sku(args.sku)
    stats = store.sale_stats(sku)
    report: dict[str, Any] = stats.to_public()
    # What the events function has counted from order.placed: behind the database while events are in flight.
    redis = RedisConn(settings)
    try:
        report["events_counted"] = SalesFeed(store, redis, StockCache(store, redis, settings.stock_cache_ttl_seconds)).counts(sku)
    except RedisDown:
        report["events_counted"] = None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>20}: {value}")
    return 0 if stats.invariants_hold else 3


def cmd_sale_watch(args: argparse.Namespace, settings: Settings) -> int:
    from ops.watch import watch

    order_url = args.order_url or (args.dev_stack.urls.get("order") if args.dev_stack else None) or "http://127.0.0.1:8083"
    return watch(open_store(settings), order_url, validation.sku(args.sku), once=args.once, interval=args.interval)


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings)
    # Not giving way to another process's rebuild: the command ends with the gate rebuilt, or says it is not.
    done = reconcile_sale(store, *redis_side(settings, store), validation.sku(args.sku), grace_seconds=args.grace, give_way=False)
    report, epoch = done.report, done.epoch
    print(
        json.dumps(
            {
                "sku": args.sku,
                "released_tickets": len(report.released_tickets),
                "corrected_buyers": report.corrected_buyers,
                "gate_rebuilt": epoch is not None,
                **report.stats.to_public(),
            },
            indent=2,
        )
    )
    if not report.stats.invariants_hold:
        return 3
    if epoch is None:
        return _gate_not_rebuilt(settings, args.sku, "the database is reconciled")
    return 0


def cmd_tokens(args: argparse.Namespace, settings: Settings) -> int:
    # A terminal's argv may hold bytes that are not UTF-8 (Python keeps them as lone surrogates).
    validation.text(args.prefix, "--prefix")
    validation.text(args.password, "--password")
    buyers = mint_buyers(settings, args.count, prefix=args.prefix, password=args.password, ttl_seconds=args.ttl, show_progress=True)
    buyers.write(Path(args.out), Path(args.users_out) if args.users_out else None)
    print(f"{len(buyers.tokens)} tokens in {args.out}")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from ops.devstack import dev_ports, run_dev_stack

    functions = tuple(args.functions.split(","))
    return run_dev_stack(
        settings,
        Settings.is_set,
        var_dir=Path(args.var_dir),
        functions=functions,
        ports=dev_ports(functions, args.first_port),
        redis_port=args.redis_port,
        out=sys.stdout,
    )


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from ops.demo import run_demo

    return run_demo(buyers=args.buyers, stock=args.stock, workdir=Path(args.workdir))


# parser --------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="flashsale", description="Operate a flashsale deployment.")
    sub = top.add_subparsers(dest="command", required=True)

    keys = sub.add_parser("keys", help="create the token signing key pair")
    keys.add_argument("--dir", help="where to write signing.pem and signing.pub.pem (default: beside JWT_PRIVATE_KEY_FILE)")
    keys.add_argument("--rotate", action="store_true", help="replace existing keys")
    keys.set_defaults(run=cmd_keys)

    sale = sub.add_parser("sale", help="create a sale or see how it goes")
    sale_sub = sale.add_subparsers(dest="sale_command", required=True)
    create = sale_sub.add_parser("create", help="open a sale of N units of a sku")
    create.add_argument("--sku", required=True)
    create.add_argument("--stock", type=int, required=True)
    create.add_argument("--per-user-limit", type=int, default=1)
    create.add_argument("--starts-at", help="ISO 8601 time the sale opens (default: now)")
    create.set_defaults(run=cmd_sale_create)
    update = sale_sub.add_parser(
        "update", help="change a sale's stock, per-buyer limit or start (optimistic locking), then rebuild its gate"
    )
    update.add_argument("--sku", required=True)
    update.add_argument("--stock", type=_count(0), help="the sale's total units (not below what is sold)")
    update.add_argument("--per-user-limit", type=_count(1))
    start = update.add_mutually_exclusive_group()
    start.add_argument("--starts-at", help="ISO 8601 time the sale opens")
    start.add_argument("--starts-now", action="store_true", help="open the sale now (clears --starts-at)")
    update.add_argument("--if-version", type=_count(1), help="write only if the sale is still at this version (default: the one read)")
    update.set_defaults(run=cmd_sale_update)
    status = sale_sub.add_parser("status", help="sold, orders, buyers, and whether the invariants hold")
    status.add_argument("--sku", required=True)
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=cmd_sale_status)
    watch = sale_sub.add_parser("watch", help="a live view: sold, orders per second by outcome, p99, invariants (Ctrl-C stops)")
    watch.add_argument("--sku", required=True)
    watch.add_argument("--order-url", help="the order function, whose /metrics is read (default: `make run`'s, else http://127.0.0.1:8083)")
    watch.add_argument("--once", action="store_true", help="print one frame and exit (3 if the invariants are broken)")
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    watch.set_defaults(run=cmd_sale_watch)

    reconcile = sub.add_parser("reconcile", help="give back orphaned units and rebuild the Redis gate and cache")
    reconcile.add_argument("--sku", required=True)
    reconcile.add_argument("--grace", type=float, default=2.0, help="seconds an orphan must stay orphaned (in-flight orders)")
    reconcile.set_defaults(run=cmd_reconcile)

    order = sub.add_parser("order", help="act on one order")
    order_sub = order.add_subparsers(dest="order_command", required=True)
    cancel = order_sub.add_parser("cancel", help="cancel a confirmed order: its tickets sell again (the gate is rebuilt)")
    cancel.add_argument("--order-id", required=True)
    cancel.set_defaults(run=cmd_order_cancel)

    tokens = sub.add_parser("tokens", help="create load-test users and mint their tokens")
    tokens.add_argument("--count", type=int, required=True)
    tokens.add_argument("--out", required=True)
    tokens.add_argument("--users-out", help="also write their emails and password (for login tests)")
    tokens.add_argument("--ttl", type=int, default=3600, help="token lifetime in seconds")
    tokens.add_argument("--prefix", default="buyer")
    tokens.add_argument("--password", default=LOAD_TEST_PASSWORD)
    tokens.set_defaults(run=cmd_tokens)

    run = sub.add_parser("run", help="run redis-server and the functions on 127.0.0.1, showing their logs (Ctrl-C stops)")
    run.add_argument("--functions", default="auth,stock,order")
    run.add_argument("--redis-port", type=int, default=6390, help="0: any free port (not used when REDIS_URL is set)")
    run.add_argument("--first-port", type=int, default=8081, help="auth's port; stock, order, events the next ones (0: any free ports)")
    run.add_argument("--var-dir", default="var", help="database, keys, log/<function>.log and devstack.json (default: var)")
    run.set_defaults(run=cmd_run, joins_dev_stack=False)

    demo = sub.add_parser("demo", help="run a small flash sale end to end and print the verdict")
    demo.add_argument("--buyers", type=int, default=300)
    demo.add_argument("--stock", type=int, default=100)
    demo.add_argument("--workdir", default="var/demo")
    demo.set_defaults(run=cmd_demo, joins_dev_stack=False)
    add_plan_command(sub)
    return top


def operator_settings(args: argparse.Namespace, var_dir: Path = Path("var")) -> Settings:
    """The settings a command runs with: the environment's, pointed at `make run`'s stack where it leaves a setting unset.

    Here and not in Settings.from_env: only a person's commands should find a
    dev stack. A function's settings stay a pure function of its environment (a
    pod must never pick up a file), and so do the tests' settings.
    """
    settings = get_settings()
    args.dev_stack = None
    if not getattr(args, "joins_dev_stack", True):
        return settings  # run and demo start their own
    dev_stack = args.dev_stack = DevStackInfo.load(var_dir / DEVSTACK_FILE)
    if dev_stack is None:
        return settings
    joined = dev_stack.settings_for(settings, Settings.is_set)
    if joined != settings:
        print(f"flashsale: using the stack `make run` started (pid {dev_stack.pid}, {var_dir / DEVSTACK_FILE})", file=sys.stderr)
    return joined


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = operator_settings(args)
    try:
        return int(args.run(args, settings))
    except FlashsaleError as exc:
        print(f"flashsale: {exc.detail}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
