"""What k6's ``--out json`` points say, per scenario: requests and requests by
status over time, and the latency of the requests that got an answer.

Each request leaves one ``http_req_duration`` point (time, duration, status,
scenario, error code). The raw file holds about seventeen lines per request
(every metric), so lines are filtered as text before any is parsed as JSON.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

DURATION_METRIC = "http_req_duration"
SETUP_GROUPS = {"::setup", "::teardown"}
# k6 error codes (grafana.com/docs/k6/latest/javascript-api/error-codes): 1050 is
# a request that outlived its timeout. Any other status-0 request never got an
# answer because the connection failed (refused, reset, EOF): on this machine,
# the kernel's accept queue overflowing under a crowd.
TIMEOUT_CODES = frozenset({"1050"})
NO_ANSWER = frozenset({"timeout", "connection"})


def status_class(status: str, error_code: str | None) -> str:
    """'201', '409', ... for answers; 'timeout' or 'connection' for status 0 (no answer)."""
    if status != "0":
        return status
    return "timeout" if error_code in TIMEOUT_CODES else "connection"


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100) of sorted values, interpolating between ranks."""
    if not ordered:
        return None
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Point:
    second: int  # unix time, whole seconds
    status: str  # a status_class
    duration_ms: float


@dataclass
class Series:
    """One scenario of one run: per second from its first request, and latency of the answered requests."""

    requests: list[int] = field(default_factory=list)
    by_status: dict[str, list[int]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    answered_ms: list[float] = field(default_factory=list)  # sorted

    @property
    def answered(self) -> int:
        return sum(n for status, n in self.totals.items() if status not in NO_ANSWER)

    def no_answer(self, kind: str) -> int:
        return self.totals.get(kind, 0)

    def latency(self, p: float) -> float | None:
        value = percentile(self.answered_ms, p)
        return None if value is None else round(value, 2)

    def latency_of_every_request(self, p: float) -> float | None:
        """The p-th percentile over every request, one with no answer counted as slower than any answer.

        None when that rank falls among the unanswered: the p-th percentile
        buyer had no answer at all. Beside :meth:`latency`, which leaves them
        out and so makes a side that drops buyers look faster.
        """
        total = len(self.answered_ms) + sum(self.no_answer(kind) for kind in NO_ANSWER)
        if total == 0:
            return None
        rank = (total - 1) * p / 100
        if math.ceil(rank) >= len(self.answered_ms):
            return None
        return self.latency(100 * rank / (len(self.answered_ms) - 1)) if len(self.answered_ms) > 1 else self.latency(100)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests_per_second": self.requests,
            "by_status_per_second": self.by_status,
            "totals": self.totals,
            "answered_ms": {"p50": self.latency(50), "p95": self.latency(95), "p99": self.latency(99), "max": self.latency(100)},
        }


def points(lines: Iterable[str]) -> Iterator[tuple[str, Point]]:
    """(scenario, point) for every request the load made (setup's checks left out)."""
    seconds: dict[str, int] = {}
    for line in lines:
        if DURATION_METRIC not in line:  # most lines are other metrics: skip them before parsing
            continue
        record = json.loads(line)
        if record.get("type") != "Point" or record.get("metric") != DURATION_METRIC:
            continue
        data = record["data"]
        tags = data.get("tags") or {}
        if tags.get("group") in SETUP_GROUPS:
            continue
        # "2026-11-25T08:27:21.123456789Z": the whole second is enough.
        stamp = data["time"][:19]
        if stamp not in seconds:
            seconds[stamp] = int(datetime.fromisoformat(stamp + "+00:00").timestamp())
        status = status_class(str(tags.get("status", "0")), tags.get("error_code"))
        yield str(tags.get("scenario", "default")), Point(seconds[stamp], status, float(data["value"]))


def build(scenario_points: Iterable[Point]) -> Series:
    collected = list(scenario_points)
    series = Series()
    if not collected:
        return series
    first = min(p.second for p in collected)
    length = max(p.second for p in collected) - first + 1
    series.requests = [0] * length
    for p in collected:
        series.requests[p.second - first] += 1
        series.by_status.setdefault(p.status, [0] * length)[p.second - first] += 1
        series.totals[p.status] = series.totals.get(p.status, 0) + 1
    series.answered_ms = sorted(p.duration_ms for p in collected if p.status not in NO_ANSWER)
    return series


def split(lines: Iterable[str]) -> dict[str, Series]:
    by_scenario: dict[str, list[Point]] = {}
    for scenario, point in points(lines):
        by_scenario.setdefault(scenario, []).append(point)
    return {scenario: build(collected) for scenario, collected in sorted(by_scenario.items())}


def read(raw: Path) -> dict[str, Series]:
    """Series per scenario from a raw k6 JSON file (gzipped when it ends in .gz)."""
    if raw.suffix == ".gz":
        with gzip.open(raw, "rt") as lines:
            return split(lines)
    with raw.open() as lines:
        return split(lines)
