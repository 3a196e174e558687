"""The figures of one scenario on one target, and how two of them compare.

A :class:`Measure` is what the report needs from one k6 run: how many requests
got an answer, their rate and latency (answered requests only: a connection the
kernel refused has no latency), what did not get an answer, and the per-second
series for the charts.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.load import Load
from bench.timeseries import NO_ANSWER, Series


@dataclass
class Measure:
    label: str
    requests: int = 0
    answered: int = 0
    rps: float | None = None  # answered requests a second (see measure())
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    # p99 over every request, one with no answer the slowest; None once measured: the p99th request had no answer
    p99_every_ms: float | None = None
    p99_every_measured: bool = False  # False in results from before it was measured
    statuses: dict[str, int] = field(default_factory=dict)  # '201', '409', 'timeout', 'connection'
    exit_code: int | None = None
    load_average: float | None = None  # 1-minute load average when the run started
    per_second: list[int] = field(default_factory=list)
    by_status_per_second: dict[str, list[int]] = field(default_factory=dict)

    @property
    def timeouts(self) -> int:
        return self.statuses.get("timeout", 0)

    @property
    def connection_errors(self) -> int:
        return self.statuses.get("connection", 0)

    @property
    def p99_every(self) -> str:
        """p99 over every request, or "no answer" when the 99th percentile request had none."""
        if self.p99_every_ms is not None:
            return f"{self.p99_every_ms:,.0f} ms" if self.p99_every_ms >= 100 else f"{self.p99_every_ms:,.1f} ms"
        return "no answer" if self.p99_every_measured and self.requests else "-"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measure:
        return cls(**data)


def answered_per_second(series: Series) -> list[int]:
    return [sum(counts[i] for status, counts in series.by_status.items() if status not in NO_ANSWER) for i in range(len(series.requests))]


def steady_rate(per_second: list[int], seconds: float) -> float | None:
    """Answers a second over the whole seconds inside a run of ``seconds``.

    The first second is partial (the first answer comes some way into it), and
    after ``seconds`` k6 still lets the requests in flight finish: counting
    those over the nominal duration would flatter a slow, closed-loop run.
    """
    window = per_second[1 : int(seconds)]
    return round(sum(window) / len(window), 2) if window else None


def measure(load: Load, scenario: str, seconds: float | None, *, load_average: float | None = None) -> Measure:
    """The figures of ``scenario`` in ``load``.

    ``seconds``: the nominal duration of a sustained run, whose rate is its
    steady one; None for a one-shot crowd, whose rate is every answer over the
    time until the last buyer had one (the script's ``all_answered_ms``).
    """
    series: Series = load.scenario(scenario)
    if seconds is None:
        all_answered_ms = (load.summary.get("crowd") or {}).get("all_answered_ms") or 0
        rps = round(series.answered * 1000 / all_answered_ms, 2) if all_answered_ms else None
    else:
        rps = steady_rate(answered_per_second(series), seconds)
    return Measure(
        label=f"{load.label}:{scenario}",
        requests=sum(series.totals.values()),
        answered=series.answered,
        rps=rps,
        p50_ms=series.latency(50),
        p95_ms=series.latency(95),
        p99_ms=series.latency(99),
        max_ms=series.latency(100),
        p99_every_ms=series.latency_of_every_request(99),
        p99_every_measured=True,
        statuses=dict(sorted(series.totals.items())),
        exit_code=load.exit_code,
        load_average=load_average,
        per_second=series.requests,
        by_status_per_second=series.by_status,
    )


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, or None when either is missing or the reference is 0."""
    if value is None or reference is None or reference == 0:
        return None
    return round(value / reference, 3)
