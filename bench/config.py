"""The sizes of a benchmark run: the issue's for ``make bench``, smaller ones for ``--quick``."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any


def machine_cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@dataclass(frozen=True)
class Config:
    quick: bool = False
    # the crowd: one-shot buyers pressing Buy at the same instant
    buyers: int = 10_000
    stock: int = 1_000
    crowd_rounds: int = 3
    crowd_pick: str = "median"  # or "best": how the rounds become one figure
    timewait_below: int = 1_000  # start a crowd once fewer sockets than this are in TIME_WAIT ...
    timewait_deadline_s: float = 90  # ... or after this long anyway (TIME_WAIT lasts 60 s on Linux)
    # sustained scenarios
    duration_s: int = 20
    # losers, observability and the store row: one pair moves 10-20 % here and their targets are tight, so
    # this many pairs, the side going first alternating, and the median one reported. Five: an A/A run
    # (--observability-same, both sides alike) gave req/s ratios 0.93-1.01x and p99 ratios 0.83-1.18x.
    pair_rounds: int = 5
    losers_vus: int = 1_000
    # observability with metrics and logs off on both sides: the harness's own spread (an A/A run)
    observability_same: bool = False
    stock_vus: tuple[int, ...] = (200, 1_000)
    login_vus_per_cpu: int = 4  # enough to keep every auth worker busy with a queue behind it
    # isolation: steady checkout, with and without a login storm
    buy_rate: int = 50  # buys a second, open loop: well under what order serves alone
    storm_vus: int = 8
    # the original write-up's shape
    seed_vus: int = 200
    seed_duration_s: int = 20
    seed_gap_s: int = 5
    # micro-benchmarks
    bcrypt_seconds: float = 10
    micro_seconds: float = 5
    micro_processes: int = 4
    # the functions' settings (knative/config.yaml), except the login rate limits: all of k6 is one address
    bcrypt_rounds: int = 12
    log_level: str = "INFO"
    # a py-spy profile for each missed target; with profile_always, for every target (development)
    profile: bool = True
    profile_always: bool = False

    @classmethod
    def quick_run(cls, **overrides: Any) -> Config:
        """A few minutes, for development: smaller crowds, shorter runs, one round of each (same VU levels)."""
        small = cls(
            quick=True,
            buyers=2_000,
            stock=200,
            crowd_rounds=1,
            timewait_deadline_s=20,
            duration_s=6,
            pair_rounds=1,
            seed_vus=50,
            seed_duration_s=6,
            seed_gap_s=2,
            bcrypt_seconds=4,
            micro_seconds=2,
        )
        return replace(small, **overrides)

    def stack_env(self) -> dict[str, str]:
        """Environment of every function process the benchmark starts (real, baseline, monolith)."""
        return {
            "BCRYPT_ROUNDS": str(self.bcrypt_rounds),
            "LOG_LEVEL": self.log_level,
            "LOGIN_RATE_PER_ADDRESS": "0",
            "LOGIN_RATE_PER_ACCOUNT": "0",
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
