"""The rehearsal's scenarios: each on a fresh topology, each ending with the
database's verdict and every press classified.

1. crowd: the mission's crowd through the ingress, beside the empty function
   behind the same ingress, as ratios measured in one run;
2. login-storm: many client addresses log in through gateway and activator
   while one address hammers: only that address is told 429;
3. scale-down: a pod leaves mid-crowd the Knative way (out of rotation, its
   queue-proxy drained, then SIGTERM) and the harsh way (SIGTERM while it takes
   traffic; the gateway learns a second later, as endpoints propagate);
4. scale-up: a pod joins cold mid-crowd; its answers are right;
5. redis-kill: redis-server SIGKILLed mid-crowd.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import net
from loadtest.run import prepare_sale
from ops.verdict import crowd_checks
from rehearsal import presses
from rehearsal.presses import Background, Presses
from rehearsal.topology import Topology, running
from shared.settings import Settings
from shared.store import open_store

TIMEWAIT_BELOW = 1_000  # a crowd starts once fewer sockets than this are in TIME_WAIT, or after the size's deadline
HAMMER_ADDRESS = "127.2.0.1"
PROPAGATION_SECONDS = 1.0  # harsh scale-down: from SIGTERM until the gateway stops routing to the pod
# Every pod as knative/*.yaml and knative/config.yaml configure it, less the cost of a hash:
# the storm measures whose address a login is counted under, not bcrypt.
STACK_ENV = {
    "TRUSTED_PROXIES": "3",
    "LOGIN_RATE_PER_ADDRESS": "100",
    "LOGIN_RATE_PER_ACCOUNT": "10",
    "LOGIN_RATE_WINDOW_SECONDS": "60",
    "BCRYPT_ROUNDS": "4",
}


@dataclass(frozen=True)
class Size:
    crowd_buyers: int  # scenario 1: all at once
    crowd_units: int
    stream_buyers: int  # scenarios 3-5: arriving at stream_rate a second
    stream_rate: int
    storm_logins: int  # scenario 2: one login from each of as many addresses
    hammer_logins: int  # ... and these from one address
    timewait_deadline_s: float  # TIME_WAIT lasts a minute; a quick crowd leaves too few sockets to wait that long for


FULL = Size(
    crowd_buyers=10_000,
    crowd_units=1_000,
    stream_buyers=3_000,
    stream_rate=300,
    storm_logins=1_000,
    hammer_logins=250,
    timewait_deadline_s=62,
)
QUICK = Size(
    crowd_buyers=1_000, crowd_units=100, stream_buyers=600, stream_rate=150, storm_logins=300, hammer_logins=150, timewait_deadline_s=0
)


@dataclass
class Outcome:
    """One scenario's verdict: its checks, its press counts by run, and figures worth reporting."""

    name: str
    checks: dict[str, bool] = field(default_factory=dict)
    runs: dict[str, Presses] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "checks": self.checks,
            "runs": {label: run.to_json() for label, run in self.runs.items()},
            "figures": self.figures,
            "notes": self.notes,
        }


@dataclass
class Context:
    size: Size
    workdir: Path
    say: Callable[[str], None]

    def drain_timewait(self) -> None:
        drained = net.drain_timewait(TIMEWAIT_BELOW, self.size.timewait_deadline_s)
        self.say(f"  TIME_WAIT {drained.timewait} after {drained.waited_s:.0f} s{'' if drained.drained else ' (deadline)'}")


# checks every crowd shares ------------------------------------------------------
def press_checks(run: Presses, *, allowed: tuple[str, ...]) -> dict[str, bool]:
    """Every press answered, every answer in an expected class and saying what its status promises."""
    unexpected = {kind: n for kind, n in run.classes.items() if n and kind not in allowed and kind not in ("no_answer", "502")}
    return {
        f"{run.label}: k6 ran ({run.exit_code})": run.exit_code == 0 and run.presses > 0,
        f"{run.label}: no press without an answer ({run.no_answer})": run.no_answer == 0,
        f"{run.label}: no press dropped by a pod, answered 502 by its queue-proxy ({run.count('502')})": run.count("502") == 0,
        f"{run.label}: every answer in {'/'.join(allowed)} ({unexpected or 'yes'})": not unexpected,
        f"{run.label}: every answer's body fits its status ({run.wrong} do not)": run.wrong == 0,
    }


def sale_checks(settings: Settings, sku: str, run: Presses, buyers: int) -> dict[str, bool]:
    """The database's verdict (ops/verdict.py): sold = units, tickets 1..N once, the 201s are the orders."""
    stats = open_store(settings).sale_stats(sku)
    checks = crowd_checks(stats, buyers=buyers, confirmed=run.count("201"), other_answers=0)
    checks.pop("every answer was 201 or 409")  # the press classes above judge the answers
    return {f"database: {name}": ok for name, ok in checks.items()}


