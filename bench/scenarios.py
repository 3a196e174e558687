"""The benchmark's scenarios. Each runs on the baseline and on flashsale back to
back (or, for login, beside raw bcrypt; for isolation, alone and in a storm),
prints one progress line, and files its figures in :class:`Results`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

from bench import load, micro, net
from bench.config import Config, machine_cpus
from bench.cpu import CpuUse, metered
from bench.measure import Measure, load_average, measure
from bench.profile import recording
from bench.report import number
from bench.results import CrowdRound, Pair, PairRound, Results, median_round, p99_median_round
from bench.sites import Site
from ops.sales import fresh_sku, open_sale
from ops.verdict import crowd_checks
from shared.redisconn import RedisConn
from shared.settings import Settings
from shared.store import open_store

TIMEWAIT_LIFETIME_S = 60  # Linux's fixed TCP_TIMEWAIT_LEN


def redis_scripts_run(settings: Settings) -> int:
    """Lua scripts redis-server has run since it started (every gate admission is one)."""
    stats = RedisConn(settings).client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


def pair_order(round_number: int) -> tuple[str, str]:
    """Odd rounds run the baseline first, even rounds flashsale: whoever runs first (a cooler machine,
    a fresher page cache) is not always the same side."""
    return ("baseline", "flashsale") if round_number % 2 else ("flashsale", "baseline")


def compared(pair: Pair) -> str:
    """One progress line's figures: each side's req/s and p99, and the ratios."""
    b, r = pair.baseline, pair.real
    return (
        f"baseline {number(b.rps)} req/s p99 {number(b.p99_ms, ' ms')} | flashsale {number(r.rps)} req/s "
        f"p99 {number(r.p99_ms, ' ms')} | req/s {number(pair.rps_ratio, 'x')}, p99 {number(pair.p99_ratio, 'x')}"
        + (f", CPU/answer {number(pair.cpu_ratio, 'x')}" if pair.cpu else "")
    )


class Bench:
    def __init__(self, config: Config, results: Results, out: Path, scratch: Path) -> None:
        self.config = config
        self.results = results
        self.out = out
        self.raw = out / "raw"
        self.scratch = scratch
        self.started = time.monotonic()
        self.last_crowd_ended: float | None = None
        self.sold_out_sku: str | None = None

    # output --------------------------------------------------------------------
    def say(self, scenario: str, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f}s] {scenario:<18} {text}", flush=True)

    def note(self, text: str) -> None:
        self.results.notes.append(text)
        self.say("note", text)

    # running one load -----------------------------------------------------------
    def run(self, script: str, env: dict[str, str], label: str, scenario: str, seconds: float | None) -> tuple[load.Load, Measure]:
        """``seconds``: the nominal duration of a sustained run; None for the crowd (see measure.measure)."""
        started_load = load_average()
        result = load.run(script, env, self.raw, label)
        if not result.summary.get("setup_ok", False):
            tail = "\n".join(result.output.strip().splitlines()[-5:])
            raise RuntimeError(f"{label}: k6 stopped before the load (exit {result.exit_code}):\n{tail}")
        return result, measure(result, scenario, seconds, load_average=started_load)

    def pair(self, name: str, script: str, sites: dict[str, Site], sku: str, scenario: str, seconds: float, **knobs: object) -> Pair:
        """The same load on the baseline, then on flashsale."""
        _, baseline = self.run(script, sites["baseline"].env(sku, **knobs), f"{name}-baseline", scenario, seconds)
        _, real = self.run(script, sites["flashsale"].env(sku, **knobs), f"{name}-flashsale", scenario, seconds)
        found = Pair(baseline, real)
        self.results.pairs[name] = found
        self.say(name, compared(found))
        return found

    def pair_rounds(
        self, name: str, script: str, sites: dict[str, Site], sku: str, scenario: str, seconds: float, **knobs: object
    ) -> PairRound:
        """``config.pair_rounds`` pairs, the order alternating so neither side always runs first; the median round stands for them.

        Filed after every round: a run that stops early still reports the rounds it measured.
        """
        rounds: list[PairRound] = []
        total = max(1, self.config.pair_rounds)
        for round_number in range(1, total + 1):
            measured: dict[str, Measure] = {}
            cpu: dict[str, CpuUse] = {}
            order = pair_order(round_number)
            for target in order:
                label = f"{name}-{round_number}-{target}"
                # The order group's CPU beside the req/s: what a request costs, which the machine's other load moves less.
                site = sites[target]
                with metered(site.masters.get("order"), urlparse(site.settings.redis_url).port) as cpu[target]:
                    _, measured[target] = self.run(script, site.env(sku, **knobs), label, scenario, seconds)
            rounds.append(PairRound(measured["baseline"], measured["flashsale"], cpu, round_number, order[0]))
            self.results.file_pair_rounds(name, rounds)
            self.say(f"{name} {round_number}/{total}", f"{order[0]} first | {compared(rounds[-1])}")
        median = median_round(rounds)
        by_p99 = p99_median_round(rounds).number
        self.say(name, f"the median by req/s ratio is round {median.number} of {total}, by p99 ratio round {by_p99}")
        return median

    # the crowd ------------------------------------------------------------------------
    def drain(self) -> float:
        """Let the previous crowd's TIME_WAIT sockets go; returns the seconds waited."""
        if self.last_crowd_ended is None:
            return 0.0
        # Ours are gone a minute after the crowd ended; whatever is left then is someone else's.
        deadline = max(0.0, self.last_crowd_ended + TIMEWAIT_LIFETIME_S + 2 - time.monotonic())
        drained = net.drain_timewait(self.config.timewait_below, min(deadline, self.config.timewait_deadline_s))
        return round(drained.waited_s, 1)

    def crowd(self, sites: dict[str, Site], round_number: int) -> CrowdRound:
        c = self.config
        settings = sites["flashsale"].settings
        # Buyers never seen before, in every round: a token verified in an earlier
        # round would be answered from the worker's cache, which a real crowd never is.
        opened = open_sale(settings, fresh_sku(f"crowd{round_number}"), c.stock, buyers=c.buyers)
        sku = opened.sku
        knobs = {"BUYERS": c.buyers, "START_DELAY": "3s"}
        tokens, users = opened.buyers.write_files(self.scratch, f"crowd{round_number}")
        crowd_sites = {name: replace(site, tokens=tokens, users=users) for name, site in sites.items()}
        waited: dict[str, float] = {}
        lag: dict[str, float | None] = {}
        measured: dict[str, Measure] = {}
        cpu: dict[str, CpuUse] = {}
        redis_port = urlparse(settings.redis_url).port
        for target in ("baseline", "flashsale"):
            waited[target] = self.drain()
            scripts_before = redis_scripts_run(settings)
            with metered(sites[target].masters.get("order"), redis_port) as cpu[target]:
                result, measured[target] = self.run(
                    "flash-sale.js", crowd_sites[target].env(sku, **knobs), f"crowd-{round_number}-{target}", "crowd", None
                )
            cpu[target].redis_scripts = redis_scripts_run(settings) - scripts_before
            self.last_crowd_ended = time.monotonic()
            # How late k6 itself fired the buyers after the common instant: the client's share of the latency.
            lag[target] = ((result.summary.get("crowd") or {}).get("start_lag_ms") or {}).get("p99")
        store = open_store(settings)
        stats = store.sale_stats(sku)
        store.close()
        real = measured["flashsale"]
        others = {s: n for s, n in real.statuses.items() if s not in {"201", "409", "timeout", "connection"}}
        checks = {
            **crowd_checks(stats, buyers=c.buyers, confirmed=real.statuses.get("201", 0), other_answers=sum(others.values())),
            "no timeouts": real.timeouts == 0,
        }
        found = CrowdRound(measured["baseline"], real, cpu, round_number, checks, stats.to_public(), waited, lag)
        self.results.crowd.append(found)
        self.sold_out_sku = self.sold_out_sku or sku
        verdict = "correct" if found.correct else "WRONG: " + ", ".join(name for name, ok in checks.items() if not ok)
        self.say(
            f"crowd {round_number}/{c.crowd_rounds}",
            f"sold {stats.sold:,} ({verdict}); p99 baseline {number(found.baseline.p99_ms, ' ms')} flashsale "
            f"{number(real.p99_ms, ' ms')} ({number(found.p99_ratio, 'x')}); answered/s {number(found.rps_ratio, 'x')}; "
            f"no answer: baseline {found.baseline.connection_errors:,} conn + {found.baseline.timeouts} timeouts, "
            f"flashsale {real.connection_errors:,} conn + {real.timeouts} timeouts; drained {waited}",
        )
        return found

    # sustained ----------------------------------------------------------------------------
    def sold_out(self, site: Site) -> str:
        """The first crowd's sale (sold out by it), or a sale of nothing when no crowd ran."""
        if self.sold_out_sku is None:
            self.sold_out_sku = open_sale(site.settings, fresh_sku("sold-out"), 0).sku
        return self.sold_out_sku

    def losers(self, sites: dict[str, Site]) -> None:
        c = self.config
        sku = self.sold_out(sites["flashsale"])
        self.pair_rounds("losers", "buyers.js", sites, sku, "buyers", c.duration_s, VUS=c.losers_vus, DURATION=f"{c.duration_s}s")

    def observability(self, sites: dict[str, Site]) -> None:
        """What metrics and logs cost a request: losers on the same sold-out sale, observed and quiet."""
        c = self.config
        sku = fresh_sku("observability")
        for site in sites.values():  # one sku name in each site's own database
            open_sale(site.settings, sku, 0)
        knobs = {"VUS": c.losers_vus, "DURATION": f"{c.duration_s}s"}
        if c.observability_same:
            self.note("observability ran A/A (--observability-same): metrics and logs off on both sides, its ratios the harness's spread")
        self.pair_rounds("observability", "buyers.js", sites, sku, "buyers", c.duration_s, **knobs)

    def stock_check(self, sites: dict[str, Site], vus: int) -> None:
        c = self.config
        sku = self.sold_out(sites["flashsale"])
        self.pair(f"stock-{vus}", "stock-check.js", sites, sku, "stock_reads", c.duration_s, VUS=vus, DURATION=f"{c.duration_s}s")

    def login(self, sites: dict[str, Site]) -> None:
        c = self.config
        cpus = len(machine_cpus())
        before = micro.bcrypt_verify(c.bcrypt_rounds, cpus, c.bcrypt_seconds)
        vus = c.login_vus_per_cpu * cpus
        _, login = self.run(
            "login-storm.js", sites["flashsale"].env("-", VUS=vus, DURATION=f"{c.duration_s}s"), "login", "login_storm", c.duration_s
        )
        after = micro.bcrypt_verify(c.bcrypt_rounds, cpus, c.bcrypt_seconds)
        # Measured on each side of the logins; the faster is the ceiling the logins are held to.
        raw = max(before, after, key=lambda rate: rate.per_second)
        self.results.bcrypt = {**raw.to_json(), "before": before.to_json(), "after": after.to_json()}
        self.results.login = login
        self.say(
            "login",
            f"raw bcrypt (cost {c.bcrypt_rounds}, {cpus} processes) {number(before.per_second)}/s before, "
            f"{number(after.per_second)}/s after, {number(raw.ms_per_call, ' ms')} each | "
            f"logins {number(login.rps)}/s p99 {number(login.p99_ms, ' ms')} | {number(self.results.login_ratio, 'x')}",
        )

    def seed_matrix(self, sites: dict[str, Site]) -> None:
        c = self.config
        sku = open_sale(sites["flashsale"].settings, fresh_sku("seed"), 1_000_000).sku
        knobs = {"VUS": c.seed_vus, "DURATION": f"{c.seed_duration_s}s", "GAP": f"{c.seed_gap_s}s"}
        for target in ("baseline", "flashsale"):
            result, _ = self.run(
                "seed-matrix.js", sites[target].env(sku, **knobs), f"seed-matrix-{target}", "auth_login", c.seed_duration_s
            )
            self.results.seed_matrix[target] = result.summary.get("functions", {})
            self.results.seed_matrix["reference"] = result.summary.get("reference", {})
        real = self.results.seed_matrix["flashsale"]
        self.say(
            "seed-matrix",
            " | ".join(f"{fn} {number(f.get('rps'))} req/s avg {number(f.get('avg_ms'), ' ms')}" for fn, f in real.items())
            + " (reference: auth 46 at 513 ms, stock 69 at 10 ms, order 61 at 137 ms)",
        )

    def micro(self, settings: Settings) -> None:
        c = self.config
        gate = micro.gate_admits(settings, c.micro_processes, c.micro_seconds)
        size = settings.order_batch_max
        # Group commit beside one order a transaction, on the same kind of file: the ratio is of one moment.
        # In rounds, the side going first alternating, the median ratio's round reported: one pair moved
        # 9.3-11.4x between full runs of the same code (the batch is CPU, the single order the disk's fsync).
        workdir = self.scratch / "orders-bench"
        sides: dict[str, Callable[[], micro.Rate]] = {
            "single": lambda: micro.database_orders(workdir, c.micro_processes, c.micro_seconds),
            "batched": lambda: micro.batched_orders(workdir, c.micro_processes, c.micro_seconds, size),
        }
        rounds = []
        for round_number in range(1, max(1, c.pair_rounds) + 1):
            order = ("single", "batched") if round_number % 2 else ("batched", "single")
            measured = {side: sides[side]() for side in order}  # run in that order
            rounds.append(micro.StoreRound(round_number, measured["single"], measured["batched"]))
        store = micro.median_store_round(rounds)
        batcher = micro.batcher_orders(workdir, c.micro_processes, c.micro_seconds, size)
        self.results.micro = {
            "gate": gate.to_json(),
            "database": store.single.to_json(),
            "database_batched": {**store.batched.to_json(), "batch": size},
            "database_batcher": {**batcher.to_json(), "threads": size},
            "store_rounds": {"median": store.number, "ratios": [r.ratio for r in rounds]},
        }
        self.say(
            "micro",
            f"gate admits {number(gate.per_second)}/s ({c.micro_processes} processes, one redis-server) | "
            f"SQLite orders {number(store.single.per_second)}/s ({c.micro_processes} processes, one file) | "
            f"{size} a transaction {number(store.batched.per_second)}/s ({number(self.results.batching_ratio, 'x')}; "
            f"median of rounds {', '.join(number(r.ratio, 'x') for r in rounds)}), "
            f"through OrderBatcher ({size} threads a process) {number(batcher.per_second)}/s ({number(self.results.batcher_ratio, 'x')})",
        )

    # isolation ---------------------------------------------------------------------------------
    def isolation_knobs(self) -> dict[str, object]:
        c = self.config
        # A new connection per request: requests of both kinds spread over the workers, as behind a pod's proxy.
        return {"RATE": c.buy_rate, "VUS": max(50, c.buy_rate * 2), "DURATION": f"{c.duration_s}s", "NEW_CONNECTIONS": 1}

    def isolation(self, deployment: str, site: Site) -> None:
        """Steady checkout alone, then beside a login storm (each on a fresh sale, so every buy is a 201)."""
        c = self.config
        measured: dict[str, Measure] = {}
        for phase, storm in (("alone", 0), ("storm", c.storm_vus)):
            sku = open_sale(site.settings, fresh_sku(f"{deployment}-{phase}"), 1_000_000).sku
            env = site.env(sku, **self.isolation_knobs(), LOGIN_VUS=storm)
            result, measured[phase] = self.run("buyers.js", env, f"isolation-{deployment}-{phase}", "buyers", c.duration_s)
            self.results.isolation[f"{deployment}-{phase}"] = measured[phase]
            if storm:
                self.results.storm_logins[deployment] = measure(result, "login_storm", c.duration_s)
        logins = self.results.storm_logins[deployment]
        self.say(
            f"isolation {deployment}",
            f"buyers' p95 alone {number(measured['alone'].p95_ms, ' ms')}, "
            f"during the storm {number(measured['storm'].p95_ms, ' ms')} ({number(self.results.storm_ratio(deployment), 'x')}); "
            f"storm logins {number(logins.rps)}/s, p95 {number(logins.p95_ms, ' ms')}",
        )

    # profiles ---------------------------------------------------------------------------------
    def again(self, kind: str, site: Site, label: str) -> Measure:
        """A scenario's load once more on one site, for a profile: crowd, losers, stock-N, login or isolation."""
        c = self.config
        duration = {"DURATION": f"{c.duration_s}s"}
        if kind == "crowd":
            sku = open_sale(site.settings, fresh_sku("profile"), c.stock).sku
            self.drain()
            _, found = self.run("flash-sale.js", site.env(sku, BUYERS=c.buyers, START_DELAY="3s"), label, "crowd", None)
            self.last_crowd_ended = time.monotonic()
            return found
        if kind == "losers":
            return self.run("buyers.js", site.env(self.sold_out(site), VUS=c.losers_vus, **duration), label, "buyers", c.duration_s)[1]
        if kind.startswith("stock-"):
            env = site.env(self.sold_out(site), VUS=kind.removeprefix("stock-"), **duration)
            return self.run("stock-check.js", env, label, "stock_reads", c.duration_s)[1]
        if kind == "login":
            vus = c.login_vus_per_cpu * len(machine_cpus())
            return self.run("login-storm.js", site.env("-", VUS=vus, **duration), label, "login_storm", c.duration_s)[1]
        if kind == "isolation":
            sku = open_sale(site.settings, fresh_sku("profile"), 1_000_000).sku
            env = site.env(sku, **self.isolation_knobs(), LOGIN_VUS=c.storm_vus)
            return self.run("buyers.js", env, label, "buyers", c.duration_s)[1]
        raise ValueError(f"no load to profile for {kind!r}")

    def profile(self, kind: str, function: str, sites: dict[str, Site]) -> None:
        """Run ``kind`` again on each site (the baseline first, when there is one) while py-spy samples ``function``'s workers."""
        runs = {}
        for who, site in sites.items():
            name = f"{kind}-{who}"
            with recording(name, site.masters.get(function), self.out) as found:
                found.requests = self.again(kind, site, f"profile-{name}").requests
            runs[who] = found.to_json()
        self.results.profiles.append({"kind": kind, "function": function, "runs": runs})
        real, base = runs.get("flashsale", {}), runs.get("baseline", {})
        cpu = f"CPU per request: {number(base.get('cpu_ms', {}).get('all'), ' ms')} baseline, "
        cpu += f"{number(real.get('cpu_ms', {}).get('all'), ' ms')} flashsale"
        top = ", ".join(f"{frame} {share:.0%}" for frame, share in real.get("top", [])[:3])
        self.say(f"profile {kind}", f"{real.get('svg') or real.get('note')}; {cpu}; most samples in: {top or '-'}")
