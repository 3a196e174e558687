"""auth's worker layout, measured: two gevent workers with one hashing thread each, or one worker with two.

A Knative pod of auth takes at most ``containerConcurrency`` (2) logins at once.
With two workers the kernel hands each new connection to whichever worker
accepts first, so both logins may land on one worker whose single hashing
thread then runs them one after the other while the other worker idles. With
one worker and two hashing threads that cannot happen, but one process holds
both. This runs the same login load (as many logins in flight as
containerConcurrency) against each layout on this machine and reports logins a
second, latency, and the memory the pod's processes hold (PSS, so shared pages
count once) against the manifest's 256 Mi limit.

    .venv/bin/python -m bench.auth_layout [--seconds 20] [--in-flight 2]

Both layouts run in one invocation, back to back, so the comparison is a ratio
taken on the same machine in the same minutes.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import load
from bench.config import Config
from bench.measure import Measure, measure
from bench.report import ms, number
from bench.servers import worker_pids
from ops.devstack import local_stack
from ops.loadusers import mint_buyers
from shared.settings import Settings

LAYOUTS = {
    "2 workers x 1 hashing thread": {"WORKERS": "2", "THREADS": "1"},
    "1 worker x 2 hashing threads": {"WORKERS": "1", "THREADS": "2"},
}
LIMIT_MIB = 256  # knative/auth.yaml


@dataclass
class LayoutRun:
    name: str
    logins: Measure
    processes: int
    pss_mib: float


def pss_mib(pid: int) -> float:
    """Proportional set size of ``pid`` in MiB (its share of shared pages)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_layout(name: str, env: dict[str, str], seconds: int, in_flight: int, scratch: Path) -> LayoutRun:
    config = Config()
    with local_stack(scratch / name.replace(" ", "-"), functions=("auth",), extra_env={**config.stack_env(), **env}) as (stack, _):
        settings = Settings.from_env(stack.env)
        layout = name.replace(" ", "-")
        tokens, users = mint_buyers(settings, max(50, in_flight * 10), prefix=f"{layout}-").write_files(scratch, layout)
        site_env = {"AUTH_URL": stack.url("auth"), "USERS_FILE": str(users), "TOKENS_FILE": str(tokens), "SKU": "-"}
        result = load.run("login-storm.js", {**site_env, "VUS": str(in_flight), "DURATION": f"{seconds}s"}, scratch / "raw", name)
        master = stack.processes["auth"].pid
        pids = [master, *worker_pids(master)]
        memory = sum(pss_mib(pid) for pid in pids)
    return LayoutRun(name, measure(result, "login_storm", seconds), len(pids), round(memory, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.auth_layout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=20, help="seconds of logins on each layout")
    parser.add_argument("--in-flight", type=int, default=2, help="logins at once (auth's containerConcurrency)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="flashsale-auth-layout-") as scratch:
        runs = [run_layout(name, env, args.seconds, args.in_flight, Path(scratch)) for name, env in LAYOUTS.items()]
    first = runs[0].logins.rps or 0.0
    print(f"auth, {args.in_flight} logins in flight, {args.seconds} s each (bcrypt cost {Config().bcrypt_rounds})")
    print("| layout | logins/s | vs first | p50 | p95 | p99 | processes | PSS | of the 256 Mi limit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        m = run.logins
        ratio = f"{(m.rps or 0) / first:.2f}x" if first else "-"
        print(
            f"| {run.name} | {number(m.rps)} | {ratio} | {ms(m.p50_ms)} | {ms(m.p95_ms)} | {ms(m.p99_ms)} | {run.processes} |"
            f" {number(run.pss_mib, ' MiB')} | {100 * run.pss_mib / LIMIT_MIB:.0f} % |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
