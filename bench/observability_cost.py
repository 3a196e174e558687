"""What metrics and access lines cost a loser's press, in CPU, with no network and no load generator.

The observability row of ``make bench`` compares two servers under k6 and moves
by more than the 5 % it tests (an A/A run, ``--observability-same``, moved p99
by up to 18 %). This measures the price directly: the order function's WSGI
app, as a gunicorn worker builds it (functions-framework's app behind
``shared.bodytimeout.guard``), answers presses on a sold-out sale in one
process, and the process's CPU time per press is read. Each variant runs in a
fresh process (settings are read once), the order of the variants alternating
between rounds; the median of each is reported.

    python -m bench.observability_cost [--rounds 4] [--presses 30000]
    python -m bench.observability_cost --served [--rounds 4] [--seconds 15]

In process, no gevent, no HTTP: what the request path itself costs. With
``--served`` each variant is the order function as deployed (gunicorn, gevent
workers) under the losers' load (k6, 1,000 VUs pressing on a sold-out sale),
and the figure is the workers' CPU (from /proc) per answer: the price a real
worker pays, gevent's locks and the system calls included. The two differed
by three times for prometheus_client's per-count writes (docs/performance.md).

Variants: ``quiet`` (METRICS=false, LOG_LEVEL=WARNING, the observability
row's baseline), ``metrics`` (metrics on, no access lines), ``logs`` (access
lines at INFO, sampled for refusals, no metrics), ``observed`` (both, as
deployed). A real redis-server, SQLite file and signed tokens, as served.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict[str, str]] = {
    "quiet": {"METRICS": "false", "LOG_LEVEL": "WARNING"},
    "metrics": {"METRICS": "true", "LOG_LEVEL": "WARNING"},
    "logs": {"METRICS": "false", "LOG_LEVEL": "INFO"},
    "observed": {"METRICS": "true", "LOG_LEVEL": "INFO"},
}
WARMUP = 3_000


def press_loop(sale_file: Path, presses: int) -> float:
    """In a child process: microseconds of CPU per press, after a warm-up (every answer must be a 409)."""
    import functions_framework

    from shared import bodytimeout, logs
    from shared.settings import get_settings

    sale = json.loads(sale_file.read_text())
    settings = get_settings()
    logs.configure(settings)
    app = bodytimeout.guard(functions_framework.create_app(target="order", source=str(ROOT / "functions/order/main.py")), settings, "order")
    body = json.dumps({"sku": sale["sku"], "quantity": 1}).encode()
    tokens: list[str] = sale["tokens"]

    def press(i: int) -> str:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/orders",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_AUTHORIZATION": f"Bearer {tokens[i % len(tokens)]}",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        status: list[str] = []

        def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
            status.append(line)
            return lambda data: None

        for _ in app(environ, start_response):
            pass
        return status[0]

    for i in range(WARMUP):
        answer = press(i)
        if not answer.startswith("409"):
            raise SystemExit(f"a press on a sold-out sale answered {answer}")
    started = time.process_time()
    for i in range(presses):
        press(i)
    return (time.process_time() - started) / presses * 1e6


def measure(rounds: int, presses: int) -> dict[str, list[float]]:
    from ops.devstack import RedisServer, ensure_keys
    from ops.sales import open_sale
    from shared.settings import Settings

    found: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="flashsale-observability-cost-") as scratch:
        work = Path(scratch)
        redis = RedisServer(workdir=work).start()
        try:
            private, public = ensure_keys(work / "keys")
            env = {
                "DATABASE_URL": f"sqlite:///{work / 'flashsale.db'}",
                "REDIS_URL": redis.url,
                "JWT_PRIVATE_KEY_FILE": str(private),
                "JWT_PUBLIC_KEY_FILE": str(public),
                "BCRYPT_ROUNDS": "4",
            }
            opened = open_sale(Settings.from_env(env), "observability-cost", 0, buyers=1_000)
            sale_file = work / "sale.json"
            sale_file.write_text(json.dumps({"sku": opened.sku, "tokens": opened.buyers.tokens}))
            names = list(VARIANTS)
            for round_number in range(rounds):
                for name in names if round_number % 2 == 0 else names[::-1]:
                    child_env = {**os.environ, **env, **VARIANTS[name], "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(dir=work)}
                    done = subprocess.run(
                        [sys.executable, "-m", "bench.observability_cost", "--child", str(sale_file), "--presses", str(presses)],
                        env=child_env,
                        cwd=ROOT,
                        stdout=subprocess.DEVNULL,  # the access lines
                        stderr=subprocess.PIPE,
                        text=True,
                        check=False,
                    )
                    lines = [line for line in done.stderr.splitlines() if line.startswith("us per press ")]
                    if done.returncode != 0 or not lines:
                        raise SystemExit(f"{name}: the child failed:\n{done.stderr[-2000:]}")
                    found[name].append(float(lines[-1].removeprefix("us per press ")))
                    print(f"round {round_number + 1} {name:<9} {found[name][-1]:7.1f} us per press", flush=True)
        finally:
            redis.stop()
    return found


def measure_served(rounds: int, seconds: int, vus: int = 1_000) -> dict[str, list[float]]:
    """Each variant's order function under gunicorn, the losers' load on each in turn (order alternating): µs of CPU per answer."""
    from bench import load
    from bench.config import Config
    from bench.cpu import metered
    from bench.sites import order_sites
    from ops.sales import fresh_sku, open_sale

    found: dict[str, list[float]] = {name: [] for name in VARIANTS}
    sku = fresh_sku("observability-cost")
    envs = {name: {**Config().stack_env(), **variant} for name, variant in VARIANTS.items()}
    with (
        tempfile.TemporaryDirectory(prefix="flashsale-observability-served-") as scratch,
        order_sites(envs, Path(scratch), vus, "observability-cost") as sites,
    ):
        for site in sites.values():
            open_sale(site.settings, sku, 0)
        names = list(VARIANTS)
        for round_number in range(rounds):
            for name in names if round_number % 2 == 0 else names[::-1]:
                site = sites[name]
                knobs = site.env(sku, VUS=vus, DURATION=f"{seconds}s")
                with metered(site.masters["order"], None) as cpu:
                    result = load.run("buyers.js", knobs, Path(scratch) / "raw", f"{name}-{round_number}")
                answers = int((result.summary.get("http") or {}).get("requests") or 0)
                if answers <= 0 or cpu.workers_s <= 0:
                    raise SystemExit(f"{name}: no answers measured (k6 exit {result.exit_code})")
                found[name].append(cpu.workers_s / answers * 1e6)
                print(f"round {round_number + 1} {name:<9} {found[name][-1]:7.1f} us of CPU per answer ({answers:,} answers)", flush=True)
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.observability_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--presses", type=int, default=30_000)
    parser.add_argument("--served", action="store_true", help="under gunicorn and k6: the workers' CPU per answer")
    parser.add_argument("--seconds", type=int, default=15, help="with --served: each load's duration")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(f"us per press {press_loop(args.child, args.presses):.2f}", file=sys.stderr)
        return
    found = measure_served(args.rounds, args.seconds) if args.served else measure(args.rounds, args.presses)
    quiet = statistics.median(found["quiet"])
    what = "CPU per answer, served" if args.served else "CPU per press"
    print(f"\n| variant | {what} (median) | over quiet | each round over its own quiet (median) | rounds |\n|---|---|---|---|---|")
    for name, values in found.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{v:.1f}" for v in values)
        # A round's variants ran minutes apart at most: their ratio moves less with the machine's other load than the medians do.
        paired = statistics.median(v / q for v, q in zip(values, found["quiet"], strict=True))
        print(f"| {name} | {median:.1f} µs | {median - quiet:+.1f} µs ({median / quiet:.2f}×) | {paired:.2f}× | {rounds} |")


if __name__ == "__main__":
    main()
