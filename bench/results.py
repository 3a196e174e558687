"""Everything one benchmark run measured, in one JSON-able tree, and the
per-process figures a capacity plan reads from it (``figures.json``)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench.cpu import CpuUse
from bench.measure import Measure, ratio

R = TypeVar("R")


@dataclass
class Pair:
    """One scenario on the baseline and on flashsale, run back to back."""

    baseline: Measure
    real: Measure
    cpu: dict[str, CpuUse] = field(default_factory=dict)  # where the machine's CPU went during each side's run

    def cpu_per_answer_ms(self, target: str) -> float | None:
        """CPU milliseconds the serving workers spent per answer in ``target``'s run."""
        use, measured = self.cpu.get(target), self.baseline if target == "baseline" else self.real
        return use.per(measured.answered, use.workers_s) if use else None

    @property
    def cpu_ratio(self) -> float | None:
        """flashsale's CPU per answer over the baseline's: what a request costs, whatever else the machine did."""
        return ratio(self.cpu_per_answer_ms("flashsale"), self.cpu_per_answer_ms("baseline"))

    @property
    def rps_ratio(self) -> float | None:
        return ratio(self.real.rps, self.baseline.rps)

    @property
    def p99_ratio(self) -> float | None:
        return ratio(self.real.p99_ms, self.baseline.p99_ms)

    def to_json(self) -> dict[str, Any]:
        found = {"baseline": self.baseline.to_json(), "real": self.real.to_json(), "rps_ratio": self.rps_ratio, "p99_ratio": self.p99_ratio}
        if self.cpu:
            found["cpu"] = {target: use.to_json() for target, use in self.cpu.items()}
        return found

    @staticmethod
    def _cpu_from_json(data: dict[str, Any]) -> dict[str, CpuUse]:
        return {target: CpuUse.from_json(use) for target, use in data.get("cpu", {}).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Pair:
        return cls(Measure.from_json(data["baseline"]), Measure.from_json(data["real"]), cls._cpu_from_json(data))


@dataclass
class PairRound(Pair):
    """One round of a sustained pair; ``first`` is the side that ran first in it (the order alternates)."""

    number: int = 1
    first: str = "baseline"

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "number": self.number, "first": self.first}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairRound:
        return cls(
            Measure.from_json(data["baseline"]), Measure.from_json(data["real"]), cls._cpu_from_json(data), data["number"], data["first"]
        )