def buy_env(topology: Topology, sku: str, tokens: Path, **knobs: object) -> dict[str, str]:
    pods = [p.name for ps in topology.pods.values() for p in ps]
    return {
        "ACTION": "buy",
        "INGRESS_URL": topology.ingress_url,
        "SKU": sku,
        "TOKENS_FILE": str(tokens),
        **presses.pods_env(pods),
        **{name.upper(): str(value) for name, value in knobs.items()},
    }


def wait_for_presses(topology: Topology, backend: str, count: int, timeout: float = 120) -> None:
    """Until ``count`` requests reached a gateway cluster: the crowd is under way."""
    deadline = time.monotonic() + timeout
    assert topology.ingress is not None
    while topology.ingress.backend_total(backend) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} presses never reached {backend}")
        time.sleep(0.05)


# 1. the crowd beside the empty function ------------------------------------------
def crowd(ctx: Context) -> Outcome:
    size, outcome = ctx.size, Outcome("crowd")
    with running(ctx.workdir / "crowd", {"order": 2, "baseline": 2}, STACK_ENV) as topology:
        settings = Settings.from_env(topology.env)
        sku, tokens, _ = prepare_sale(settings, ctx.workdir / "crowd", stock=size.crowd_units, buyers=size.crowd_buyers)
        runs = {}
        for side, host in (("baseline", "baseline.rehearsal"), ("flashsale", "order.rehearsal")):
            ctx.drain_timewait()
            env = buy_env(topology, sku, tokens, buyers=size.crowd_buyers, host=host, start_delay="5s")
            runs[side] = presses.run(f"crowd-{side}", env, ctx.workdir / "k6")
            ctx.say(f"  {side}: {runs[side].classes} p99 {runs[side].p99_ms} ms")
        outcome.runs = runs
        base, real = runs["baseline"], runs["flashsale"]
        outcome.checks.update(press_checks(base, allowed=("409", "503_proxy")))
        outcome.checks.update(press_checks(real, allowed=("201", "409", "503_proxy")))
        outcome.checks.update(sale_checks(settings, sku, real, size.crowd_buyers))
        outcome.checks[f"no more unanswered presses than the empty function's ({real.no_answer} vs {base.no_answer})"] = (
            real.no_answer <= base.no_answer
        )
        outcome.figures = {
            "p99_ratio": ratio(real.p99_ms, base.p99_ms),
            "answers_per_second_ratio": ratio(real.answers_per_second, base.answers_per_second),
            "gateway_503": {"baseline": base.count("503_proxy"), "flashsale": real.count("503_proxy")},
        }
    return outcome


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


# 2. the login storm ---------------------------------------------------------------
def login_storm(ctx: Context) -> Outcome:
    size, outcome = ctx.size, Outcome("login-storm")
    with running(ctx.workdir / "login-storm", {"auth": 2}, STACK_ENV) as topology:
        settings = Settings.from_env(topology.env)
        users_total = size.storm_logins + size.hammer_logins
        _, _, users = prepare_sale(settings, ctx.workdir / "login-storm", stock=1, buyers=users_total)
        common = {"ACTION": "login", "INGRESS_URL": topology.ingress_url, "USERS_FILE": str(users), "START_DELAY": "3s"}
        common |= presses.pods_env([p.name for p in topology.pods["auth"]])
        storm = Background("storm", {**common, "BUYERS": str(size.storm_logins)}, ctx.workdir / "k6").start()
        hammer_env = {**common, "BUYERS": str(size.hammer_logins), "FIRST": str(size.storm_logins)}
        hammer = presses.run("hammer", hammer_env, ctx.workdir / "k6", local_ips=HAMMER_ADDRESS)
        crowd_run = storm.join()
        outcome.runs = {"storm": crowd_run, "hammer": hammer}
        limit = int(STACK_ENV["LOGIN_RATE_PER_ADDRESS"])
        outcome.checks.update(press_checks(crowd_run, allowed=("200",)))
        outcome.checks.update(press_checks(hammer, allowed=("200", "429")))
        outcome.checks[f"the storm's {size.storm_logins} addresses: none told 429 ({crowd_run.count('429')})"] = crowd_run.count("429") == 0
        expected = max(0, size.hammer_logins - limit)
        outcome.checks[f"the hammering address: {expected} told 429 past its {limit} ({hammer.count('429')})"] = (
            hammer.count("429") == expected
        )
        ctx.say(f"  storm {crowd_run.classes}; hammer {hammer.classes}")
    return outcome


# 3. scale-down ----------------------------------------------------------------------
def scale_down(ctx: Context) -> Outcome:
    outcome = Outcome("scale-down")
    for way in ("knative", "harsh"):
        _scale_down_one(ctx, way, outcome)
    return outcome


