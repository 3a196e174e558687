"""make bench: every scenario of issue 4 in one go on this machine, the baseline beside each.

python -m bench.run              # make bench: 18-21 minutes on 2 cores
python -m bench.run --quick      # a few minutes: smaller crowds, shorter runs, one round of each

Writes bench/results/<timestamp>/ (report.md, charts, figures.json, results.json,
raw k6 summaries and points in raw/, py-spy profiles of missed targets); a full
run also writes bench/results/latest.json and the generated part of
docs/performance.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import charts, report
from bench.config import Config, machine_cpus
from bench.measure import load_average
from bench.results import Results
from bench.scenarios import Bench
from bench.sites import Site, main_sites, monolith_site, observability_sites, pinned, split_site, worker_counts
from bench.targets import TARGETS, missed
from loadtest.run import k6_binary, raise_open_file_limit
from shared.settings import Settings

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "performance.md"
PARTS = ("crowd", "losers", "stock", "login", "seed", "micro", "isolation", "observability")
# A missed target -> (the function whose workers py-spy samples, the load to run again).
PROFILED = {
    "crowd-p99": ("order", "crowd"),
    "crowd-rps": ("order", "crowd"),
    "crowd-lost": ("order", "crowd"),
    "losers": ("order", "losers"),
    "losers-p99": ("order", "losers"),
    "losers-stretch": ("order", "losers"),
    "stock-200": ("stock", "stock-200"),
    "stock-1000": ("stock", "stock-1000"),
    "login": ("auth", "login"),
    "isolation": ("order", "isolation"),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller crowds and shorter runs (development)")
    parser.add_argument("--buyers", type=int, help="one-shot buyers in each crowd (10,000)")
    parser.add_argument("--stock", type=int, help="units of each crowd's sale (1,000)")
    parser.add_argument("--crowd-rounds", type=int, help="crowds on each of baseline and flashsale (3)")
    parser.add_argument("--crowd-pick", choices=("median", "best"), help="how the rounds become one figure (median)")
    parser.add_argument(
        "--pair-rounds", type=int, help="pairs of losers, observability and the store row, order alternating; the median reported (5)"
    )
    parser.add_argument(
        "--observability-same",
        action="store_true",
        help="observability with metrics and logs off on both sides: what the harness alone moves the row by (an A/A run)",
    )
    parser.add_argument("--duration", type=int, help="seconds of each sustained run (20)")
    parser.add_argument("--bcrypt-rounds", type=int, help="bcrypt cost for the functions and the raw measurement (BCRYPT_ROUNDS, else 12)")
    parser.add_argument("--log-level", help="LOG_LEVEL of the functions (INFO, as deployed); WARNING drops the access log line")
    parser.add_argument("--no-profile", action="store_true", help="no py-spy profiles for missed targets")
    parser.add_argument("--profile-always", action="store_true", help="a py-spy profile of every load, met or missed (development)")
    parser.add_argument("--only", help=f"comma-separated parts to run, for development: {','.join(PARTS)}")
    parser.add_argument("--out", type=Path, help="results folder (bench/results/<timestamp>)")
    parser.add_argument("--render", type=Path, metavar="FOLDER", help="measure nothing: redraw a results folder's report and charts")
    return parser.parse_args(argv)


def configure(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {
        "buyers": args.buyers,
        "stock": args.stock,
        "crowd_rounds": args.crowd_rounds,
        "crowd_pick": args.crowd_pick,
        "pair_rounds": args.pair_rounds,
        "observability_same": args.observability_same or None,
        "duration_s": args.duration,
        "bcrypt_rounds": args.bcrypt_rounds or Settings.from_env().bcrypt_rounds,
        "log_level": args.log_level,
        "profile": False if args.no_profile else None,
        "profile_always": args.profile_always or None,
    }
    given = {name: value for name, value in overrides.items() if value is not None}
    return Config.quick_run(**given) if args.quick else replace(Config(), **given)


def machine() -> dict[str, Any]:
    def read(path: str) -> str | None:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return None

    k6 = subprocess.run([k6_binary(), "version"], capture_output=True, text=True, check=False).stdout.split("(")[0].strip()
    return {
        **machine_hardware(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "k6": k6,
        "somaxconn": read("/proc/sys/net/core/somaxconn"),
        "tcp_max_syn_backlog": read("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
        "load_average_start": load_average(),
    }


def machine_hardware() -> dict[str, Any]:
    """The CPU model, memory and redis-server a run had: what a reader of the figures needs to compare machines."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), None)
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    kib = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")), None)
    server = shutil.which("redis-server")
    redis = subprocess.run([server, "--version"], capture_output=True, text=True, check=False).stdout.split() if server else []
    version = next((word.removeprefix("v=") for word in redis if word.startswith("v=")), None)
    return {"cpu_model": model or platform.processor() or None, "memory_gib": round(kib / 2**20, 1) if kib else None, "redis": version}


def isolation_meta(config: Config) -> dict[str, Any]:
    cpus = pinned()
    return {
        "buy_rate": config.buy_rate,
        "storm_vus": config.storm_vus,
        "split": f"auth alone on CPU {cpus['auth']} and order alone on CPU {cpus['order']} (taskset; one gunicorn worker each); "
        "k6 and redis-server unpinned, there being no third core",
        "monolith": f"auth, stock and order in one gunicorn process group served as order is (gevent), on CPUs "
        f"{','.join(sorted(set(cpus.values())))}, one worker per CPU",
    }


def chunks(tasks: list[Callable[[], None]], rounds: int) -> list[list[Callable[[], None]]]:
    """Spread the tasks over the crowd rounds: they run while the previous crowd's TIME_WAIT sockets drain."""
    size = math.ceil(len(tasks) / max(1, rounds)) if tasks else 0
    return [tasks[i * size : (i + 1) * size] for i in range(max(1, rounds))]


