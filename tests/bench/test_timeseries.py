"""Reading k6's raw points: what counts as an answer, per second and per scenario."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from bench.timeseries import Series, percentile, read, split, status_class


def point(time: str, status: str, ms: float, *, scenario: str = "crowd", group: str = "", error_code: str | None = None) -> str:
    tags = {"status": status, "scenario": scenario, "group": group, "name": "POST /orders"}
    if error_code:
        tags["error_code"] = error_code
    return json.dumps({"metric": "http_req_duration", "type": "Point", "data": {"time": time, "value": ms, "tags": tags}})


LINES = [
    json.dumps({"type": "Metric", "data": {"name": "http_req_duration"}, "metric": "http_req_duration"}),
    point("2026-11-25T08:00:00.100000000Z", "200", 5, scenario="", group="::setup"),
    point("2026-11-25T08:00:01.100000000Z", "201", 10),
    point("2026-11-25T08:00:01.900000000Z", "409", 20),
    point("2026-11-25T08:00:03.000000000Z", "0", 0.5, error_code="1000"),
    point("2026-11-25T08:00:03.500000000Z", "0", 60000, error_code="1050"),
    point("2026-11-25T08:00:03.600000000Z", "200", 7, scenario="login_storm"),
    json.dumps({"metric": "http_reqs", "type": "Point", "data": {"time": "2026-11-25T08:00:01Z", "value": 1, "tags": {}}}),
]


def test_status_zero_is_a_timeout_or_a_connection_error() -> None:
    assert status_class("409", None) == "409"
    assert status_class("0", "1050") == "timeout"
    assert status_class("0", "1220") == "connection"
    assert status_class("0", None) == "connection"


def test_series_per_scenario_leave_out_setup_and_count_no_answers_apart() -> None:
    series = split(LINES)
    assert set(series) == {"crowd", "login_storm"}
    crowd = series["crowd"]
    assert crowd.requests == [2, 0, 2]  # seconds 1, 2, 3 after the first request's second
    assert crowd.totals == {"201": 1, "409": 1, "connection": 1, "timeout": 1}
    assert crowd.by_status["connection"] == [0, 0, 1]
    assert crowd.answered == 2
    assert crowd.no_answer("timeout") == 1
    # latency only over answers: neither the reset (0.5 ms) nor the timeout (60 s) counts
    assert crowd.answered_ms == [10, 20]
    assert crowd.latency(100) == 20


def test_read_takes_gzipped_files(tmp_path: Path) -> None:
    raw = tmp_path / "points.json.gz"
    with gzip.open(raw, "wt") as out:
        out.write("\n".join(LINES) + "\n")
    assert read(raw)["crowd"].totals["201"] == 1


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 99) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([0.0, 10.0], 50) == 5.0
    assert percentile([float(v) for v in range(101)], 99) == 99.0


def test_p99_over_every_request_counts_no_answer_as_the_slowest() -> None:
    # Bug caught: a side that drops buyers reads faster, because its p99 leaves them out.
    answered = Series(answered_ms=[float(ms) for ms in range(1, 1001)], totals={"409": 1000})
    assert answered.latency_of_every_request(99) == answered.latency(99)  # nobody left out: the same figure
    dropping = Series(answered_ms=[float(ms) for ms in range(1, 1001)], totals={"409": 1000, "connection": 5})
    assert dropping.latency(99) == answered.latency(99)
    every, p99 = dropping.latency_of_every_request(99), answered.latency(99)
    assert every is not None and p99 is not None and every > p99  # 5 more buyers above the answered ones push the rank up
    expected = percentile([float(ms) for ms in range(1, 1001)], 100 * (1004 * 0.99) / 999)
    assert expected is not None and every == round(expected, 2)
    many = Series(answered_ms=[1.0, 2.0], totals={"409": 2, "connection": 1, "timeout": 1})
    assert many.latency_of_every_request(99) is None  # the 99th percentile buyer had no answer
    assert many.latency_of_every_request(25) == 1.75
    assert Series().latency_of_every_request(99) is None