def _scale_down_one(ctx: Context, way: str, outcome: Outcome) -> None:
    size = ctx.size
    workdir = ctx.workdir / f"scale-down-{way}"
    with running(workdir, {"order": 3}, STACK_ENV) as topology:
        settings = Settings.from_env(topology.env)
        units = size.stream_buyers // 2
        sku, tokens, _ = prepare_sale(settings, workdir, stock=units, buyers=size.stream_buyers)
        ctx.drain_timewait()
        env = buy_env(topology, sku, tokens, buyers=size.stream_buyers, rate=size.stream_rate, start_delay="2s")
        crowd_run = Background(f"scale-down-{way}", env, ctx.workdir / "k6").start()
        wait_for_presses(topology, "order", size.stream_buyers // 3)
        leaving = topology.pods["order"][0]
        if way == "knative":
            topology.take_out(leaving)
            waited = topology.drain_queue_proxy(leaving)
            topology.stop_pod(leaving)
            outcome.notes.append(f"knative: {leaving.name} out of rotation, its queue-proxy quiet after {waited:.1f} s, then SIGTERM")
        else:
            started = time.monotonic()
            leaving.signal(signal.SIGTERM)
            time.sleep(PROPAGATION_SECONDS)
            topology.take_out(leaving)
            topology.stop_pod(leaving)
            outcome.notes.append(
                f"harsh: SIGTERM to {leaving.name} while in rotation; out of rotation {PROPAGATION_SECONDS:.0f} s later;"
                f" gone after {time.monotonic() - started:.1f} s"
            )
        run = crowd_run.join()
        outcome.runs[way] = run
        allowed = ("201", "409") if way == "knative" else ("201", "409", "503_proxy")
        outcome.checks.update(press_checks(run, allowed=allowed))
        outcome.checks.update({f"{way} {name}": ok for name, ok in sale_checks(settings, sku, run, size.stream_buyers).items()})
        left = run.pods.get(leaving.name, {}).get("answers", 0)
        outcome.figures[f"{way}: answers from {leaving.name} before it left"] = left
        ctx.say(f"  {way}: {run.classes}; {leaving.name} answered {left}")


def _stream_with(
    ctx: Context, name: str, allowed: tuple[str, ...], *, after: int, strike: Callable[[Topology, Outcome], None], pods: str | None = None
) -> tuple[Outcome, Presses]:
    """A stream of buyers through two order pods, ``strike`` once ``after`` presses reached the gateway; judged from the database."""
    size, outcome = ctx.size, Outcome(name)
    workdir = ctx.workdir / name
    with running(workdir, {"order": 2}, STACK_ENV) as topology:
        settings = Settings.from_env(topology.env)
        sku, tokens, _ = prepare_sale(settings, workdir, stock=size.stream_buyers // 2, buyers=size.stream_buyers)
        ctx.drain_timewait()
        extra = {"pods": pods} if pods else {}
        env = buy_env(topology, sku, tokens, buyers=size.stream_buyers, rate=size.stream_rate, start_delay="2s", **extra)
        crowd_run = Background(name, env, ctx.workdir / "k6").start()
        wait_for_presses(topology, "order", after)
        strike(topology, outcome)
        run = crowd_run.join()
        outcome.runs[name] = run
        outcome.checks.update(press_checks(run, allowed=allowed))
        outcome.checks.update(sale_checks(settings, sku, run, size.stream_buyers))
    return outcome, run


# 4. scale-up --------------------------------------------------------------------------
def scale_up(ctx: Context) -> Outcome:
    newcomer = "order-3"

    def join(topology: Topology, outcome: Outcome) -> None:
        started = time.monotonic()
        pod = topology.new_pod("order")
        assert pod.name == newcomer, pod.name
        topology.add_to_rotation(pod)
        outcome.notes.append(f"{pod.name} started cold mid-crowd, ready and in rotation after {time.monotonic() - started:.1f} s")

    outcome, run = _stream_with(
        ctx, "scale-up", ("201", "409"), after=ctx.size.stream_buyers // 5, strike=join, pods=f"order-1,order-2,{newcomer}"
    )
    answers = run.pods.get(newcomer, {})
    outcome.checks[f"{newcomer} answered once in rotation ({answers.get('answers', 0)})"] = answers.get("answers", 0) > 0
    outcome.checks[f"{newcomer}: every answer right ({answers.get('wrong', 0)} wrong)"] = answers.get("wrong", 0) == 0
    outcome.figures[f"answers from {newcomer}"] = answers.get("answers", 0)
    ctx.say(f"  {run.classes}; {newcomer} answered {answers}")
    return outcome


# 5. Redis SIGKILLed ----------------------------------------------------------------------
def redis_kill(ctx: Context) -> Outcome:
    after = ctx.size.stream_buyers // 4

    def kill(topology: Topology, outcome: Outcome) -> None:
        assert topology.redis.process is not None
        topology.redis.process.kill()  # SIGKILL, by its PID
        outcome.notes.append(f"redis-server SIGKILLed after {after} presses reached the gateway")

    outcome, run = _stream_with(ctx, "redis-kill", ("201", "409", "503_retry_after"), after=after, strike=kill)
    ctx.say(f"  {run.classes}")
    return outcome


SCENARIOS: dict[str, Callable[[Context], Outcome]] = {
    "crowd": crowd,
    "login-storm": login_storm,
    "scale-down": scale_down,
    "scale-up": scale_up,
    "redis-kill": redis_kill,
}
