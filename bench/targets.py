"""The issue's targets: findings of a run, read from ratios measured in that run.

Never assertions: the machine is shared and noisy, and a missed target is a
result to explain (with a profile), not a failed build.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.results import Results


@dataclass(frozen=True)
class Target:
    key: str  # also names the profile taken when it is missed
    claim: str
    limit: float
    at_most: bool  # True: the ratio must stay at or under the limit; False: at or over it
    read: Callable[[Results], float | None]

    def value(self, results: Results) -> float | None:
        return self.read(results)

    def met(self, results: Results) -> bool | None:
        """None when the run did not measure it."""
        value = self.value(results)
        if value is None:
            return None
        return value <= self.limit if self.at_most else value >= self.limit

    @property
    def wanted(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.limit:g}×"


TARGETS = (
    Target("crowd-p99", "crowd p99 vs the baseline's under the same crowd", 1.2, True, lambda r: r.crowd_p99_ratio),
    Target("crowd-rps", "crowd throughput vs the baseline's", 0.8, False, lambda r: r.crowd_rps_ratio),
    Target(
        "crowd-lost",
        "crowd connections refused or reset, all crowds, vs the baseline's ((flashsale + 1) / (baseline + 1))",
        1.0,
        True,
        lambda r: r.crowd_lost_ratio,
    ),
    Target("losers", "losers after sell-out, req/s vs the baseline's", 0.9, False, lambda r: _rps_ratio(r, "losers")),
    Target("losers-p99", "losers after sell-out, p99 vs the baseline's", 1.2, True, lambda r: _p99_ratio(r, "losers")),
    Target("losers-stretch", "stretch: losers after sell-out, req/s vs the baseline's", 1.0, False, lambda r: _rps_ratio(r, "losers")),
    Target("stock-200", "stock-check at 200 VUs, req/s vs the baseline's", 0.9, False, lambda r: _rps_ratio(r, "stock-200")),
    Target("stock-1000", "stock-check at 1,000 VUs, req/s vs the baseline's", 0.9, False, lambda r: _rps_ratio(r, "stock-1000")),
    Target("login", "logins/s vs raw bcrypt verifies/s on the same cores", 0.9, False, lambda r: r.login_ratio),
    Target("isolation", "buyers' p95 during a login storm vs alone (split)", 1.2, True, lambda r: r.storm_ratio("split")),
    Target("observability", "losers' req/s with metrics and logs on vs off", 0.95, False, lambda r: _rps_ratio(r, "observability")),
    Target("observability-p99", "losers' p99 with metrics and logs on vs off", 1.05, True, lambda r: _p99_ratio(r, "observability")),
    Target("store-batching", "store: orders/s batched vs one order a transaction (SQLite)", 10, False, lambda r: r.batching_ratio),
)


def _rps_ratio(results: Results, pair: str) -> float | None:
    found = results.pairs.get(pair)
    return found.rps_ratio if found else None


def _p99_ratio(results: Results, pair: str) -> float | None:
    found = results.p99_pair(pair)  # the median of the rounds' p99 ratios, not the p99 of the median round by req/s
    return found.p99_ratio if found else None


def missed(results: Results) -> list[Target]:
    return [t for t in TARGETS if t.met(results) is False]