def profile_missed(bench: Bench, sites: dict[str, Site], keys: set[str]) -> None:
    """One profile per load behind a missed target (both crowd targets share one), baseline beside flashsale."""
    taken: set[str] = set()
    for target in TARGETS if bench.config.profile_always else missed(bench.results):
        if target.key not in keys or target.key not in PROFILED:
            continue
        function, kind = PROFILED[target.key]
        if kind not in taken:
            taken.add(kind)
            # login is held to raw bcrypt, not to the baseline: only flashsale is profiled
            bench.profile(kind, function, sites if kind != "login" else {"flashsale": sites["flashsale"]})


def run_main(bench: Bench, config: Config, parts: set[str], scratch: Path) -> None:
    with main_sites(config, scratch) as sites:
        bench.results.workers = worker_counts(sites["flashsale"].settings)
        bench.say("stack", f"up: flashsale {sites['flashsale'].urls}, baseline {sites['baseline'].urls}; workers {bench.results.workers}")
        tasks: list[Callable[[], None]] = []
        if "losers" in parts:
            tasks.append(lambda: bench.losers(sites))
        if "stock" in parts:
            tasks += [functools.partial(bench.stock_check, sites, vus) for vus in config.stock_vus]
        if "login" in parts:
            tasks.append(lambda: bench.login(sites))
        if "seed" in parts:
            tasks.append(lambda: bench.seed_matrix(sites))
        if "micro" in parts:
            tasks.append(lambda: bench.micro(sites["flashsale"].settings))
        rounds = config.crowd_rounds if "crowd" in parts else 0
        for number, after in enumerate(chunks(tasks, rounds), 1):
            if number <= rounds:
                bench.crowd(sites, number)
            for task in after:
                task()
        if config.profile:
            profile_missed(
                bench,
                sites,
                {"crowd-p99", "crowd-rps", "crowd-lost", "losers", "losers-p99", "losers-stretch", "stock-200", "stock-1000", "login"},
            )


def run_isolation(bench: Bench, config: Config, scratch: Path) -> None:
    with split_site(config, scratch) as site:
        bench.isolation("split", site)
        if config.profile:
            profile_missed(bench, {"flashsale": site}, {"isolation"})
    with monolith_site(config, scratch) as site:
        bench.isolation("monolith", site)


def render(out: Path) -> int:
    """Rewrite a folder's report, charts and figures from its results.json (after a change to the report code).

    The docs block and latest.json follow when the folder holds the run latest.json came from.
    """
    results = Results.from_json(json.loads((out / "results.json").read_text()))
    latest = RESULTS / "latest.json"
    is_latest = latest.exists() and json.loads(latest.read_text()).get("measured_at") == results.meta.get("measured_at")
    report.write(results, out, charts.draw(results, out), latest=latest if is_latest else None, doc=DOC if is_latest else None)
    print(f"rewrote {out / 'report.md'}" + (", docs/performance.md and latest.json" if is_latest else ""))
    return 0


def keep_logs(scratch: Path, logs: Path) -> None:
    """Every server's log (gunicorn's own lines: a worker that restarted or timed out, and the access lines) beside the report."""
    for log in sorted(scratch.rglob("logs/*.log")):
        target = logs / log.relative_to(scratch).as_posix().replace("/logs/", "-").replace("/", "-")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, target)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.render:
        return render(args.render)
    config = configure(args)
    parts = set(args.only.split(",")) if args.only else set(PARTS)
    unknown = parts - set(PARTS)
    if unknown:
        raise SystemExit(f"--only: unknown parts {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    raise_open_file_limit()
    now = datetime.now(UTC)
    out = args.out or RESULTS / now.strftime("%Y%m%dT%H%M%SZ")
    full = not config.quick and parts == set(PARTS)
    given = sys.argv[1:] if argv is None else argv
    command = "make bench" if full and not given else "python -m bench.run " + " ".join(given)
    results = Results(
        meta={
            "measured_at": now.isoformat(timespec="seconds"),
            "command": command.strip(),
            "cpus": len(machine_cpus()),
            "bcrypt_rounds": config.bcrypt_rounds,
            "crowd_pick": config.crowd_pick,
            "config": config.to_json(),
            "machine": machine(),
            "isolation": isolation_meta(config),
        }
    )
    started = time.monotonic()
    print(f"bench: results in {out}; {'quick' if config.quick else 'full'} run of {', '.join(p for p in PARTS if p in parts)}", flush=True)
    failed = False
    with tempfile.TemporaryDirectory(prefix="flashsale-bench-") as scratch:
        bench = Bench(config, results, out, Path(scratch))
        try:
            if parts - {"isolation", "observability"}:
                run_main(bench, config, parts, Path(scratch))
            if "isolation" in parts:
                run_isolation(bench, config, Path(scratch))
            if "observability" in parts:
                with observability_sites(config, Path(scratch)) as sites:
                    bench.observability(sites)
        except Exception as exc:  # the report still shows what was measured before it
            failed = True
            bench.note(f"the run stopped early: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        keep_logs(Path(scratch), out / "logs")
    results.meta["duration_s"] = round(time.monotonic() - started)
    results.meta["machine"]["load_average_end"] = load_average()
    drawn = charts.draw(results, out)
    keep = full and not failed
    report.write(results, out, drawn, latest=RESULTS / "latest.json" if keep else None, doc=DOC if keep else None)
    print(f"\n{report.targets_table(results)}\n")
    met = [t for t in TARGETS if t.met(results)]
    print(
        f"targets met: {len(met)} of {len(TARGETS)}; report: {out / 'report.md'}" + ("" if keep else " (docs and latest.json left alone)")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