def lower_median(rounds: Sequence[R], ratio: Callable[[R], float | None]) -> R:
    """The round whose ``ratio`` is the median, so that every figure reported is one round's, measured together.

    Of an even number the lower of the two middle rounds (the less flattering), never
    an average of two. Rounds without a ratio sort first; ties keep the rounds' order.
    """
    if not rounds:
        raise ValueError("no rounds to take the median of")
    ranked = sorted(rounds, key=lambda r: (ratio(r) is not None, ratio(r) or 0.0))
    return ranked[(len(ranked) - 1) // 2]


def median_round(rounds: list[PairRound]) -> PairRound:
    """The round whose req/s ratio is the median (``lower_median``): the req/s row and target read it."""
    return lower_median(rounds, lambda r: r.rps_ratio)


def p99_median_round(rounds: list[PairRound]) -> PairRound:
    """The round whose p99 ratio is the median: the p99 row and target read it.

    Each target reads the median of its own ratio, as the crowd's do: the p99 of
    the round picked by its req/s is one draw of the p99s, not their median (on
    27 November it read 1.22x for observability where the rounds' median was
    1.01x, and 0.12x for the losers from one round's 19.8 s baseline outlier).
    Of an even number the higher of the two middle ratios, the less flattering
    for a p99; a round without a p99 ratio counts as the slowest.
    """
    return lower_median(rounds, lambda r: None if r.p99_ratio is None else -r.p99_ratio)


@dataclass
class CrowdRound(Pair):
    """One crowd on each; ``checks`` are the real crowd's outcome read from the database."""

    number: int = 0
    checks: dict[str, bool] = field(default_factory=dict)
    sale: dict[str, Any] = field(default_factory=dict)
    waited_s: dict[str, float] = field(default_factory=dict)  # TIME_WAIT drain before each crowd
    start_lag_p99_ms: dict[str, float | None] = field(default_factory=dict)  # k6's own lateness firing the buyers

    @property
    def correct(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "number": self.number,
            "checks": self.checks,
            "sale": self.sale,
            "waited_s": self.waited_s,
            "start_lag_p99_ms": self.start_lag_p99_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CrowdRound:
        return cls(
            Measure.from_json(data["baseline"]),
            Measure.from_json(data["real"]),
            cls._cpu_from_json(data),
            data["number"],
            data["checks"],
            data["sale"],
            data["waited_s"],
            data.get("start_lag_p99_ms", {}),
        )


def pick(values: list[float | None], how: str, *, higher_is_better: bool) -> float | None:
    """The median, or the best, of the values that were measured."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if how == "best":
        return max(present) if higher_is_better else min(present)
    return round(statistics.median(present), 3)


@dataclass
class Results:
    meta: dict[str, Any] = field(default_factory=dict)  # when, machine, settings, command
    workers: dict[str, int] = field(default_factory=dict)  # gunicorn workers serving each function
    crowd: list[CrowdRound] = field(default_factory=list)
    pairs: dict[str, Pair] = field(default_factory=dict)  # losers, stock-200, stock-1000, observability
    # losers and observability over their alternating rounds; pairs[name] is then the median round by req/s,
    # p99_pair(name) the median round by p99
    pair_rounds: dict[str, list[PairRound]] = field(default_factory=dict)
    login: Measure | None = None
    bcrypt: dict[str, Any] = field(default_factory=dict)  # micro.Rate.to_json()
    isolation: dict[str, Measure] = field(default_factory=dict)  # split-alone, split-storm, monolith-alone, monolith-storm
    storm_logins: dict[str, Measure] = field(default_factory=dict)  # the storm's own logins, split and monolith
    seed_matrix: dict[str, dict[str, Any]] = field(default_factory=dict)  # flashsale|baseline -> function -> figures
    micro: dict[str, dict[str, Any]] = field(default_factory=dict)  # gate, database, database_batched, database_batcher
    profiles: list[dict[str, Any]] = field(default_factory=list)  # profile.Profile.to_json()
    notes: list[str] = field(default_factory=list)

    # the crowd, over its rounds --------------------------------------------
    @property
    def crowd_pick(self) -> str:
        return str(self.meta.get("crowd_pick", "median"))

    def crowd_value(self, get: Any, *, higher_is_better: bool) -> float | None:
        return pick([get(r) for r in self.crowd], self.crowd_pick, higher_is_better=higher_is_better)

    @property
    def crowd_p99_ratio(self) -> float | None:
        return self.crowd_value(lambda r: r.p99_ratio, higher_is_better=False)

    @property
    def crowd_rps_ratio(self) -> float | None:
        return self.crowd_value(lambda r: r.rps_ratio, higher_is_better=True)

    @property
    def crowd_lost_ratio(self) -> float | None:
        """Connections refused or reset over every crowd, flashsale's against the baseline's, each plus one.

        The issue's "connections reset no more often than the baseline's": a
        sum, not a median, because a crowd loses connections in bursts (one
        crowd thousands, the next none); plus one so that none against none
        reads 1 and some against none reads more than 1.
        """
        if not self.crowd:
            return None
        real = sum(r.real.connection_errors for r in self.crowd)
        baseline = sum(r.baseline.connection_errors for r in self.crowd)
        return round((real + 1) / (baseline + 1), 3)

    # the sustained pairs run in rounds --------------------------------------
    def file_pair_rounds(self, name: str, rounds: list[PairRound]) -> PairRound:
        """Keep every round of ``name``; its median round stands for it wherever ``pairs`` is read (the targets too)."""
        self.pair_rounds[name] = list(rounds)
        self.pairs[name] = median = median_round(rounds)
        return median

    def p99_pair(self, name: str) -> Pair | None:
        """What ``name``'s p99 row and target read: its median round by p99 ratio, or its one run."""
        rounds = self.pair_rounds.get(name)
        return p99_median_round(rounds) if rounds else self.pairs.get(name)

    # the other comparisons ---------------------------------------------------
    @property
    def login_ratio(self) -> float | None:
        return ratio(self.login.rps if self.login else None, self.bcrypt.get("per_second"))

    def storm_ratio(self, deployment: str) -> float | None:
        """buyers' p95 during the login storm / alone, for split or monolith."""
        storm, alone = self.isolation.get(f"{deployment}-storm"), self.isolation.get(f"{deployment}-alone")
        return ratio(storm.p95_ms if storm else None, alone.p95_ms if alone else None)

    @property
    def batching_ratio(self) -> float | None:
        """SQLite orders a second written a batch to a transaction over one order a transaction."""
        return self._orders_ratio("database_batched")

    @property
    def batcher_ratio(self) -> float | None:
        """The same through OrderBatcher with many threads a process."""
        return self._orders_ratio("database_batcher")

    def _orders_ratio(self, key: str) -> float | None:
        return ratio(self.micro.get(key, {}).get("per_second"), self.micro.get("database", {}).get("per_second"))

    # per-process figures -----------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """The shape the capacity planner reads; every number measured in this run (None where not).

        ``max_ms`` is the slowest answer any run of the function got: the planner
        sizes the probes' timeouts from it. ``machine`` says where it was measured.
        """
        order_workers = self.workers.get("order") or 1
        stock_workers = self.workers.get("stock") or 1
        auth_cpus = self.workers.get("auth_cpus") or self.workers.get("auth") or 1
        losers = self.pairs.get("losers")
        stock_runs = [p.real for name, p in self.pairs.items() if name.startswith("stock")]
        stock = _busiest(stock_runs)
        sustained = ("losers", "observability")
        order_runs = [r.real for r in self.crowd] + [p.real for name, p in self.pairs.items() if name in sustained]
        order_runs += [r.real for name in sustained for r in self.pair_rounds.get(name, [])]  # every round's slowest answer
        login_runs = [m for m in (self.login, self.storm_logins.get("split")) if m is not None]
        crowd_rps = self.crowd_value(lambda r: r.real.rps, higher_is_better=True)
        crowd_p99 = self.crowd_value(lambda r: r.real.p99_ms, higher_is_better=False)
        return {
            "measured_at": self.meta.get("measured_at"),
            "command": self.meta.get("command", "make bench"),
            "cpus": self.meta.get("cpus"),
            "bcrypt_rounds": self.meta.get("bcrypt_rounds"),
            "machine": self.meta.get("machine"),
            "order": {
                "losers_rps_per_process": _per(losers.real.rps if losers else None, order_workers),
                "crowd_rps_per_process": _per(crowd_rps, order_workers),
                "p99_ms": crowd_p99,
                "max_ms": _slowest(order_runs),
            },
            "stock": {
                "rps_per_process": _per(stock.rps if stock else None, stock_workers),
                "p99_ms": stock.p99_ms if stock else None,
                "max_ms": _slowest(stock_runs),
            },
            "auth": {
                "logins_per_s_per_cpu": _per(self.login.rps if self.login else None, auth_cpus),
                "bcrypt_verify_ms": self.bcrypt.get("ms_per_call"),
                "max_ms": _slowest(login_runs),
            },
            "redis": {"gate_admits_per_s": self.micro.get("gate", {}).get("per_second")},
            "database": {"orders_per_s": self.micro.get("database", {}).get("per_second")},
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "workers": self.workers,
            "crowd": [r.to_json() for r in self.crowd],
            "pairs": {name: p.to_json() for name, p in self.pairs.items()},
            "pair_rounds": {name: [r.to_json() for r in rounds] for name, rounds in self.pair_rounds.items()},
            "login": self.login.to_json() if self.login else None,
            "bcrypt": self.bcrypt,
            "isolation": {name: m.to_json() for name, m in self.isolation.items()},
            "storm_logins": {name: m.to_json() for name, m in self.storm_logins.items()},
            "seed_matrix": self.seed_matrix,
            "micro": self.micro,
            "profiles": self.profiles,
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        """Also a results.json from before the rounds (no ``pair_rounds``): each pair is then its one run."""
        pair_rounds = {name: [PairRound.from_json(r) for r in rounds] for name, rounds in data.get("pair_rounds", {}).items() if rounds}
        pairs: dict[str, Pair] = {name: Pair.from_json(p) for name, p in data.get("pairs", {}).items()}
        pairs.update({name: median_round(rounds) for name, rounds in pair_rounds.items()})
        return cls(
            meta=data.get("meta", {}),
            workers=data.get("workers", {}),
            crowd=[CrowdRound.from_json(r) for r in data.get("crowd", [])],
            pairs=pairs,
            pair_rounds=pair_rounds,
            login=Measure.from_json(data["login"]) if data.get("login") else None,
            bcrypt=data.get("bcrypt", {}),
            isolation={name: Measure.from_json(m) for name, m in data.get("isolation", {}).items()},
            storm_logins={name: Measure.from_json(m) for name, m in data.get("storm_logins", {}).items()},
            seed_matrix=data.get("seed_matrix", {}),
            micro=data.get("micro", {}),
            profiles=data.get("profiles", []),
            notes=data.get("notes", []),
        )


def _per(value: float | None, processes: int) -> float | None:
    return None if value is None else round(value / processes, 2)


def _slowest(measures: list[Measure]) -> float | None:
    """The slowest answer over these runs (None if none was timed)."""
    times = [m.max_ms for m in measures if m.max_ms is not None]
    return max(times) if times else None


def _busiest(measures: list[Measure]) -> Measure | None:
    """The run with the highest rate: the closest this machine came to the function's capacity."""
    rated = [m for m in measures if m.rps is not None]
    return max(rated, key=lambda m: m.rps or 0.0) if rated else None
